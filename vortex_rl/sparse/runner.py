"""Running a flow inside an engine: state allocation, cache updates, page selection, attention.

An engine builds one :class:`FlowRunner` per model, calls :meth:`FlowRunner.plan` once per decode step
and :meth:`FlowRunner.decode` in every layer. :func:`run_flow` does all of it for one paged cache.
"""

from __future__ import annotations

import dataclasses

import torch

from vortex_rl.kernels import check_decode_inputs
from vortex_rl.kernels.paged_decode import all_pages
from vortex_rl.sparse.backend import KernelSet, fused_kernels, resolve_backend
from vortex_rl.sparse.config import SparseConfig
from vortex_rl.sparse.context import CacheContext, FlowContext, schedule_tensors
from vortex_rl.sparse.flow import get_flow, vFlow
from vortex_rl.sparse.vtensor import BATCHED, PAGED, vTensor


def _paged(cache: dict[str, torch.Tensor]) -> dict[str, vTensor]:
    return {name: vTensor(t, PAGED) for name, t in cache.items()}


def assemble_pages(chosen: torch.Tensor, ctx: FlowContext) -> torch.Tensor:
    """Sink pages + the indexer's choice + local pages, as one page list per (request, KV head).

    chosen: ``[batch, kv_heads, topk_max]`` logical ids from ``forward_indexer``. Entries that are not
    candidates, or beyond a request's own budget, are dropped; a request whose pages fit its budget gets
    all of them whatever the indexer chose. Returns ``[batch, kv_heads, max_budget]`` int32, valid ids
    first and ``-1`` padding after.
    """
    device = chosen.device
    batch, kv_heads = chosen.shape[:2]
    n = ctx.num_pages.long()[:, None, None]
    k_req = ctx.topk_per_request.long()[:, None, None]
    sink_n, local_n, topk_max = ctx.sink_pages, ctx.local_pages, ctx.topk_max

    chosen = chosen.long()
    rank = torch.arange(topk_max, device=device)[None, None, :]
    is_candidate = (chosen >= sink_n) & (chosen < n - local_n) & (rank < k_req)
    chosen = torch.where(is_candidate, chosen, torch.full_like(chosen, -1))
    # Everything fits: attend to all pages, whatever the indexer chose.
    middle_all = sink_n + rank
    middle_all = torch.where(middle_all < n - local_n, middle_all, torch.full_like(middle_all, -1))
    fits = n <= ctx.budgets.long()[:, None, None]
    chosen = torch.where(fits, middle_all.expand_as(chosen), chosen)

    sink = torch.arange(sink_n, device=device)[None, None, :].expand(batch, kv_heads, sink_n)
    sink = torch.where(sink < n, sink, torch.full_like(sink, -1))
    local = n - local_n + torch.arange(local_n, device=device)[None, None, :]
    local = torch.where(local >= max(sink_n, 0), local, torch.full_like(local, -1)).expand(batch, kv_heads, local_n)
    pages = torch.cat([sink, chosen, local], dim=-1)
    order = torch.sort((pages < 0).to(torch.int8), dim=-1, stable=True).indices
    return torch.gather(pages, -1, order).to(torch.int32)


