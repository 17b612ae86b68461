"""RMSNorm computed in float32 (as the Hugging Face models do) and cast back."""

from __future__ import annotations

import torch
from torch import nn

from vortex_rl.rollout.layers.linear import attach_loader, copy_checked


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = attach_loader(nn.Parameter(torch.ones(hidden_size), requires_grad=False), self.weight_loader)

    shard_ids = (None,)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None, *, check_only: bool = False):
        copy_checked(param.data, loaded, check_only=check_only, what="parameter")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)
