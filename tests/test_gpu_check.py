"""``scripts/gpu_check.py --cpu-smoke``: every phase of the one-shot GPU check runs and passes at tiny sizes
on the CPU, so the script works the first time a GPU is lent."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    phases = {p["phase"]: p for p in report["phases"]}
    assert list(phases) == ["kernels", "graphs", "kernel_timings", "grpo", "rollout", "kernel_sweep"]
    assert all(p["ok"] and p["error"] is None and p["rows"] for p in phases.values())
    kernels = {r["check"] for r in phases["kernels"]["rows"]}
    assert {"dense_decode", "sparse_decode", "block_sparse_indexer", "append_kv_and_centroids", "merge_states"} <= kernels
    assert [r["step"] for r in phases["grpo"]["rows"]] == [1, 2]
    assert all(r["rollout/weights_checksum_rel_diff"] < 1e-6 for r in phases["grpo"]["rows"])
    assert {r["flow"] for r in phases["rollout"]["rows"]} == {"dense", "block_sparse_attention"}
    # the decode forward timed inside the run: a positive share of each step, the rest (host, sampling) not negative
    assert all(0 < r["forward_ms_per_step"] and r["other_ms_per_step"] >= 0 for r in phases["rollout"]["rows"])
    sweep = json.loads((tmp_path / "sweep_kernels.json").read_text())  # beside --out, as on the device
    assert {(r["sweep"], r["op"]) for r in phases["kernel_sweep"]["rows"]} == {
        ("tile", "dense"), ("tile", "sparse"), ("splits", "dense"), ("splits", "sparse"), ("chunks", "indexer")}
    assert all(r.get("max_abs_diff", 0) < 1e-5 and r.get("pages_equal", True) for r in sweep["rows"])
    # the host's parts of a step: each a share of the host time, none counted twice
    for r in json.loads((tmp_path / "gpu_check_rollout.json").read_text())["results"]:
        phase_ms = r["host_phase_ms_per_step"]
        assert {"schedule", "decode_inputs", "sampling_tensors", "sample_launch", "read"} <= set(phase_ms)
        assert min(phase_ms.values()) >= -1e-6 and 0 < sum(phase_ms.values()) <= r["host_ms_per_step"]
    assert "| ok" in done.stdout or "ok (" in done.stdout  # the table was printed


@pytest.mark.slow
def test_isolated_phases_keep_their_results_and_a_phase_past_its_limit_is_recorded(tmp_path):
    """--isolate (the GPU default): each phase in its own process. One that finishes hands its record back;
    one stopped at its time limit is a failed phase that says so, and the next phase still runs."""
    script = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke", "--isolate"]
    out = tmp_path / "ok.json"
    done = subprocess.run(script + ["--phases", "kernels", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (phase,) = json.loads(out.read_text())["phases"]
    assert phase["phase"] == "kernels" and phase["ok"] and phase["rows"]
    # One table, the parent's, ends the output: the child's own would spend the device reply's tail.
    assert done.stdout.count("\n[kernels] ok") == 1, done.stdout[-4000:]
    assert done.stdout.rstrip().endswith(f"wrote {out}")
    out = tmp_path / "limit.json"
    done = subprocess.run(script + ["--phases", "grpo,kernels", "--phase-limit-s", "2", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    phases = json.loads(out.read_text())["phases"]
    assert [p["phase"] for p in phases] == ["grpo", "kernels"]
    assert all(not p["ok"] and p["error"] == "stopped at its time limit of 2 s without a result" for p in phases)


def test_total_limit_skips_the_phases_it_has_no_time_for(tmp_path):
    """--total-limit-s: phases that would start with under MIN_PHASE_S left are recorded as skipped (the
    table and JSON still come out), so a device call's own limit never cuts the report off."""
    out = tmp_path / "skip.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke", "--isolate",
                           "--phases", "kernels,grpo", "--total-limit-s", "5", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    phases = json.loads(out.read_text())["phases"]
    assert [(p["phase"], p["ok"]) for p in phases] == [("kernels", False), ("grpo", False)]
    assert all(p["error"].startswith("skipped:") and "--total-limit-s 5" in p["error"] for p in phases)
    assert "[grpo] FAILED" in done.stdout


