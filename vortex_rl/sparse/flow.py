"""`vFlow`: the three entry points of a sparse-attention algorithm, and the flow registry `FLOWS`."""

from __future__ import annotations

from typing import Callable

import torch

from vortex_rl.registry import Registry
from vortex_rl.sparse.context import FlowContext

RESERVED_CACHE_NAMES = ("k", "v")


class vFlow:  # noqa: N801 (name from the programming model)
    """A sparse-attention algorithm, written with format-aware ops.

    Subclasses implement:

    - ``create_cache(page_size, head_dim) -> {name: (rows, head_dim)}``: extra per-page state the
      framework allocates next to K/V as ``[num_pages, kv_heads, rows, head_dim]``. ``k`` and ``v`` are
      reserved (the framework provides them).
    - ``forward_cache(cache, loc, ctx)``: update that state after tokens were written at slots ``loc``
      (``[num_tokens]``, ``page * page_size + offset``). ``cache`` maps names (``k``, ``v`` and the
      extra state) to PAGED vTensors.
    - ``forward_indexer(q, o, cache, ctx)``: choose pages. ``q`` is BATCHED
      ``[batch, kv_heads, group, head_dim]`` (the query heads of each KV head together); write logical
      page ids (positions in the request's page table) into ``o`` ``[batch, kv_heads, ctx.topk_max]``,
      ``-1`` for none. Sink and local pages are added by the framework; choose among the others.

    Set ``is_dense = True`` for a flow that attends to everything (no selection at all).
    """

    is_dense: bool = False
    name: str = ""

    def create_cache(self, page_size: int, head_dim: int) -> dict[str, tuple[int, int]]:
        return {}

    def forward_cache(self, cache: dict[str, torch.Tensor], loc: torch.Tensor, ctx) -> None:
        return None

    def forward_indexer(self, q: torch.Tensor, o: torch.Tensor, cache: dict[str, torch.Tensor], ctx: FlowContext) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement forward_indexer")

    def cache_shapes(self, page_size: int, head_dim: int) -> dict[str, tuple[int, int]]:
        """``create_cache`` checked: names not reserved, shapes ``(rows, head_dim)`` of positive ints."""
        shapes = self.create_cache(page_size, head_dim) or {}
        if not isinstance(shapes, dict):
            raise TypeError(f"{type(self).__name__}.create_cache must return a dict, got {type(shapes).__name__}")
        for name, shape in shapes.items():
            if name in RESERVED_CACHE_NAMES:
                raise ValueError(
                    f"{type(self).__name__}.create_cache: the name {name!r} is reserved for the KV cache "
                    f"({', '.join(RESERVED_CACHE_NAMES)}); choose another name"
                )
            if (
                not isinstance(shape, (tuple, list))
                or len(shape) != 2
                or not all(isinstance(s, int) and s > 0 for s in shape)
            ):
                raise ValueError(
                    f"{type(self).__name__}.create_cache: shape of {name!r} must be (rows, head_dim) with "
                    f"positive ints, got {shape!r}"
                )
        return {name: tuple(shape) for name, shape in shapes.items()}


def _check_is_flow(name: str, cls: object) -> None:
    if not (isinstance(cls, type) and issubclass(cls, vFlow)):
        raise TypeError(f"@register({name!r}) decorates vFlow subclasses, got {cls!r}")


FLOWS: Registry[type[vFlow]] = Registry("flow", check=_check_is_flow)


def register(name: str) -> Callable[[type[vFlow]], type[vFlow]]:
    """Class decorator: make a ``vFlow`` subclass available as ``get_flow(name)``.

    Anything but a ``vFlow`` subclass raises ``TypeError``; another class under a taken name raises
    ``RegistryError``.
    """
    add = FLOWS.register(name)

    def decorate(cls: type[vFlow]) -> type[vFlow]:
        add(cls)
        cls.name = name
        return cls

    return decorate


def list_flows() -> list[str]:
    """Registered flow names, sorted."""
    return FLOWS.names()


def get_flow(name: str | vFlow, **kwargs) -> vFlow:
    """An instance of the flow registered as ``name`` (a ``vFlow`` instance passes through); an unknown
    name raises ``RegistryError`` listing the registered flows."""
    if isinstance(name, vFlow):
        return name
    return FLOWS.get(name)(**kwargs)
