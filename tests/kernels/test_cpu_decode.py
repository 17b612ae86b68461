"""CPU paged decode attention (the ``"cpu"`` kernel set) against the plain-torch references.

Tolerances (``tests.paged_batch.TOL`` / ``LSE_TOL``): fp32 ``o`` within 2e-5 abs + 1e-5 rel and ``lse``
within 2e-5; bf16 inputs 3e-2 / 2e-2 and 2e-2 (the fused kernel rounds its probabilities to bf16 before
the value product, the reference stays in fp32); fp16 4e-3 / 4e-3 and 2e-3.
"""

import pytest
import torch

from tests.paged_batch import assert_attention_close, random_page_ids
from vortex_rl.kernels.paged_decode import all_pages
from vortex_rl.kernels import cpu_decode, dense_decode_attention_ref, sparse_decode_attention_ref
from vortex_rl.kernels.cpu_decode import dense_decode_attention_cpu, sparse_decode_attention_cpu
from vortex_rl.sparse.backend import BACKENDS, resolve_backend

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
PATHS = [pytest.param(True, id="flash"), pytest.param(False, id="matmul")]


def _args(b):
    return b.q, b.k_cache, b.v_cache, b.page_table, b.seq_lens


def _reference_in_fp32(ref, b, *extra):
    """The reference on the fp32 upcast of the inputs: the exact answer the low-precision kernels approach."""
    o, lse = ref(b.q.float(), b.k_cache.float(), b.v_cache.float(), b.page_table, b.seq_lens, *extra)
    return o, lse