def test_replay_vs_eager_compares_one_padded_step(make_tiny_hf_model):
    """The graphs phase's exact check, on CPU with a stand-in for the captured graphs (the forward on the
    static buffers, what a replay runs): 0 for a faithful replay, and it sees a replay that reads stale
    inputs (a graph whose page table lost its last column: a request's newest page)."""
    import importlib.util

    from vortex_rl.rollout import Engine, EngineConfig
    from vortex_rl.rollout.cuda_graphs import DecodeGraphs
    from vortex_rl.sparse import SparseConfig

    spec = importlib.util.spec_from_file_location("graph_checks", ROOT / "scripts" / "graph_checks.py")
    graph_checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph_checks)
    engine = Engine.from_pretrained(make_tiny_hf_model("qwen3"), config=EngineConfig(
        num_pages=64, max_model_len=128, sparse=SparseConfig(budget_pages=4), dtype="float32",
        max_num_batched_tokens=32))  # the 39-token prompt prefills over two steps
    runner = engine.runner
    graphs = DecodeGraphs(runner.decode_forward, (1, 2, 4), max_pages_per_seq=runner.max_pages_per_seq,
                          scratch_page=runner.scratch_page, page_size=runner.page_size, device=runner.device)

    class ForwardOnBuffers:  # what a captured graph does on replay
        def __init__(self, rows, stale=False):
            self.rows, self.stale = rows, stale

        def replay(self):
            inputs = {k: b[: self.rows] for k, b in graphs.buffers.items()}
            if self.stale:
                inputs["page_table"] = inputs["page_table"].clone()
                inputs["page_table"][:, 1:] = -1
            graphs.outputs[self.rows] = graphs.forward(inputs)

    prompts = [list(range(1, 40)), [3, 4, 5]]
    runner.graphs = graphs
    graphs.graphs = {rows: ForwardOnBuffers(rows) for rows in graphs.batch_sizes}
    assert graph_checks.replay_vs_eager(engine, prompts) == 0.0
    assert not engine.has_unfinished_requests()  # aborted afterwards
    graphs.graphs = {rows: ForwardOnBuffers(rows, stale=True) for rows in graphs.batch_sizes}
    assert graph_checks.replay_vs_eager(engine, prompts) > 1e-3


def test_greedy_agreement_compares_up_to_the_first_flip():
    """The graphs phase's generation check: a rounding flip between near-tied tokens agrees (later steps,
    on other contexts, are not compared); a run whose chosen log-probs differ before or at the flip does not."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("graph_checks", ROOT / "scripts" / "graph_checks.py")
    graph_checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph_checks)
    agree = graph_checks.greedy_agreement
    assert agree([1, 2, 3], [-0.5, -1.0, -2.0], [1, 2, 3], [-0.5, -1.001, -2.0]) == (None, pytest.approx(1e-3))
    # a near-tie flipped at step 1: compared through it (0.002), not after it (5.0 apart on other contexts)
    first, worst = agree([1, 2, 3, 4], [-0.5, -0.693, -1.0, -1.0], [1, 7, 9, 9], [-0.5, -0.695, -6.0, -6.0])
    assert first == 1 and worst == pytest.approx(0.002) and worst <= graph_checks.GRAPH_LOGPROB_TOL
    # a wrong graph: its max log-prob is far off where it diverges
    first, worst = agree([1, 2], [-0.5, -0.7], [1, 8], [-0.5, -3.0])
    assert first == 1 and worst > graph_checks.GRAPH_LOGPROB_TOL


def _sweep_kernels():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_kernels", ROOT / "scripts" / "sweep_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_names_the_splits_a_request_really_uses():
    """The kernel gives each split 2 blocks at least and caps the grid at the blocks: a sparse list of 32
    pages in blocks of 4 (8 blocks) spreads over 4 splits whatever more is asked for; dense 16K (256 blocks)
    over all 16. Worked by hand from ``_paged_decode_kernel``'s split sizing."""
    sk = _sweep_kernels()
    assert [sk.splits_used(s, 32, 4) for s in (1, 2, 4, 8, 16)] == [1, 2, 4, 4, 4]
    assert [sk.splits_used(s, 1024, 4) for s in (1, 2, 4, 8, 16, 32)] == [1, 2, 4, 8, 16, 16]
    assert sk.splits_used(3, 32, 4) == 3  # 8 blocks in splits of 3: 3, 3, 2
    assert sk.splits_used(4, 20, 4) == 3  # 5 blocks, at most 3 splits of 2 blocks: 2, 2, 1
    shape = sk.bk.Shape()  # bf16 head_dim 128: default 4 pages a block
    assert sk._split_name("sparse", 16, shape, 16384) == "num_splits=16 (uses 4)"
    assert sk._split_name("dense", 16, shape, 16384) == "num_splits=16"


