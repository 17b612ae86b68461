"""Fused kernels declared by flows: dispatch through the registry, launches per layer, errors by name."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.paged_batch import DEVICE
from vortex_rl.kernels._triton import HAS_TRITON, record_launches
from vortex_rl.sparse import FlowRunner, SparseConfig
from vortex_rl.sparse.backend import (
    FUSED_KERNELS,
    FusedKernel,
    KernelSet,
    MissingKernelError,
    declare_fused_kernels,
    fused_kernels,
    resolve_backend,
)

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
CONFIG = SparseConfig(page_size=16, budget_pages=6, sink_pages=1, local_pages=2)
# Aten ops that allocate or re-view memory launch nothing.
_NO_LAUNCH = {"empty", "empty_strided", "empty_like", "new_empty", "detach", "alias", "lift_fresh"}


class _TorchOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in _NO_LAUNCH:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def _meta_layer(flow, *, batch=4, q_heads=8, kv_heads=2, head_dim=64, max_pages=64):
    runner = FlowRunner(flow, CONFIG, num_q_heads=q_heads, num_kv_heads=kv_heads, head_dim=head_dim,
                        kernel_backend="triton")
    meta = dict(device="meta", dtype=torch.float16)
    num_pages = batch * max_pages
    cache = {"k": torch.empty(num_pages, kv_heads, 16, head_dim, **meta),
             "v": torch.empty(num_pages, kv_heads, 16, head_dim, **meta)}
    cache.update(runner.allocate_state(num_pages, dtype=torch.float16, device="meta"))
    ctx = runner.plan(torch.empty(batch, max_pages, dtype=torch.int32, device="meta"),
                      torch.empty(batch, dtype=torch.int32, device="meta"))
    qkv = torch.empty(batch, (q_heads + 2 * kv_heads) * head_dim, **meta)  # k, v: strided rows of a qkv output
    k = qkv[:, q_heads * head_dim:(q_heads + kv_heads) * head_dim].view(batch, kv_heads, head_dim)
    v = qkv[:, (q_heads + kv_heads) * head_dim:].view(batch, kv_heads, head_dim)
    q = torch.empty(batch, q_heads, head_dim, **meta)
    return runner, cache, ctx, q, k, v, torch.empty(batch, dtype=torch.int64, device="meta")


@needs_triton
@pytest.mark.parametrize("flow,kernels", [
    ("block_sparse_attention", ["_append_kv_centroids_kernel", "_block_sparse_indexer_kernel", "_paged_decode_kernel"]),
    ("dense", ["_write_kv_kernel", "_paged_decode_kernel"]),
])
def test_engine_layer_launches(flow, kernels):
    """One sparse layer of the engine is three launches (fused append, indexer, attention) and no
    torch compute op; recorded on meta tensors, so nothing runs."""
    runner, cache, ctx, q, k, v, loc = _meta_layer(flow)
    torch_ops = _TorchOps()
    with record_launches(run=False) as launches, torch_ops:
        runner.write(k, v, cache, loc)
        runner.decode(q, cache, ctx)
    assert [launch.name for launch in launches] == kernels
    assert torch_ops.ops == []


def test_torch_backend_runs_flows_as_written():
    assert fused_kernels("block_sparse_attention", resolve_backend("torch", "cpu")) == {}
    assert fused_kernels("quest", resolve_backend("torch", "cpu")) == {}


@needs_triton
def test_flows_without_declared_kernels_use_their_ops():
    assert fused_kernels("quest", resolve_backend("triton", "cpu")) == {}
    assert set(fused_kernels("block_sparse_attention", resolve_backend("triton", "cpu"))) == {"indexer", "append"}


def test_missing_kernel_names_flow_kernel_and_backend():
    partial = KernelSet(name="partial-cpu", runs_fused=True, block_sparse_indexer=lambda *a, **k: None)
    with pytest.raises(MissingKernelError, match="'block_sparse_attention'.*'append_kv_and_centroids'.*'partial-cpu'"):
        fused_kernels("block_sparse_attention", partial)


def test_declare_rejects_unknown_roles():
    with pytest.raises(ValueError, match="unknown roles"):
        declare_fused_kernels("dense", attention=FusedKernel("x", lambda *a: None))
    assert "dense" not in FUSED_KERNELS


@needs_triton
@pytest.mark.parametrize("seq_lens", [[1, 15, 17, 40, 130]])
def test_fused_triton_layer_matches_torch_flow(make_paged_batch, seq_lens):
    """Fused append + indexer + attention (Triton) give the torch flow's centroids, pages and output."""
    b = make_paged_batch(seq_lens, q_heads=4, kv_heads=2, head_dim=32, device=DEVICE, seed=3)
    results = {}
    for backend in ("torch", "triton"):
        runner = FlowRunner("block_sparse_attention", CONFIG, num_q_heads=4, num_kv_heads=2, head_dim=32,
                            kernel_backend=backend)
        cache = {"k": torch.zeros_like(b.k_cache), "v": torch.zeros_like(b.v_cache)}
        cache.update(runner.allocate_state(b.k_cache.shape[0], dtype=b.k_cache.dtype, device=DEVICE))
        slots = torch.cat([b.page_table[r, torch.arange(n, device=DEVICE) // 16].long() * 16
                           + torch.arange(n, device=DEVICE) % 16 for r, n in enumerate(seq_lens)])
        runner.write(torch.cat(b.keys), torch.cat(b.values), cache, slots)
        ctx = runner.plan(b.page_table, b.seq_lens)
        pages = runner.select(b.q, cache, ctx)
        results[backend] = (cache["centroids"], pages, *runner.decode(b.q, cache, ctx))
    (c_t, p_t, o_t, l_t), (c_k, p_k, o_k, l_k) = results["torch"], results["triton"]
    torch.testing.assert_close(c_k, c_t, atol=1e-5, rtol=1e-5)
    as_sets = lambda p: [[set(row.tolist()) - {-1} for row in per] for per in p.cpu()]
    assert as_sets(p_k) == as_sets(p_t)
    torch.testing.assert_close(o_k, o_t, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(l_k, l_t, atol=2e-5, rtol=0)
