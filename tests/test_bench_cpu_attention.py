"""``scripts/bench_cpu_attention.py`` times what the engine computes: at a budget that holds every page the
block-sparse flow's layers equal dense attention over a plain copy of the keys, at a smaller one they do not;
its JSON has both flows for every case."""

import importlib.util
import json
import math
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--layers", "2", "--q-heads", "4", "--kv-heads", "2", "--head-dim", "16", "--repeats", "2", "--warmup", "1"]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_cpu_attention", ROOT / "scripts" / "bench_cpu_attention.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sdpa_reference(setup, layer: int) -> torch.Tensor:
    """Attention of the step's query over request 0's tokens (its pages in table order), the step's token
    written at its slot: ``[q_heads, head_dim]``."""
    cache, ps, context = setup.caches[layer], setup.runner.config.page_size, int(setup.seq_lens[0])
    pages = setup.table[0].long()
    keys = cache["k"][pages].transpose(0, 1).reshape(setup.k.shape[1], -1, setup.k.shape[2])[:, :context]
    values = cache["v"][pages].transpose(0, 1).reshape(setup.k.shape[1], -1, setup.k.shape[2])[:, :context]
    group = setup.q.shape[1] // setup.k.shape[1]
    keys, values = keys.repeat_interleave(group, 0), values.repeat_interleave(group, 0)
    scores = setup.q[0][:, None, :] @ keys.transpose(1, 2) / math.sqrt(setup.q.shape[2])
    return (scores.softmax(-1) @ values)[:, 0]


def test_flows_compute_attention_and_the_report_has_every_case(tmp_path):
    bench = _bench()
    args = bench.parse_args(TINY + ["--budget-pages", "8", "--out", str(tmp_path / "b.json")])
    with torch.inference_mode():
        dense, sparse = (bench.Setup(flow, 2, 100, args).step() for flow in bench.FLOWS)  # 7 pages: all fit
        dense_setup = bench.Setup("dense", 2, 100, args)
        outputs = dense_setup.step()
        for layer in range(2):
            torch.testing.assert_close(dense[layer], sparse[layer], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(outputs[layer][0], _sdpa_reference(dense_setup, layer), atol=1e-5, rtol=1e-5)
        args.budget_pages = 4  # 7 pages, 4 attended: another result
        sparse = bench.Setup("block_sparse_attention", 2, 100, args).step()
        assert not torch.allclose(dense[0], sparse[0], atol=1e-3)
    report = bench.main(TINY + ["--cases", "1x40", "2x100", "--out", str(tmp_path / "b.json")])
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["cases"] == json.loads(json.dumps(report["cases"]))
    assert [(c["batch"], c["context"]) for c in saved["cases"]] == [(1, 40), (2, 100)]
    for case in saved["cases"]:
        assert all(case[flow]["min_ms"] <= case[flow]["median_ms"] for flow in bench.FLOWS)