def test_sweep_keeps_going_and_reports_progress_when_a_default_launch_fails(monkeypatch):
    """An op whose default launch raises (a GPU that cannot run it, a poisoned context) is a row with its
    error: the other ops are still timed, and ``progress`` saw the rows as they came (what a sweep stopped
    at its time limit leaves on disk)."""
    sk = _sweep_kernels()
    real = sk.kernels.sparse_decode_attention

    def broken(*args, config=None, num_splits=None, **kw):
        if config is None and num_splits is None:
            raise RuntimeError("sparse default cannot launch")
        return real(*args, config=config, num_splits=num_splits, **kw)

    monkeypatch.setattr(sk.kernels, "sparse_decode_attention", broken)
    setup = {**sk.sweep_setup(True), "split_batches": (2,), "splits": (1,), "chunks": (1,),
             "tiles": [sk.DecodeLaunch(2, 2)]}
    seen = []
    rows = sk.run_sweeps(torch.device("cpu"), **setup, progress=lambda r: seen.append(len(r)))
    by = {(r["sweep"], r["op"], r["variant"]): r for r in rows}
    assert by["default", "sparse", "default"]["error"] == "RuntimeError: sparse default cannot launch"
    assert not any(r["op"] == "sparse" and r["sweep"] != "default" for r in rows)  # nothing to compare with
    assert {("default", "dense"), ("default", "indexer"), ("tile", "dense"), ("splits", "dense"),
            ("chunks", "indexer")} <= {(r["sweep"], r["op"]) for r in rows if "us" in r}
    assert seen == [2 + 1, 2 + 1 + 1, len(rows)]  # dense (default, split, tile), sparse, indexer (default, chunk)
    assert {(b["sweep"], b["op"]) for b in sk.best_rows(rows)} == {("tile", "dense"), ("splits", "dense"),
                                                                   ("chunks", "indexer")}


