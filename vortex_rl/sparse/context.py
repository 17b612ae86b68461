"""`FlowContext`: the per-step metadata every layer's flow reads (planned once per decode step)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from vortex_rl.sparse.config import SparseConfig


def schedule_tensors(config: SparseConfig, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bounds [steps] int32, budgets [steps + 1] int32)`` of ``config.budget_schedule`` (the last budget
    is ``budget_pages``, for contexts past the last step)."""
    steps = config.budget_schedule or ()
    bounds = torch.tensor([up_to for up_to, _ in steps], dtype=torch.int32, device=device)
    budgets = torch.tensor([b for _, b in steps] + [config.budget_pages], dtype=torch.int32, device=device)
    return bounds, budgets


_cached_schedule_tensors = lru_cache(maxsize=64)(schedule_tensors)


def budgets_for(seq_lens: torch.Tensor, config: SparseConfig,
                schedule: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Per-request budget under ``config.budget_schedule``: ``[batch]`` int32, no host sync.

    ``schedule``: the ``schedule_tensors`` to read instead of ``config``'s (persistent buffers a running
    engine refills in place, so captured CUDA graphs see a new schedule).
    """
    if schedule is None:
        if not config.budget_schedule:
            return torch.full_like(seq_lens, config.budget_pages, dtype=torch.int32)
        schedule = _cached_schedule_tensors(config, str(seq_lens.device))
    bounds, budgets = schedule
    step = torch.bucketize(seq_lens.to(torch.int32), bounds, right=False)
    return budgets[step]


@dataclass
class FlowContext:
    """What a flow may read about the batch.

    Attributes
    ----------
    page_table: ``[batch, max_pages]`` int32, physical page ids in logical order, -1 padding.
    seq_lens: ``[batch]`` int32, tokens cached per request (the current query's token included).
    num_pages: ``[batch]`` int32, ``ceil(seq_lens / page_size)``.
    budgets: ``[batch]`` int32, pages each request may attend to (from the budget schedule).
    page_size, num_q_heads, num_kv_heads, head_dim: model and cache geometry.
    sink_pages, local_pages: pages the framework always keeps (``SparseConfig``).
    max_budget: width of every page list (largest budget).
    kernel_backend: ``"auto"``, ``"triton"``, ``"cpu"`` or ``"torch"`` (``vortex_rl.sparse.backend``).
    kernel_scratch: a dict that lives for this step, in which kernels that take one (the CPU kernels,
        ``KernelSet.step_scratch``) keep what they derive from the step's tensors, once for all layers;
        ``None`` for the other backends (``FlowRunner.plan`` sets it).
    """

    page_table: torch.Tensor
    seq_lens: torch.Tensor
    num_pages: torch.Tensor
    budgets: torch.Tensor
    page_size: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    sink_pages: int
    local_pages: int
    max_budget: int
    kernel_backend: str = "auto"
    kernel_scratch: dict | None = None

    def kernel_kwargs(self) -> dict:
        """Extra keyword arguments for this step's kernels: ``{"scratch": ...}`` where they take one."""
        return {} if self.kernel_scratch is None else {"scratch": self.kernel_scratch}

    @classmethod
    def plan(
        cls,
        page_table: torch.Tensor,
        seq_lens: torch.Tensor,
        config: SparseConfig,
        *,
        num_q_heads: int,
        num_kv_heads: int,
        head_dim: int,
        kernel_backend: str = "auto",
        schedule: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> "FlowContext":
        """Derive the per-step tensors with device ops only (safe inside CUDA-graph capture); ``schedule``
        as for ``budgets_for``."""
        if page_table.dim() != 2 or seq_lens.dim() != 1 or page_table.shape[0] != seq_lens.shape[0]:
            raise ValueError(
                f"page_table must be [batch, max_pages] and seq_lens [batch]; got {tuple(page_table.shape)} "
                f"and {tuple(seq_lens.shape)}"
            )
        if num_q_heads % num_kv_heads:
            raise ValueError(f"num_q_heads={num_q_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        seq_lens = seq_lens.to(torch.int32)
        return cls(
            page_table=page_table.to(torch.int32),
            seq_lens=seq_lens,
            num_pages=(seq_lens + config.page_size - 1) // config.page_size,
            budgets=budgets_for(seq_lens, config, schedule),
            page_size=config.page_size,
            num_q_heads=num_q_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            sink_pages=config.sink_pages,
            local_pages=config.local_pages,
            max_budget=config.max_budget,
            kernel_backend=kernel_backend,
        )

    @property
    def batch(self) -> int:
        return self.page_table.shape[0]

    @property
    def max_pages(self) -> int:
        return self.page_table.shape[1]

    @property
    def group_size(self) -> int:
        return self.num_q_heads // self.num_kv_heads

    @property
    def topk_max(self) -> int:
        """Width of the indexer's output ``o``: the largest budget minus sink and local pages."""
        return self.max_budget - self.sink_pages - self.local_pages

    @property
    def topk_per_request(self) -> torch.Tensor:
        """``[batch]`` int32: pages the indexer may choose for each request."""
        return self.budgets - self.sink_pages - self.local_pages

    def valid_pages(self) -> torch.Tensor:
        """``[batch, max_pages]`` bool: logical pages that exist."""
        ids = torch.arange(self.max_pages, device=self.page_table.device, dtype=torch.int32)
        return ids[None, :] < self.num_pages[:, None]

    def candidate_pages(self) -> torch.Tensor:
        """``[batch, max_pages]`` bool: pages the indexer chooses among (neither sink nor local)."""
        ids = torch.arange(self.max_pages, device=self.page_table.device, dtype=torch.int32)[None, :]
        n = self.num_pages[:, None]
        return (ids >= self.sink_pages) & (ids < n - self.local_pages)

    def physical_pages(self, logical: torch.Tensor) -> torch.Tensor:
        """Map logical page ids ``[batch, ...]`` to physical ids (``-1`` stays ``-1``)."""
        batch = logical.shape[0]
        flat = logical.reshape(batch, -1).long()
        phys = torch.gather(self.page_table.long(), 1, flat.clamp(min=0))
        return torch.where(flat >= 0, phys, torch.full_like(phys, -1)).view(logical.shape).to(torch.int32)


@dataclass
class CacheContext:
    """What ``forward_cache`` may read: cache geometry and the kernel backend."""

    page_size: int
    num_kv_heads: int
    head_dim: int
    kernel_backend: str = "auto"
