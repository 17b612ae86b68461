"""Attention-state merge: combine partial attention results over disjoint KV sets.

An attention state over a KV set I is ``(o(I), lse(I))`` with ``lse(I) = log sum_{i in I} exp(s_i)``
(natural log) and ``o(I) = sum_i softmax(s)_i v_i``. For disjoint I and J::

    lse(I u J) = log(exp(lse_I) + exp(lse_J))
    o(I u J)   = o_I * exp(lse_I - lse(I u J)) + o_J * exp(lse_J - lse(I u J))

The merge is commutative and associative; an empty set is ``(0, -inf)``, its identity.
Split-KV decode attention combines its per-split partial states with :func:`merge_splits`.
"""

import torch

from vortex_rl.kernels._triton import next_pow2, require_triton, tl, triton


def _check_states(o_a, lse_a, o_b, lse_b) -> None:
    if o_a.shape != o_b.shape or lse_a.shape != lse_b.shape or o_a.shape[:-1] != lse_a.shape:
        raise ValueError(
            f"merge_states: shapes do not match: o_a {tuple(o_a.shape)}, lse_a {tuple(lse_a.shape)}, "
            f"o_b {tuple(o_b.shape)}, lse_b {tuple(lse_b.shape)}; expected o [..., head_dim] and lse [...]"
        )