def test_table_cells_stay_short_so_the_table_ends_the_device_reply(capsys):
    """A phase error can be a Triton compile error of kilobytes; the table printed last must still fit the
    device reply's 12,000 characters, so a cell is cut (the JSON keeps the whole text)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    long = "CompilationError: " + "x" * 20000
    info = {"device": "d", "torch": "t", "triton": "tr", "transformers": "tf"}
    gpu_check.print_table(info, [{"phase": "kernels", "ok": False, "seconds": 1.0, "error": long,
                                  "rows": [{"check": "a", "error": long, "ok": False}]}])
    printed = capsys.readouterr().out
    assert len(printed) < 1000 and "CompilationError: xxx" in printed
    assert max(len(line) for line in printed.splitlines()) <= gpu_check.CELL_CHARS + 40


def test_sweep_best_rows_hold_variants_to_the_outputs_scale():
    """Attention over 16K random tokens has outputs of ~0.05: a variant 0.01 off (a fifth of the largest
    output, far past bf16 rounding) computes something else and must not be picked, however fast; one an
    ulp off agrees. Rows as ``run_sweeps`` makes them (its ``_row`` on hand-made outputs)."""
    sk = _sweep_kernels()
    default = torch.full((2, 4, 8), 0.05)
    args = dict(graphed=True, nbytes=1e6, copy_bw=1e12, default_out=default)
    rows = [sk._row("default", "dense", 32, "default", 2e-5, out=default, **args),
            sk._row("tile", "dense", 32, "fast but off", 1e-5, out=default + 0.01, **args),
            sk._row("tile", "dense", 32, "an ulp off", 1.5e-5, out=default + 2e-4, **args)]
    for r in rows:
        r["speedup"] = 2e-5 * 1e6 / r["us"]
    (best,) = sk.best_rows(rows)
    assert best["best"] == "an ulp off" and best["failed"] == 1 and best["variants"] == 1
    assert rows[1]["rel_diff"] == pytest.approx(0.2)


def test_sweep_flags_the_configs_whose_reads_fit_in_l2():
    """Cycled over 4 layers, what a sweep's calls read decides whether HBM or L2 serves them: at the real
    shape (a token of all KV heads is 8 x 128 x 2 B = 2 KiB) dense batch 1 reads 64 MiB, sparse 2 MiB a
    layer from batch 1's 64 MiB cache, the indexer 2 MiB of centroids a layer. Against H200's 60 MiB L2
    (times 2) those and batch 4's sparse / indexer reads are L2-hot; batch 4's dense and batch 32 are not."""
    sk = _sweep_kernels()
    shape, l2, mib = sk.bk.Shape(), 60 * 2**20, 2**20
    hot = {}
    for batch in (1, 4, 32):
        nbytes = sk.bk.traffic(batch, 16384, shape)
        kv = 2 * batch * 1024 * 16 * 2048
        work = {op: sk.bk.working_set(op, nbytes, 4, kv) for op in ("dense", "attention", "indexer", "sparse")}
        if batch == 1:
            assert work == {"dense": 64 * mib, "attention": 8 * mib, "indexer": 8 * mib, "sparse": 16 * mib}
        hot.update({(op, batch): w < 2 * l2 for op, w in work.items()})
    assert {k for k, v in hot.items() if v} == {("dense", 1), ("attention", 1), ("indexer", 1), ("sparse", 1),
                                                  ("attention", 4), ("indexer", 4), ("sparse", 4)}


def test_a_phase_streams_its_output_as_it_runs_and_is_stopped_at_its_limit():
    """An isolated phase's output reaches the log while it runs (not when it exits), so a phase cut off by
    the device call's own limit, which ends gpu_check too, still leaves its progress and traceback there;
    a child past its limit is stopped, and its output's tail is kept for the record."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_check

    arrivals = []
    start = time.perf_counter()
    child = [sys.executable, "-c", "import time; print('phase started', flush=True); time.sleep(60)"]
    tail, how = gpu_check.stream_child(child, limit=5, sink=lambda chunk: arrivals.append(
        (time.perf_counter() - start, chunk)))
    assert how == "stopped at its time limit of 5 s"
    assert time.perf_counter() - start < 30  # stopped, not waited for
    first_at, first = arrivals[0]
    assert b"phase started" in first and first_at < 5  # seen before the child ended
    assert "phase started" in tail
    # the tail keeps the end of a long output, and a child that exits says how
    child = [sys.executable, "-c", "print('x' * 50000); print('the end'); raise SystemExit(3)"]
    tail, how = gpu_check.stream_child(child, limit=60, sink=lambda chunk: None, tail_chars=100)
    assert how == "exited with code 3" and tail.endswith("the end\n") and len(tail) == 100


