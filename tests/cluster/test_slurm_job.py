"""The Slurm launcher for real: a one-node Slurm on localhost runs scripts/slurm/train.sbatch.

Needs Debian's slurm-wlm and munge (``make test-cluster`` installs them) and root; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.local_slurm import LocalSlurm, missing_tools

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = missing_tools()
    if missing:
        pytest.skip(f"Slurm is not installed (missing {', '.join(missing)}); `make test-cluster` installs it")
    if os.geteuid() != 0:
        pytest.skip("a local Slurm needs root to start munged/slurmd")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()


def test_sbatch_runs_tiny_cpu_and_writes_metrics(slurm, tmp_path):
    out_dir = tmp_path / "run"
    log = tmp_path / "job.out"
    env = dict(slurm.env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the venv's python and ray
    steps = 2
    job = subprocess.run(
        ["sbatch", "--wait", f"--output={log}", "--chdir", str(REPO), str(REPO / "scripts/slurm/train.sbatch"),
         "recipe=tiny_cpu", f"trainer.total_steps={steps}", f"trainer.output_dir={out_dir}"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    output = log.read_text() if log.exists() else ""
    assert job.returncode == 0, f"sbatch failed: {job.stderr}\n{output[-4000:]}"
    assert "ray cluster ready: 1 node(s)" in output
    assert "orchestrator: ray" in (out_dir / "config.yaml").read_text()
    rows = {row["step"]: row for row in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())}
    assert sorted(rows) == list(range(steps + 1)), f"steps logged: {sorted(rows)}"
    for step in range(1, steps + 1):
        row = rows[step]
        assert 0.0 <= row["critic/rewards/mean"] <= 1.0 and row["actor/grad_norm"] >= 0
        assert row["rollout/weights_checksum_rel_diff"] <= 1e-6 and row["rollout/worker_restarts"] == 0
    assert (out_dir / "checkpoints" / f"global_step_{steps}" / "model" / "model.safetensors").is_file()
    job_id = job.stdout.split()[-1]  # "Submitted batch job <id>"
    leftover = subprocess.run(["pgrep", "-f", f"ray-{job_id}/"], capture_output=True, text=True).stdout.split()
    assert not leftover, f"Ray processes of the job outlived it: {leftover}"
