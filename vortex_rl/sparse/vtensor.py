"""`vTensor`: a torch tensor that knows how its data is laid out across requests.

- ``PAGED``: per-page storage shared by all requests, ``[num_pages, kv_heads, rows, head_dim]`` (the KV
  cache and the flow's extra state); rows of a request are found through the page table.
- ``RAGGED``: one value per (request, page), padded to ``max_pages`` along the last page axis,
  ``[batch, kv_heads, ..., max_pages]``; entries past a request's last page are undefined and masked by
  the ops that read them (``topK``, ``Softmax``).
- ``BATCHED``: one row per request, ``[batch, ...]`` (queries and per-request values).

Ordinary torch functions on vTensors return vTensors of the same format when all vTensor inputs agree,
so ``q.mean(dim=2)`` stays ``BATCHED``; the format-aware ops in ``vortex_rl.sparse.ops`` dispatch on it.
"""

from __future__ import annotations

import enum

import torch


class StorageFormat(str, enum.Enum):
    PAGED = "paged"
    RAGGED = "ragged"
    BATCHED = "batched"


PAGED, RAGGED, BATCHED = StorageFormat.PAGED, StorageFormat.RAGGED, StorageFormat.BATCHED


def _formats_in(obj, found: set) -> None:
    if isinstance(obj, vTensor):
        found.add(obj.storage_format)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _formats_in(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            _formats_in(item, found)


def _rewrap(obj, storage_format: StorageFormat):
    if isinstance(obj, torch.Tensor) and not isinstance(obj, vTensor):
        return vTensor(obj, storage_format)
    if isinstance(obj, vTensor):
        obj.storage_format = storage_format
        return obj
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_rewrap(o, storage_format) for o in obj)
    if isinstance(obj, list):
        return [_rewrap(o, storage_format) for o in obj]
    return obj


class vTensor(torch.Tensor):  # noqa: N801 (the name of the programming model)
    """A tensor view (no copy) tagged with its :class:`StorageFormat`."""

    storage_format: StorageFormat

    @staticmethod
    def __new__(cls, data: torch.Tensor, storage_format: StorageFormat | str):
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"vTensor wraps a torch.Tensor, got {type(data).__name__}")
        try:
            fmt = StorageFormat(storage_format)
        except ValueError:
            raise ValueError(
                f"storage_format={storage_format!r} is not one of {[f.value for f in StorageFormat]}"
            ) from None
        t = data.as_subclass(cls)
        t.storage_format = fmt
        return t

    def __init__(self, data: torch.Tensor, storage_format: StorageFormat | str):  # noqa: D107
        pass

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        found: set = set()
        _formats_in(args, found)
        _formats_in(kwargs, found)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if func in (torch.Tensor.__repr__, torch.Tensor.__format__) or len(found) != 1:
            return _plain(out)
        return _rewrap(out, next(iter(found)))

    def plain(self) -> torch.Tensor:
        """The underlying tensor, untagged (same storage)."""
        return self.as_subclass(torch.Tensor)

    def __repr__(self) -> str:  # pragma: no cover - display only
        return f"vTensor({self.storage_format.value}, {self.plain()!r})"


def _plain(obj):
    if isinstance(obj, vTensor):
        return obj.as_subclass(torch.Tensor)
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_plain(o) for o in obj)
    if isinstance(obj, list):
        return [_plain(o) for o in obj]
    return obj


def storage_format_of(x) -> StorageFormat | None:
    """The format of a vTensor, ``None`` for anything else."""
    return x.storage_format if isinstance(x, vTensor) else None


def as_plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_subclass(torch.Tensor) if isinstance(x, vTensor) else x
