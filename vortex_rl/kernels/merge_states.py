"""Attention-state merge: combine partial attention results over disjoint KV sets.

An attention state over a KV set I is ``(o(I), lse(I))`` with ``lse(I) = log sum_{i in I} exp(s_i)``
(natural log) and ``o(I) = sum_i softmax(s)_i v_i``. For disjoint I and J::

    lse(I u J) = log(exp(lse_I) + exp(lse_J))
    o(I u J)   = o_I * exp(lse_I - lse(I u J)) + o_J * exp(lse_J - lse(I u J))

The merge is commutative and associative; an empty set is ``(0, -inf)``, its identity.
"""

from __future__ import annotations

import torch


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
    if o_a.shape != o_b.shape or lse_a.shape != lse_b.shape or o_a.shape[:-1] != lse_a.shape:
        raise ValueError(
            f"merge_states: shapes do not match: o_a {tuple(o_a.shape)}, lse_a {tuple(lse_a.shape)}, "
            f"o_b {tuple(o_b.shape)}, lse_b {tuple(lse_b.shape)}; expected o [..., head_dim] and lse [...]"
        )
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