@pytest.mark.parametrize("use_flash", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seq_lens", [[1], [15], [16], [17, 40, 64], [33, 1, 70], [0, 5]])
@pytest.mark.parametrize("group", [1, 2, 4])
def test_dense_matches_reference(make_paged_batch, seq_lens, group, dtype, use_flash):
    b = make_paged_batch(seq_lens, q_heads=2 * group, kv_heads=2, head_dim=64, dtype=dtype, seed=len(seq_lens))
    got = dense_decode_attention_cpu(*_args(b), use_flash=use_flash)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert_attention_close(got, _reference_in_fp32(dense_decode_attention_ref, b), dtype)


@pytest.mark.parametrize("use_flash", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group,head_dim", [(1, 64), (2, 128), (4, 64), (2, 16)])
def test_sparse_matches_reference(make_paged_batch, group, head_dim, dtype, use_flash):
    b = make_paged_batch([1, 15, 17, 33, 48], q_heads=2 * group, kv_heads=2, head_dim=head_dim, dtype=dtype)
    ids = random_page_ids(b, budget=4, seed=group)  # -1 anywhere in the list
    got = sparse_decode_attention_cpu(*_args(b), ids, use_flash=use_flash)
    assert_attention_close(got, _reference_in_fp32(sparse_decode_attention_ref, b, ids), dtype)


def test_sparse_every_page_equals_dense(make_paged_batch):
    """A shuffled list of all pages with -1 between them attends to exactly the dense token set."""
    b = make_paged_batch([17, 50, 5], q_heads=4, kv_heads=2, head_dim=64)
    ids = all_pages(b.page_table, b.seq_lens, 2, 16)
    ids = torch.cat([ids, torch.full_like(ids, -1)], dim=-1)
    ids = ids[..., torch.randperm(ids.shape[-1], generator=torch.Generator().manual_seed(0))]
    assert_attention_close(sparse_decode_attention_cpu(*_args(b), ids), dense_decode_attention_cpu(*_args(b)),
                           torch.float32)


@pytest.mark.parametrize("use_flash", PATHS)
def test_trailing_unlisted_columns_change_no_bit(make_paged_batch, use_flash):
    """A page list sized for a larger budget (-1 columns after the listed ones, as an engine with room for
    the budget guard makes) gives bit-identical output to the list without them."""
    b = make_paged_batch([1, 15, 17, 33, 48, 9, 28, 3], q_heads=4, kv_heads=2, head_dim=16, page_size=2, seed=5)
    ids = random_page_ids(b, budget=4, seed=2)
    roomy = torch.cat([ids, torch.full((*ids.shape[:2], 10), -1, dtype=ids.dtype)], dim=-1)
    tight_o, tight_lse = sparse_decode_attention_cpu(*_args(b), ids, use_flash=use_flash)
    roomy_o, roomy_lse = sparse_decode_attention_cpu(*_args(b), roomy, use_flash=use_flash)
    assert torch.equal(tight_o, roomy_o) and torch.equal(tight_lse, roomy_lse)


@pytest.mark.parametrize("chunk_bytes", [1, 40_000])
def test_chunks_of_requests_equal_one_chunk(make_paged_batch, monkeypatch, chunk_bytes):
    """One request per chunk (1 byte) and a few per chunk give the reference's answer; each dense chunk
    is trimmed to its own longest request."""
    b = make_paged_batch([70, 3, 129, 16, 33], q_heads=4, kv_heads=2, head_dim=64, seed=3)
    ids = random_page_ids(b, budget=9, seed=1)
    monkeypatch.setattr(cpu_decode, "CHUNK_BYTES", chunk_bytes)
    assert_attention_close(dense_decode_attention_cpu(*_args(b)), dense_decode_attention_ref(*_args(b)), torch.float32)
    assert_attention_close(sparse_decode_attention_cpu(*_args(b), ids), sparse_decode_attention_ref(*_args(b), ids),
                           torch.float32)


@pytest.mark.parametrize("use_flash", PATHS)
def test_empty_page_list_gives_zero_and_minus_inf(make_paged_batch, use_flash):
    b = make_paged_batch([20, 9], q_heads=2, kv_heads=1, head_dim=64)
    ids = torch.full((2, 1, 3), -1, dtype=torch.int32)
    ids[1, 0, 1] = 0
    o, lse = sparse_decode_attention_cpu(*_args(b), ids, use_flash=use_flash)
    assert torch.equal(o[0], torch.zeros_like(o[0])) and torch.isneginf(lse[0]).all()
    assert_attention_close((o, lse), sparse_decode_attention_ref(*_args(b), ids), torch.float32)


def test_out_buffers_and_scale_are_used(make_paged_batch):
    b = make_paged_batch([18, 40], q_heads=4, kv_heads=2, head_dim=64, seed=5)
    out, lse = torch.empty_like(b.q), torch.empty(2, 4)
    got = dense_decode_attention_cpu(*_args(b), sm_scale=0.3, out=out, lse=lse)
    assert got[0] is out and got[1] is lse
    assert_attention_close(got, dense_decode_attention_ref(*_args(b), sm_scale=0.3), torch.float32)


def test_strided_cache_int64_metadata_and_page_size_8(make_paged_batch):
    """A cache that is a permuted view (not contiguous) takes the advanced-indexing copy."""
    b = make_paged_batch([9, 30], q_heads=4, kv_heads=2, head_dim=64, page_size=8, seed=2)
    k = b.k_cache.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    v = b.v_cache.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    assert not k.is_contiguous()
    table = b.page_table.long().t().contiguous().t()
    ids = random_page_ids(b, budget=3, seed=4).long()
    got = sparse_decode_attention_cpu(b.q, k, v, table, b.seq_lens.long(), ids)
    assert_attention_close(got, sparse_decode_attention_ref(*_args(b), ids), torch.float32)
    got = dense_decode_attention_cpu(b.q, k, v, table, b.seq_lens.long())
    assert_attention_close(got, dense_decode_attention_ref(*_args(b)), torch.float32)


def test_bad_inputs_raise_clear_errors(make_paged_batch):
    b = make_paged_batch([5], q_heads=4, kv_heads=2, head_dim=64)
    with pytest.raises(ValueError, match="q_heads"):
        dense_decode_attention_cpu(b.q[:, :3], b.k_cache, b.v_cache, b.page_table, b.seq_lens)
    with pytest.raises(ValueError, match="lse must be"):
        dense_decode_attention_cpu(*_args(b), lse=torch.empty(1, 4, dtype=torch.float64))
    meta = [t.to("meta") for t in _args(b)]
    with pytest.raises(ValueError, match="CPU tensors, got q on meta"):
        dense_decode_attention_cpu(*meta)


def test_auto_picks_the_cpu_set_on_cpu_and_torch_stays_the_references():
    assert "cpu" in BACKENDS
    cpu = resolve_backend("auto", "cpu")
    assert cpu.name == "cpu" and resolve_backend("cpu", "cpu") is cpu
    assert cpu.dense_decode is dense_decode_attention_cpu and cpu.sparse_decode is sparse_decode_attention_cpu
    ref = resolve_backend("torch", "cpu")
    assert ref.dense_decode is dense_decode_attention_ref and ref.sparse_decode is sparse_decode_attention_ref


def test_scratch_buffers_serve_steps_inside_and_outside_inference_mode(make_paged_batch, monkeypatch):
    """The reused gather buffers are made outside inference mode, so an engine step (inference mode)
    and a later plain call (a test, a trainer) can share them."""
    monkeypatch.setattr(cpu_decode, "_WORKSPACE", cpu_decode._Workspace())
    b = make_paged_batch([40, 7], q_heads=4, kv_heads=2, head_dim=64, seed=6)
    with torch.inference_mode():
        inside = dense_decode_attention_cpu(*_args(b))
    outside = dense_decode_attention_cpu(*_args(b))
    assert_attention_close(outside, inside, torch.float32)
