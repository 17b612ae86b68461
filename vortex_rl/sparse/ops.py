"""Format-aware ops: the building blocks of a flow's ``forward_cache`` and ``forward_indexer``.

Each op is a small object (``GeMV()``, ``topK()``, ``Mean(dim=...)``) whose call dispatches on the
``storage_format`` of its tensor arguments to an implementation registered with ``@Op.impl(formats)``.
Formats with no implementation raise a ``TypeError`` listing the accepted ones. Implementations are
plain torch; page pooling goes through the kernel backend chosen in ``vortex_rl.sparse.backend``.
"""

from __future__ import annotations

from typing import Callable

import torch

from vortex_rl.sparse.backend import kernel_impls
from vortex_rl.sparse.context import FlowContext
from vortex_rl.sparse.vtensor import BATCHED, PAGED, RAGGED, StorageFormat, as_plain, storage_format_of, vTensor


class Op:
    """Base class: subclasses register implementations per tuple of input formats."""

    _impls: dict[tuple[StorageFormat, ...], Callable]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._impls = {}

    @classmethod
    def impl(cls, *formats: StorageFormat):
        def decorate(fn: Callable) -> Callable:
            cls._impls[tuple(formats)] = fn
            return fn

        return decorate

    def __call__(self, *tensors, **kwargs):
        formats = tuple(storage_format_of(t) for t in tensors if isinstance(t, torch.Tensor))
        fn = self._impls.get(formats)
        if fn is None:
            given = ", ".join(f.value if f else "plain tensor" for f in formats) or "nothing"
            accepted = "; ".join("(" + ", ".join(f.value for f in k) + ")" for k in self._impls)
            raise TypeError(
                f"{type(self).__name__} has no implementation for inputs ({given}); accepted: {accepted}. "
                "Wrap plain tensors with vTensor(t, storage_format)."
            )
        return fn(self, *tensors, **kwargs)


def _need_ctx(op: Op, ctx) -> FlowContext:
    if not isinstance(ctx, FlowContext):
        raise TypeError(f"{type(op).__name__} needs ctx=FlowContext, got {type(ctx).__name__}")
    return ctx


def _gather_pages(cache: torch.Tensor, ctx: FlowContext) -> torch.Tensor:
    """Per-request view of a PAGED tensor: ``[batch, kv_heads, max_pages, rows, dim]`` (padding -> page 0)."""
    phys = ctx.page_table.long().clamp(min=0)  # [b, max_pages]
    return as_plain(cache)[phys].transpose(1, 2)


# ---------------------------------------------------------------------------------------------- GeMV/GeMM
class GeMV(Op):
    """Score a query against a one-row per-page state: ``x @ state[page]`` for every page of a request.

    x: BATCHED ``[batch, kv_heads, d]`` or ``[batch, kv_heads, r, d]``; state: PAGED
    ``[num_pages, kv_heads, 1, d]``. Returns RAGGED ``[batch, kv_heads, (r,) max_pages]`` float32.
    """


@GeMV.impl(BATCHED, PAGED)
def _gemv_batched_paged(op, x, state, *, ctx):
    ctx = _need_ctx(op, ctx)
    if state.dim() != 4 or state.shape[2] != 1:
        raise ValueError(f"GeMV needs a PAGED state [num_pages, kv_heads, 1, d], got {tuple(state.shape)}")
    pages = _gather_pages(state, ctx)[:, :, :, 0].float()  # [b, kv, max_pages, d]
    xp = as_plain(x).float()
    if xp.dim() == 3:
        out = torch.einsum("bhd,bhpd->bhp", xp, pages)
    elif xp.dim() == 4:
        out = torch.einsum("bhrd,bhpd->bhrp", xp, pages)
    else:
        raise ValueError(f"GeMV x must be [batch, kv_heads, (r,) d], got {tuple(x.shape)}")
    return vTensor(out, RAGGED)


class GeMM(Op):
    """Score queries against every row of a per-page tensor (e.g. all keys of a page).

    x: BATCHED ``[batch, kv_heads, r, d]``; paged: PAGED ``[num_pages, kv_heads, rows, d]``. Returns RAGGED
    ``[batch, kv_heads, r, max_pages, rows]`` float32.
    """