def merge_states_ref(
    o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two attention states (plain torch, fp32 math; fp64 when the inputs are fp64).

    Parameters
    ----------
    o_a, o_b : Tensor ``[..., head_dim]``
        Attention outputs over two disjoint KV sets.
    lse_a, lse_b : Tensor ``[...]``, float32
        Their log-sum-exp of scores (natural log); ``-inf`` marks an empty set.

    Returns
    -------
    (o, lse): ``o`` ``[..., head_dim]`` in ``o_a.dtype``, ``lse`` ``[...]`` float32 (float64 for fp64 input).
    """
    _check_states(o_a, lse_a, o_b, lse_b)
    acc = torch.float64 if torch.float64 in (o_a.dtype, lse_a.dtype) else torch.float32
    lse_a = lse_a.to(acc)
    lse_b = lse_b.to(acc)
    m = torch.maximum(lse_a, lse_b)
    # Both empty: keep -inf and a zero output instead of nan.
    m_safe = torch.where(torch.isinf(m) & (m < 0), torch.zeros_like(m), m)
    w_a = torch.exp(lse_a - m_safe)
    w_b = torch.exp(lse_b - m_safe)
    denom = w_a + w_b
    lse = m_safe + torch.log(denom)
    denom_safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    o = (o_a.to(acc) * w_a.unsqueeze(-1) + o_b.to(acc) * w_b.unsqueeze(-1)) / denom_safe.unsqueeze(-1)
    return o.to(o_a.dtype), lse


@triton.jit
def _merge_states_kernel(
    o_a_ptr, lse_a_ptr, o_b_ptr, lse_b_ptr, o_ptr, lse_ptr,
    num_rows, head_dim,
    stride_oa, stride_ob, stride_o,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.arange(0, BLOCK_D)[None, :]
    r_ok = r < num_rows
    mask = r_ok[:, None] & (d < head_dim)
    lse_a = tl.load(lse_a_ptr + r, mask=r_ok, other=float("-inf")).to(tl.float32)
    lse_b = tl.load(lse_b_ptr + r, mask=r_ok, other=float("-inf")).to(tl.float32)
    m = tl.maximum(lse_a, lse_b)
    m = tl.where(m == float("-inf"), 0.0, m)  # both sets empty: keep -inf and a zero output
    w_a = tl.exp(lse_a - m)
    w_b = tl.exp(lse_b - m)
    denom = w_a + w_b
    o_a = tl.load(o_a_ptr + r[:, None] * stride_oa + d, mask=mask, other=0.0).to(tl.float32)
    o_b = tl.load(o_b_ptr + r[:, None] * stride_ob + d, mask=mask, other=0.0).to(tl.float32)
    denom_safe = tl.where(denom > 0, denom, 1.0)
    o = (o_a * w_a[:, None] + o_b * w_b[:, None]) / denom_safe[:, None]
    tl.store(o_ptr + r[:, None] * stride_o + d, o.to(o_ptr.dtype.element_ty), mask=mask)
    tl.store(lse_ptr + r, tl.where(denom > 0, m + tl.log(denom_safe), float("-inf")), mask=r_ok)


def _rows(t: torch.Tensor, head_dim: int) -> torch.Tensor:
    return t.reshape(-1, head_dim) if t.stride(-1) == 1 else t.contiguous().view(-1, head_dim)


def _check_out(name: str, t: torch.Tensor | None, shape, dtype) -> None:
    if t is not None and (tuple(t.shape) != tuple(shape) or t.dtype != dtype or not t.is_contiguous()):
        raise ValueError(
            f"{name} must be a contiguous {dtype} tensor of shape {tuple(shape)}, got {t.dtype} "
            f"{tuple(t.shape)} (contiguous={t.is_contiguous()})"
        )


def merge_states(
    o_a: torch.Tensor,
    lse_a: torch.Tensor,
    o_b: torch.Tensor,
    lse_b: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    lse_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two attention states (Triton, fp32 math; semantics of :func:`merge_states_ref`).

    Parameters
    ----------
    o_a, o_b : Tensor ``[..., head_dim]``.
    lse_a, lse_b : Tensor ``[...]`` (natural log; ``-inf`` = empty set).
    out, lse_out : optional contiguous outputs ``[..., head_dim]`` (``o_a.dtype``) and ``[...]`` float32.

    Returns
    -------
    ``(o, lse)`` as in :func:`merge_states_ref`.
    """
    require_triton("merge_states")
    _check_states(o_a, lse_a, o_b, lse_b)
    if o_a.dtype not in (torch.float16, torch.bfloat16, torch.float32) or o_b.dtype != o_a.dtype:
        raise ValueError(
            f"merge_states (Triton) takes float16/bfloat16/float32 outputs of one dtype, got {o_a.dtype} and "
            f"{o_b.dtype}; merge_states_ref handles float64"
        )
    _check_out("out", out, o_a.shape, o_a.dtype)
    _check_out("lse_out", lse_out, lse_a.shape, torch.float32)
    out = torch.empty_like(o_a, memory_format=torch.contiguous_format) if out is None else out
    lse_out = torch.empty(lse_a.shape, dtype=torch.float32, device=o_a.device) if lse_out is None else lse_out
    head_dim = o_a.shape[-1]
    rows = lse_a.numel()
    if rows == 0:
        return out, lse_out
    o_a2, o_b2, out2 = _rows(o_a, head_dim), _rows(o_b, head_dim), out.view(-1, head_dim)
    block_d = next_pow2(head_dim)
    block_r = max(1, min(16, 4096 // block_d))
    _merge_states_kernel[(triton.cdiv(rows, block_r),)](
        o_a2, lse_a.reshape(-1), o_b2, lse_b.reshape(-1), out2, lse_out.view(-1),
        rows, head_dim,
        o_a2.stride(0), o_b2.stride(0), out2.stride(0),
        BLOCK_R=block_r, BLOCK_D=block_d,
    )
    return out, lse_out


@triton.jit
def _merge_splits_kernel(
    o_part_ptr, lse_part_ptr, o_ptr, lse_ptr,
    num_splits, head_dim,
    stride_pr, stride_ps, stride_lr, stride_o,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    lse = tl.load(lse_part_ptr + r * stride_lr + s, mask=s < num_splits, other=float("-inf"))
    m = tl.max(lse, axis=0)
    m = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp(lse - m)
    denom = tl.sum(w, axis=0)
    mask = (s[:, None] < num_splits) & (d[None, :] < head_dim)
    o = tl.load(o_part_ptr + r * stride_pr + s[:, None] * stride_ps + d[None, :], mask=mask, other=0.0)
    denom_safe = tl.where(denom > 0, denom, 1.0)
    o = tl.sum(o.to(tl.float32) * w[:, None], axis=0) / denom_safe
    tl.store(o_ptr + r * stride_o + d, o.to(o_ptr.dtype.element_ty), mask=d < head_dim)
    tl.store(lse_ptr + r, tl.where(denom > 0, m + tl.log(denom_safe), float("-inf")))


def merge_splits(o_part: torch.Tensor, lse_part: torch.Tensor, out: torch.Tensor, lse_out: torch.Tensor) -> None:
    """Merge per-split partial states of disjoint KV sets into one state per row, in place.

    o_part: ``[rows, num_splits, head_dim]`` float32; lse_part: ``[rows, num_splits]`` float32;
    out: ``[rows, head_dim]`` (unit last stride); lse_out: ``[rows]`` contiguous float32.
    """
    rows, num_splits, head_dim = o_part.shape
    if lse_part.shape != (rows, num_splits) or out.shape != (rows, head_dim) or lse_out.shape != (rows,):
        raise ValueError(
            f"merge_splits: o_part {tuple(o_part.shape)}, lse_part {tuple(lse_part.shape)}, out "
            f"{tuple(out.shape)}, lse_out {tuple(lse_out.shape)} do not fit [rows, splits, head_dim]"
        )
    _merge_splits_kernel[(rows,)](
        o_part, lse_part, out, lse_out,
        num_splits, head_dim,
        o_part.stride(0), o_part.stride(1), lse_part.stride(0), out.stride(0),
        BLOCK_S=next_pow2(num_splits), BLOCK_D=next_pow2(head_dim),
    )
