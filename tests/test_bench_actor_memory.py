"""``scripts/bench_actor_memory.py`` on a tiny model: every case runs in its own process, both scorings agree,
and the report holds a peak and a time per (tokens, phase, implementation)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_actor_memory_runs_and_both_scorings_agree(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_actor_memory

    out = tmp_path / "memory.json"
    bench_actor_memory.main(["--model", "tiny", "--tokens", "64", "--response-len", "16", "--prompt-len", "8",
                             "--chunk-tokens", "24", "--topk", "3", "--out", str(out)])
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["phase"], r["impl"]) for r in rows] == [
        ("old_log_probs", "full_logits"), ("old_log_probs", "chunked"),
        ("loss_backward", "full_logits"), ("loss_backward", "chunked")]
    assert all(r["tokens"] == 64 and r["ok"] and r["max_abs_diff"] < 1e-4 for r in rows)
    assert all(r["seconds"] > 0 and isinstance(r["peak_bytes"], int) for r in rows)
    assert report["vocab"] == 512


def test_a_case_that_fails_is_recorded_and_the_next_runs(tmp_path, capsys):
    """A case's process that fails (out of memory, where the whole logits do not fit) is a row with its
    error, not the end of the benchmark; a chunked case that fails is not ok."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_actor_memory

    out = tmp_path / "memory.json"
    report = bench_actor_memory.main(["--model", "no-such-model", "--tokens", "16", "--response-len", "16",
                                      "--out", str(out)])
    rows = report["rows"]
    assert len(rows) == 4 and all(r["peak_bytes"] is None and "no-such-model" in r["error"] for r in rows)
    assert not any(r["ok"] for r in rows if r["impl"] == "chunked")
    assert "failed" in capsys.readouterr().out
