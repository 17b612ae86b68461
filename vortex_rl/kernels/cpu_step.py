"""What the CPU kernels derive once per decode step instead of once per layer.

Every layer of a decode step calls the kernels with the same page table, lengths, budgets and slots;
what the kernels derive from those alone (page counts, the last page and its fill, which pages a
request always keeps, where each token lands) is the same in every layer. On CPU at batch 1 these
small ops cost more than the layer's reads, so a kernel given a ``scratch`` dict (FlashInfer's
``plan()`` / SGLang's ``init_forward_metadata`` idea: one planning pass per step) keeps them there.

A value is reused only for the very tensor objects it was derived from (the scratch holds them, so
their identity cannot be taken by new tensors while it lives): a scratch handed to a call with other
tensors derives afresh. The contract left to the caller is the one of a decode step: the tensors are
not changed in place while the scratch lives (``FlowContext.kernel_scratch``, made per step).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def once_per_step(scratch: dict | None, key: tuple, inputs: tuple[torch.Tensor | None, ...],
                  derive: Callable[[], T]) -> T:
    """``derive()``, or what it returned earlier for the same ``key`` and the same ``inputs`` objects.

    scratch: the step's dict, or ``None`` to derive every time; key: names the kernel and its static
    arguments; inputs: the tensors ``derive`` reads.
    """
    if scratch is None:
        return derive()
    kept = scratch.get(key)
    if kept is not None and len(kept[0]) == len(inputs) and all(a is b for a, b in zip(kept[0], inputs)):
        return kept[1]
    value = derive()
    scratch[key] = (inputs, value)
    return value