@GeMM.impl(BATCHED, PAGED)
def _gemm_batched_paged(op, x, paged, *, ctx):
    ctx = _need_ctx(op, ctx)
    if as_plain(x).dim() != 4:
        raise ValueError(f"GeMM x must be [batch, kv_heads, r, d], got {tuple(x.shape)}")
    pages = _gather_pages(paged, ctx).float()  # [b, kv, max_pages, rows, d]
    out = torch.einsum("bhrd,bhpnd->bhrpn", as_plain(x).float(), pages)
    return vTensor(out, RAGGED)


# ---------------------------------------------------------------------------------------------------- topK
class topK(Op):  # noqa: N801 (name from the programming model)
    """Write into ``o`` the logical ids of the best-scoring candidate pages of each (request, KV head).

    score: RAGGED ``[batch, kv_heads, max_pages]``; o: ``[batch, kv_heads, topk_max]`` int32 (written in
    place). Candidates exclude sink, local and non-existent pages; a request gets at most its own
    ``topk_per_request`` pages, the rest of its row is ``-1``.
    """


@topK.impl(RAGGED, BATCHED)
@topK.impl(RAGGED, None)
def _topk_ragged(op, score, o, *, ctx):
    ctx = _need_ctx(op, ctx)
    s = as_plain(score).float()
    o_plain = as_plain(o)
    expected = (ctx.batch, ctx.num_kv_heads, ctx.topk_max)
    if s.shape != (ctx.batch, ctx.num_kv_heads, ctx.max_pages) or tuple(o_plain.shape) != expected:
        raise ValueError(
            f"topK: score must be [batch, kv_heads, max_pages]={(ctx.batch, ctx.num_kv_heads, ctx.max_pages)} "
            f"and o {expected}; got {tuple(s.shape)} and {tuple(o_plain.shape)}"
        )
    k = min(ctx.topk_max, ctx.max_pages)
    if k == 0:
        o_plain.fill_(-1)
        return o
    candidate = ctx.candidate_pages()[:, None, :].expand_as(s)
    masked = torch.where(candidate, s, torch.full_like(s, float("-inf")))
    _, idx = torch.topk(masked, k, dim=-1)
    chosen_ok = torch.gather(candidate, -1, idx)
    rank = torch.arange(k, device=s.device)[None, None, :]
    chosen_ok &= rank < ctx.topk_per_request.long()[:, None, None]
    ids = torch.where(chosen_ok, idx, torch.full_like(idx, -1)).to(o_plain.dtype)
    o_plain.fill_(-1)
    o_plain[..., :k] = ids
    return o


# ----------------------------------------------------------------------------------------------- reductions
class _Reduction(Op):
    pool: str = ""

    def __init__(self, dim: int | None = None, keepdim: bool = False):
        self.dim = dim
        self.keepdim = keepdim

    def _torch(self, x: torch.Tensor) -> torch.Tensor:
        fn = {"mean": torch.mean, "sum": torch.sum, "max": torch.amax, "min": torch.amin}[self.pool]
        if self.dim is None:
            return fn(x)
        return fn(x, dim=self.dim, keepdim=self.keepdim)


class Mean(_Reduction):
    """Mean along ``dim`` (BATCHED, RAGGED); on PAGED ``(x, out)`` with ``loc``: per-page mean of the
    valid tokens of every page written at ``loc`` into ``out`` ``[num_pages, kv_heads, 1, d]``."""

    pool = "mean"


class Max(_Reduction):
    """Max along ``dim``; on PAGED ``(x, out)`` with ``loc``: per-page max over valid tokens."""

    pool = "max"


class Min(_Reduction):
    """Min along ``dim``; on PAGED ``(x, out)`` with ``loc``: per-page min over valid tokens."""

    pool = "min"


class Sum(_Reduction):
    """Sum along ``dim``; on PAGED ``(x, out)`` with ``loc``: per-page sum over valid tokens."""

    pool = "sum"


def _ragged_page_axis(op: _Reduction, x: torch.Tensor) -> bool:
    return op.dim is not None and op.dim % x.dim() == x.dim() - 1