class FlowRunner:
    """A flow bound to a model's attention geometry and a ``SparseConfig``.

    Parameters
    ----------
    flow: a registered flow name or a ``vFlow`` instance.
    config: the ``SparseConfig`` (page size, budgets, dense layers).
    num_q_heads, num_kv_heads, head_dim: attention geometry.
    kernel_backend: ``"auto"``, ``"triton"`` or ``"torch"``.
    """

    def __init__(
        self,
        flow: str | vFlow,
        config: SparseConfig,
        *,
        num_q_heads: int,
        num_kv_heads: int,
        head_dim: int,
        kernel_backend: str = "auto",
    ):
        if num_q_heads % num_kv_heads:
            raise ValueError(f"num_q_heads={num_q_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        self.flow = get_flow(flow)
        self.config = config
        self.num_q_heads, self.num_kv_heads, self.head_dim = num_q_heads, num_kv_heads, head_dim
        self.kernel_backend = kernel_backend
        resolve_backend(kernel_backend, "cpu")  # validate the name early
        self.state_shapes = self.flow.cache_shapes(config.page_size, head_dim)
        self.cache_ctx = CacheContext(config.page_size, num_kv_heads, head_dim, kernel_backend)
        self._fused_by_device: dict[str, dict] = {}
        self._schedules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # persistent, refilled in place

    @property
    def is_dense(self) -> bool:
        return self.flow.is_dense

    def allocate_state(self, num_pages: int, *, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        """Zeroed extra per-page state of one layer: ``{name: [num_pages, kv_heads, rows, head_dim]}``."""
        return {
            name: torch.zeros(num_pages, self.num_kv_heads, *shape, dtype=dtype, device=device)
            for name, shape in self.state_shapes.items()
        }

    def plan(self, page_table: torch.Tensor, seq_lens: torch.Tensor) -> FlowContext:
        """Per-step metadata shared by every layer (device ops only)."""
        ctx = FlowContext.plan(
            page_table,
            seq_lens,
            self.config,
            num_q_heads=self.num_q_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            kernel_backend=self.kernel_backend,
            schedule=self._schedule(seq_lens.device) if self.config.budget_schedule else None,
        )
        if getattr(self._kernels(seq_lens), "step_scratch", False):
            ctx.kernel_scratch = {}
        return ctx

    def _schedule(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._schedules:
            self._schedules[key] = schedule_tensors(self.config, device)
        return self._schedules[key]

    def set_budget_schedule(self, budget_schedule: tuple[tuple[int, int], ...], budget_pages: int) -> None:
        """Take a new budget schedule between decode steps, without rebuilding anything.

        The schedule tensors are refilled in place, so decode graphs captured earlier read the new
        budgets; hence the number of steps must stay that of the current schedule, and no budget may
        exceed ``config.max_budget`` (the page-list width everything was sized for; set
        ``SparseConfig.max_budget_pages`` to leave room).
        """
        if not self.config.budget_schedule or not budget_schedule:
            # Without a schedule the budget is a constant of the step (captured graphs hold it): nothing to refill.
            raise ValueError(f"set_budget_schedule({budget_schedule!r}, {budget_pages}) needs schedules on both sides; "
                             f"this flow runner was built with budget_schedule={self.config.budget_schedule!r} "
                             "(build the engine's SparseConfig with a budget_schedule to swap budgets live)")
        new = dataclasses.replace(self.config, budget_schedule=budget_schedule, budget_pages=budget_pages,
                                  max_budget_pages=self.config.max_budget)
        steps, old_steps = len(new.budget_schedule), len(self.config.budget_schedule or ())
        if steps != old_steps:
            raise ValueError(f"budget_schedule has {steps} steps; this flow runner was built with {old_steps} "
                             "(give the engine's SparseConfig a schedule with as many steps to start from)")
        if new.max_budget != self.config.max_budget:
            raise ValueError(f"budget schedule {budget_schedule} / budget_pages={budget_pages} exceeds max_budget="
                             f"{self.config.max_budget} the engine was sized for; raise sparse.max_budget_pages")
        self.config = new
        with torch.inference_mode():  # the buffers were made under the engine's inference mode
            for device, (bounds, budgets) in self._schedules.items():
                new_bounds, new_budgets = schedule_tensors(new, device)
                bounds.copy_(new_bounds)
                budgets.copy_(new_budgets)

    def _kernels(self, t: torch.Tensor) -> KernelSet:
        return resolve_backend(self.kernel_backend, t.device)

    def _fused(self, t: torch.Tensor) -> dict:
        """The flow's fused kernels on ``t``'s backend (``{}``: run the flow's vFlow ops)."""
        key = t.device.type
        if key not in self._fused_by_device:
            self._fused_by_device[key] = fused_kernels(self.flow.name, self._kernels(t))
        return self._fused_by_device[key]

    def write(self, k: torch.Tensor, v: torch.Tensor, cache: dict[str, torch.Tensor], loc: torch.Tensor,
              ctx: FlowContext | None = None) -> None:
        """Write new tokens (``k, v: [num_tokens, kv_heads, head_dim]``) at ``loc`` and update the state
        (one launch when the flow declares a fused ``append`` kernel). ``ctx``: the decode step's context,
        whose kernel scratch the kernels may use (``loc`` must then be the same tensor in every layer)."""
        extra = ctx.kernel_kwargs() if ctx is not None else {}
        append = self._fused(k).get("append")
        if append is not None:
            append(k, v, cache, loc, **extra)
            return
        self._kernels(k).write_kv(k, v, cache["k"], cache["v"], loc, **extra)
        self.update_state(cache, loc)

    def update_state(self, cache: dict[str, torch.Tensor], loc: torch.Tensor) -> None:
        """Run the flow's ``forward_cache`` for tokens already written at ``loc``."""
        if self.state_shapes:
            self.flow.forward_cache(_paged(cache), loc, self.cache_ctx)

    def select(self, q: torch.Tensor, cache: dict[str, torch.Tensor], ctx: FlowContext) -> torch.Tensor:
        """Physical page lists ``[batch, kv_heads, max_budget]`` int32 (valid first, ``-1`` after): the
        flow's fused indexer, or its ``forward_indexer`` plus sink and local pages (``assemble_pages``)."""
        indexer = self._fused(q).get("indexer")
        if indexer is not None:
            return indexer(q, cache, ctx)
        batch = q.shape[0]
        chosen = torch.full((batch, self.num_kv_heads, ctx.topk_max), -1, dtype=torch.int32, device=q.device)
        if ctx.topk_max > 0:
            q_grouped = vTensor(q.view(batch, self.num_kv_heads, ctx.group_size, self.head_dim), BATCHED)
            self.flow.forward_indexer(q_grouped, vTensor(chosen, BATCHED), _paged(cache), ctx)
        return ctx.physical_pages(assemble_pages(chosen, ctx))

    def decode(
        self, q: torch.Tensor, cache: dict[str, torch.Tensor], ctx: FlowContext, *, layer: int | None = None,
        sm_scale: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of ``q: [batch, q_heads, head_dim]`` for one layer: ``(o, lse)``."""
        kern = self._kernels(q)
        if self.is_dense or (layer is not None and layer in self.config.dense_layers):
            return kern.dense_decode(q, cache["k"], cache["v"], ctx.page_table, ctx.seq_lens, sm_scale=sm_scale,
                                     **ctx.kernel_kwargs())
        pages = self.select(q, cache, ctx)
        # A request's list holds at most its budget of pages, first: the kernels stop there, so room for
        # a larger budget (max_budget) costs no work and changes no rounding.
        return kern.sparse_decode(q, cache["k"], cache["v"], ctx.page_table, ctx.seq_lens, pages, sm_scale=sm_scale,
                                  list_lens=ctx.budgets, **ctx.kernel_kwargs())


def _all_slots(page_table: torch.Tensor, seq_lens: torch.Tensor, page_size: int) -> torch.Tensor:
    """Slots of every cached token, request by request in order (host sync: convenience API only)."""
    batch, max_pages = page_table.shape
    pos = torch.arange(max_pages * page_size, device=page_table.device)
    slots = page_table.long()[:, pos // page_size] * page_size + pos % page_size
    return slots[pos[None, :] < seq_lens.long()[:, None]]


def run_flow(
    flow: str | vFlow,
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seq_lens: torch.Tensor,
    config: SparseConfig,
    *,
    kernel_backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a flow end to end on a filled paged cache: its state, page selection, attention.

    Parameters
    ----------
    flow: registered name or ``vFlow`` instance.
    q: ``[batch, q_heads, head_dim]``.
    k_cache, v_cache: ``[num_pages, kv_heads, page_size, head_dim]``.
    page_table: ``[batch, max_pages]`` int, physical page ids in order, ``-1`` padding.
    seq_lens: ``[batch]`` int, tokens per request.
    config: ``SparseConfig``; its ``page_size`` must match the cache.

    Returns
    -------
    ``(o, lse, pages)``: ``o [batch, q_heads, head_dim]``, ``lse [batch, q_heads]`` (float32, natural
    log), ``pages [batch, kv_heads, budget]`` int32 physical page ids attended (``-1`` padding; for a
    dense flow ``budget = max_pages``).
    """
    check_decode_inputs(q, k_cache, v_cache, page_table, seq_lens)
    if k_cache.shape[2] != config.page_size:
        raise ValueError(f"cache page_size {k_cache.shape[2]} != config.page_size {config.page_size}")
    runner = FlowRunner(
        flow, config, num_q_heads=q.shape[1], num_kv_heads=k_cache.shape[1], head_dim=q.shape[2],
        kernel_backend=kernel_backend,
    )
    cache = {"k": k_cache, "v": v_cache}
    cache.update(runner.allocate_state(k_cache.shape[0], dtype=k_cache.dtype, device=k_cache.device))
    runner.update_state(cache, _all_slots(page_table, seq_lens, config.page_size))
    ctx = runner.plan(page_table, seq_lens)
    if runner.is_dense:
        pages = all_pages(ctx.page_table, ctx.seq_lens, runner.num_kv_heads, config.page_size)
    else:
        pages = runner.select(q, cache, ctx)
    o, lse = runner._kernels(q).sparse_decode(q, k_cache, v_cache, ctx.page_table, ctx.seq_lens, pages)
    return o, lse, pages