def test_bench_rollout_frees_each_engine_before_the_next_is_sized(monkeypatch):
    """Each flow's engine (its KV cache) is unreachable when run_flow frees memory, so the next engine,
    sized from the device's free memory, does not count the last one's cache as used (on an 80 GB card the
    third run would otherwise get a few GB and preempt)."""
    import gc
    import types
    import weakref

    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_rollout

    engines, alive_at_collect = [], []

    class RecordedEngine(bench_rollout.Engine):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            engines.append(weakref.ref(self))

    def collect():
        gc.collect()
        alive_at_collect.append([ref() is not None for ref in engines])

    monkeypatch.setattr(bench_rollout, "Engine", RecordedEngine)
    monkeypatch.setattr(bench_rollout, "gc", types.SimpleNamespace(collect=collect))
    args = bench_rollout.parse_args(["--model", "tiny", "--requests", "4", "--n", "2", "--gen-len", "4"])
    prompts = bench_rollout.workload(args)
    for flow in ("dense", "block_sparse_attention"):
        row = bench_rollout.run_flow(flow, args, prompts, torch.device("cpu"), torch.float32)
        assert row["generated_tokens"] == 4 * 4 and row["forward_ms_per_step"] > 0
    assert alive_at_collect == [[False], [False, False]]


def _gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _phases(dense_pct_copy: float, sparse_us: float, speedup: float) -> list[dict]:
    """The rows of the two phases the targets read, as the phases write them (other sizes around)."""
    timing = [{"batch": 32, "context": 16384, "op": "dense", "impl": "triton", "us": 900.0, "pct_copy": dense_pct_copy},
              {"batch": 32, "context": 16384, "op": "dense", "impl": "torch sdpa", "us": 700.0, "pct_copy": 99.0},
              {"batch": 4, "context": 16384, "op": "sparse", "impl": "triton", "us": 1.0, "pct_copy": 10.0},
              {"batch": 32, "context": 16384, "op": "sparse", "impl": "triton", "us": sparse_us, "pct_copy": 60.0},
              {"op": "copy", "GB/s": 3000.0}]
    rollout = [{"run": "dense", "flow": "dense", "overlap": True, "speedup_vs_dense": 1.0},
               {"run": "block_sparse_attention", "flow": "block_sparse_attention", "overlap": True,
                "speedup_vs_dense": speedup},
               {"run": "block_sparse_attention:serial", "flow": "block_sparse_attention", "overlap": False,
                "speedup_vs_dense": 99.0}]
    return [{"phase": "kernel_timings", "rows": timing}, {"phase": "rollout", "rows": rollout}]


def test_targets_are_read_off_the_rows_at_their_sizes_for_the_card(capsys):
    """The table ends with the issue's targets: the dense and sparse Triton rows at batch 32 x 16K and the
    overlapped block-sparse rollout, each against its target; the sparse time is held to 60 us on an H100
    and 45 on an H200. A missing phase, or the CPU smoke's tiny sizes, leaves ``met`` empty."""
    gc = _gpu_check_module()
    info = {"device": "NVIDIA H100 80GB HBM3", "torch": "t", "triton": "tr", "transformers": "tf"}
    rows = gc.target_rows(info, _phases(dense_pct_copy=86.0, sparse_us=50.0, speedup=3.2))
    assert [(r["measured"], r["wanted"], r["met"]) for r in rows] == [
        (86.0, ">= 85", True), (50.0, "<= 60", True), (3.2, ">= 3.5", False)]
    h200 = gc.target_rows({**info, "device": "NVIDIA H200"}, _phases(dense_pct_copy=84.0, sparse_us=50.0, speedup=4.0))
    assert [(r["measured"], r["wanted"], r["met"]) for r in h200] == [
        (84.0, ">= 85", False), (50.0, "<= 45", False), (4.0, ">= 3.5", True)]
    smoke = gc.target_rows({**info, "cpu_smoke": True}, _phases(86.0, 50.0, 4.0))
    assert [r["met"] for r in smoke] == [None, None, None]
    missing = gc.target_rows(info, [{"phase": "kernel_timings", "rows": []}])
    assert [(r["measured"], r["met"]) for r in missing] == [(None, None)] * 3
    gc.print_table(info, [{"phase": "kernels", "ok": True, "seconds": 1.0, "error": None, "rows": []}], rows)
    table = capsys.readouterr().out
    assert table.index("[targets]") > table.index("[kernels]")
    assert "indexer + sparse attention, us per layer (batch 32, context 16384) | 50 | <= 60 | True" in table
