"""``scripts/gpu_check.py --cpu-smoke``: every phase of the one-shot GPU check runs and passes at tiny sizes
on the CPU, so the script works the first time a GPU is lent."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    phases = {p["phase"]: p for p in report["phases"]}
    assert list(phases) == ["kernels", "graphs", "kernel_timings", "rollout", "grpo"]
    assert all(p["ok"] and p["error"] is None and p["rows"] for p in phases.values())
    kernels = {r["check"] for r in phases["kernels"]["rows"]}
    assert {"dense_decode", "sparse_decode", "block_sparse_indexer", "append_kv_and_centroids", "merge_states"} <= kernels
    assert [r["step"] for r in phases["grpo"]["rows"]] == [1, 2]
    assert all(r["rollout/weights_checksum_rel_diff"] < 1e-6 for r in phases["grpo"]["rows"])
    assert {r["flow"] for r in phases["rollout"]["rows"]} == {"dense", "block_sparse_attention"}
    assert "| ok" in done.stdout or "ok (" in done.stdout  # the table was printed