for _cls in (Mean, Max, Min, Sum):

    @_cls.impl(BATCHED)
    def _reduce_batched(op, x, **_):
        return vTensor(op._torch(as_plain(x)), BATCHED)

    @_cls.impl(RAGGED)
    def _reduce_ragged(op, x, *, ctx=None):
        xp = as_plain(x)
        if not _ragged_page_axis(op, xp):
            return vTensor(op._torch(xp), RAGGED)
        # Reducing across pages: ignore the padding past each request's last page.
        ctx = _need_ctx(op, ctx)
        valid = ctx.valid_pages().view(ctx.batch, *([1] * (xp.dim() - 2)), ctx.max_pages)
        fill = {"mean": 0.0, "sum": 0.0, "max": float("-inf"), "min": float("inf")}[op.pool]
        masked = torch.where(valid, xp, torch.full_like(xp, fill))
        if op.pool == "mean":
            count = ctx.num_pages.view(ctx.batch, *([1] * (xp.dim() - 1))).clamp(min=1).to(xp.dtype)
            out = masked.sum(dim=-1, keepdim=True) / count
            return vTensor(out if op.keepdim else out.squeeze(-1), BATCHED)
        return vTensor(op._torch(masked), BATCHED)

    @_cls.impl(PAGED, PAGED)
    def _reduce_paged(op, x, out, *, loc, ctx=None):
        backend = getattr(ctx, "kernel_backend", "auto")
        kernel_impls(as_plain(x), backend).pool_pages(as_plain(x), as_plain(out), loc, pool=op.pool)
        return out


# ----------------------------------------------------------------------------------------------- softmax
class Softmax(Op):
    """Softmax along ``dim`` (default: pages). On RAGGED over pages, padding pages get probability 0."""

    def __init__(self, dim: int = -1):
        self.dim = dim


@Softmax.impl(BATCHED)
def _softmax_batched(op, x, **_):
    return vTensor(torch.softmax(as_plain(x).float(), dim=op.dim), BATCHED)


@Softmax.impl(RAGGED)
def _softmax_ragged(op, x, *, ctx=None):
    xp = as_plain(x).float()
    if op.dim % xp.dim() != xp.dim() - 1:
        return vTensor(torch.softmax(xp, dim=op.dim), RAGGED)
    ctx = _need_ctx(op, ctx)
    valid = ctx.valid_pages().view(ctx.batch, *([1] * (xp.dim() - 2)), ctx.max_pages)
    return vTensor(torch.softmax(torch.where(valid, xp, torch.full_like(xp, float("-inf"))), dim=-1), RAGGED)


# --------------------------------------------------------------------------------------------- elementwise
class _Binary(Op):
    fn: Callable = None

    def __call__(self, a, b, **kwargs):
        # Python scalars take the other operand's format.
        if not isinstance(a, torch.Tensor):
            return self._scalar(b, a, swap=True)
        if not isinstance(b, torch.Tensor):
            return self._scalar(a, b, swap=False)
        return super().__call__(a, b, **kwargs)

    def _scalar(self, t, scalar, *, swap):
        fmt = storage_format_of(t)
        if fmt is None:
            raise TypeError(f"{type(self).__name__} needs a vTensor operand, got a plain tensor")
        tp = as_plain(t)
        s = torch.as_tensor(scalar, dtype=tp.dtype, device=tp.device)
        return vTensor(type(self).fn(s, tp) if swap else type(self).fn(tp, s), fmt)


class Multiply(_Binary):
    """Elementwise product; BATCHED operands broadcast over RAGGED's page axis."""

    fn = staticmethod(torch.mul)


class Add(_Binary):
    """Elementwise sum; BATCHED operands broadcast over RAGGED's page axis."""

    fn = staticmethod(torch.add)


class Maximum(_Binary):
    """Elementwise maximum; BATCHED operands broadcast over RAGGED's page axis."""

    fn = staticmethod(torch.maximum)


for _cls in (Multiply, Add, Maximum):
    for _fmt in (BATCHED, RAGGED, PAGED):

        @_cls.impl(_fmt, _fmt)
        def _same(op, a, b, _fmt=_fmt, **_):
            return vTensor(type(op).fn(as_plain(a), as_plain(b)), _fmt)

    @_cls.impl(RAGGED, BATCHED)
    def _ragged_batched(op, a, b, **_):
        return vTensor(type(op).fn(as_plain(a), as_plain(b).unsqueeze(-1)), RAGGED)

    @_cls.impl(BATCHED, RAGGED)
    def _batched_ragged(op, a, b, **_):
        return vTensor(type(op).fn(as_plain(a).unsqueeze(-1), as_plain(b)), RAGGED)


__all__ = ["Op", "GeMV", "GeMM", "topK", "Mean", "Max", "Min", "Sum", "Softmax", "Multiply", "Add", "Maximum"]
