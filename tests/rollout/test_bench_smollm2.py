"""``bench_rollout.py --smollm2`` times decoders that compute a real decode step: the dense decoder's first
logits equal ``transformers``' forward over the same seeded keys and values (a ``DynamicCache`` built from
the engine's pages), the block-sparse decoder's equal them when every page fits its budget, and the two
step in turn, each with its own engine; the report holds every case."""

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_rollout", ROOT / "scripts" / "bench_rollout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hf_logits(bench, model, decoder) -> torch.Tensor:
    """``transformers``' logits for the decoder's first step, over a cache copied from its engine's pages."""
    from transformers import DynamicCache

    runner, table, context = decoder.engine.runner, decoder.table.long(), decoder.context
    cache = DynamicCache(config=model.config)
    for layer in range(model.config.num_hidden_layers):
        # [batch, pages, kv_heads, page_size, head_dim] -> [batch, kv_heads, tokens, head_dim]
        k, v = (runner.kv[name][layer][table] for name in ("k", "v"))
        k, v = (t.permute(0, 2, 1, 3, 4).flatten(2, 3)[:, :, :context] for t in (k, v))
        cache.update(k.clone(), v.clone(), layer)
    cache_arg = bench.hf_cache_arg(model)
    batch = table.shape[0]
    with torch.inference_mode():
        out = model(input_ids=decoder.ids[:, None], use_cache=True, position_ids=torch.full((batch, 1), context),
                    cache_position=torch.tensor([context]), **{cache_arg: cache})
    return out.logits[:, -1].float()


def test_decoders_compute_the_step_and_the_report_has_every_case(smollm_hf, tmp_path):
    bench = _bench()
    model, tokenizer = smollm_hf
    args = bench.parse_args(["--smollm2", "--steps", "2", "--warmup", "1", "--cases", "1x40,2x24",
                             "--output", str(tmp_path / "b.json")])
    dense, sparse = (bench.OursDecoder(model, tokenizer, flow, 2, 40, args) for flow in ("dense", "block_sparse_attention"))
    assert dense.engine is not sparse.engine
    want = _hf_logits(bench, model, dense)  # before the step writes its token into the pages
    dense.step_ms()
    sparse.step_ms()
    # float32 on both sides, other summation orders: 1e-3 on logits of magnitude ~10
    torch.testing.assert_close(dense.logits.float(), want, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(sparse.logits.float(), want, atol=1e-3, rtol=1e-4)  # 3 pages, budget 32
    assert dense.done == sparse.done == 1

    report = bench.compare_smollm2(args, smollm_hf)
    saved = json.loads((tmp_path / "b.json").read_text())
    assert [(c["batch"], c["context"]) for c in saved["cases"]] == [(1, 40), (2, 24)]
    for case in saved["cases"]:
        assert len(case["dense"]["step_ms"]) == len(case["block_sparse"]["step_ms"]) == 2
        assert case["sparse_vs_dense"] == case["dense"]["median_step_ms"] / case["block_sparse"]["median_step_ms"]
    assert [c["batch"] for c in report["cases"]] == [1, 2]
