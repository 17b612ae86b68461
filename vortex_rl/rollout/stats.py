"""`EngineStats`: counters of the engine, cumulative until ``Engine.reset_stats()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class EngineStats:
    """Attributes
    ----------
    num_pages: KV pages in the cache.
    generated_tokens: tokens sampled and kept.
    discarded_tokens: tokens sampled for a sequence that had already stopped: under overlap scheduling a
        step is launched before the previous step's tokens are read, so a sample that stops on a token
        runs one more step whose token is dropped.
    prefill_tokens: tokens run through prefill steps (prompts; shared prompt pages are computed once).
    prefill_steps, decode_steps: forward steps of each kind.
    preemptions: sequences preempted (their pages swapped out to host memory, swapped in later).
    swapped_pages: pages copied to host memory by those preemptions (and back when they resume).
    peak_swapped_pages: most pages held in host memory at once (what ``swap_space_gb`` must hold).
    pages_in_use: pages held now (0 between ``generate`` calls).
    peak_pages: most pages held at once.
    elapsed_s: wall time spent inside ``generate``.
    token_wait_s: time the host spent waiting for sampled tokens to reach it (CUDA: the device was still
        computing). Near zero means the host bounds the step rate; ``elapsed_s`` minus it is host work.
    """

    num_pages: int = 0
    generated_tokens: int = 0
    discarded_tokens: int = 0
    prefill_tokens: int = 0
    prefill_steps: int = 0
    decode_steps: int = 0
    preemptions: int = 0
    swapped_pages: int = 0
    peak_swapped_pages: int = 0
    pages_in_use: int = 0
    peak_pages: int = 0
    elapsed_s: float = 0.0
    token_wait_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of ``generate`` time."""
        return self.generated_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}
