"""Seeds derived from the run's seed, so a resumed run draws the same samples as an uninterrupted one."""

from __future__ import annotations

SEED_MODULUS = 2**31 - 1  # the largest seed every generator we feed accepts


def derive_seed(base: int, offset: int) -> int:
    """A seed for stream ``offset`` of seed ``base`` (distinct offsets give unrelated-looking seeds)."""
    return (base * 1_000_003 + offset) % SEED_MODULUS


def step_seed(base: int, step: int, stream: int) -> int:
    """The seed of one purpose (``stream``: 0 sampling, 1 group substitution, 2 validation) at ``step``."""
    return derive_seed(base, step * 7919 + stream)
