"""Linear layers, plain and packed (fused q/k/v and gate/up), each parameter with a ``weight_loader``.

``param.weight_loader(param, loaded, shard_id=None, *, check_only=False)`` copies a checkpoint tensor
into its part of the parameter; ``check_only`` validates the shape without copying, so a whole update
can be checked before any parameter changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# On CPU, float32 products of at most this many rows (decode) are taken as ``(W @ x^T)^T``. MKL runs
# ``x @ W^T`` with a few rows, and a single row as a matrix-vector product, far below the memory
# bandwidth; with ``W`` as the left operand and ``x^T`` a transposed view (BLAS "N", "T") it reads ``W``
# in storage order. A single row is doubled to take that form. SmolLM2-135M's projections, 30 layers
# with weights out of cache, 2 cores: 46.6 -> 26.5 ms a step at 1 row, 62.8 -> 25.7 at 4, 81.8 -> 65.5
# at 16, 290.7 -> 258.3 at 128; slower from 256 rows (492 -> 518), where ``F.linear`` stays.
CPU_WEIGHT_LEFT_MAX_ROWS = 128


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight^T (+ bias)`` for ``x [rows, in]``, ``weight [out, in]``: ``[rows, out]`` (contiguous)."""
    rows = x.shape[0] if x.dim() == 2 else 0
    if (x.device.type == "cpu" and 1 <= rows <= CPU_WEIGHT_LEFT_MAX_ROWS
            and x.dtype == weight.dtype == torch.float32):
        lhs = x if rows > 1 else x.expand(2, -1).contiguous()
        out = torch.mm(weight, lhs.t())[:, :rows].t().contiguous()
        return out if bias is None else out.add_(bias)
    return F.linear(x, weight, bias)


def attach_loader(param: nn.Parameter, loader) -> nn.Parameter:
    param.weight_loader = loader
    return param


def copy_checked(dest: torch.Tensor, loaded: torch.Tensor, *, check_only: bool, what: str) -> None:
    """Copy ``loaded`` into ``dest`` (casting dtype and device) after checking the shapes agree."""
    if tuple(loaded.shape) != tuple(dest.shape):
        raise ValueError(f"shape {tuple(loaded.shape)} does not match {what} shape {tuple(dest.shape)}")
    if not check_only:
        with torch.no_grad():
            dest.copy_(loaded)


class Linear(nn.Module):
    """``y = x W^T (+ b)``; one checkpoint tensor per parameter."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = attach_loader(nn.Parameter(torch.empty(out_features, in_features), requires_grad=False),
                                    self.weight_loader)
        self.bias = None
        if bias:
            self.bias = attach_loader(nn.Parameter(torch.empty(out_features), requires_grad=False), self.weight_loader)

    def shard(self, param: nn.Parameter, shard_id) -> torch.Tensor:
        """The part of ``param`` that the checkpoint tensor ``shard_id`` fills."""
        if shard_id is not None:
            raise ValueError(f"{type(self).__name__} has no shards, got shard_id={shard_id!r}")
        return param.data

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None, *, check_only: bool = False):
        what = "parameter" if shard_id is None else f"shard {shard_id!r}"
        copy_checked(self.shard(param, shard_id), loaded, check_only=check_only, what=what)

    @property
    def shard_ids(self) -> tuple:
        """Checkpoint tensors that together fill each parameter (``(None,)``: one tensor)."""
        return (None,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class MergedLinear(Linear):
    """Several projections of the same input stacked along the output (e.g. gate and up)."""

    def __init__(self, in_features: int, output_sizes: list[int], *, bias: bool = False):
        super().__init__(in_features, sum(output_sizes), bias=bias)
        self.output_sizes = list(output_sizes)
        self.offsets = [sum(output_sizes[:i]) for i in range(len(output_sizes))]

    @property
    def shard_ids(self) -> tuple:
        return tuple(range(len(self.output_sizes)))

    def shard(self, param: nn.Parameter, shard_id) -> torch.Tensor:
        if shard_id not in self.shard_ids:
            raise ValueError(f"shard_id={shard_id!r} is not one of {self.shard_ids}")
        return param.data.narrow(0, self.offsets[shard_id], self.output_sizes[shard_id])


class QKVLinear(MergedLinear):
    """Query, key and value projections in one matmul; shards ``"q"``, ``"k"``, ``"v"``."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, *, bias: bool):
        self.q_size, self.kv_size = num_heads * head_dim, num_kv_heads * head_dim
        super().__init__(hidden_size, [self.q_size, self.kv_size, self.kv_size], bias=bias)

    @property
    def shard_ids(self) -> tuple:
        return ("q", "k", "v")

    def shard(self, param: nn.Parameter, shard_id) -> torch.Tensor:
        if shard_id not in self.shard_ids:
            raise ValueError(f"shard_id={shard_id!r} is not one of {self.shard_ids}")
        index = self.shard_ids.index(shard_id)
        return param.data.narrow(0, self.offsets[index], self.output_sizes[index])
