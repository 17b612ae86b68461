"""The weight-sync check, once for every path: what each engine holds must sum to what it was sent.

Senders and engines sum their weights in float64, in the engine's dtype (``vortex_rl.rollout.weight_checksum``,
``Engine.state_checksum``); sums of identical elements differ only by summation order, hence ``rel_tol``.
"""

from __future__ import annotations

from typing import Sequence

DEFAULT_REL_TOL = 1e-6


def compare_checksums(sent: Sequence[float], held: Sequence[float], *, rel_tol: float = DEFAULT_REL_TOL) -> float:
    """Largest relative difference between what rollout worker ``i`` was sent (``sent[i]``) and holds
    (``held[i]``); raises ``RuntimeError`` naming the worker when one passes ``rel_tol``."""
    if len(sent) != len(held):
        raise ValueError(f"{len(sent)} checksums sent but {len(held)} held")
    worst = 0.0
    for i, (expected, actual) in enumerate(zip(sent, held)):
        relative = abs(actual - expected) / max(abs(expected), 1.0)
        if relative > rel_tol:
            raise RuntimeError(f"rollout worker {i} holds weights with checksum {actual!r} but was sent {expected!r} "
                               f"(relative difference {relative:.3g} > {rel_tol})")
        worst = max(worst, relative)
    return worst
