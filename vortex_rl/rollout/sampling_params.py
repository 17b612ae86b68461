"""`SamplingParams`: how one request is sampled and when it stops."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_LOGPROBS = 20


@dataclass
class SamplingParams:
    """Sampling of one request.

    The sampling distribution of a token is ``softmax(logits / temperature)`` restricted to the
    ``top_k`` most likely tokens, then to the smallest set of those whose probability reaches ``top_p``,
    renormalised. Every generated token comes with its log-probability under that distribution (what
    the sampler actually drew from, so RL importance ratios against the trainer's log-probs are exact
    when the trainer applies the same temperature and no filtering). With ``temperature=0`` decoding is
    greedy and the log-probabilities are those of the raw model distribution (temperature 1, no
    filtering).

    Attributes
    ----------
    temperature: ``>= 0``; 0 means greedy.
    top_p: in ``(0, 1]``; 1 disables nucleus filtering.
    top_k: ``-1`` or ``0`` disables; otherwise keep the ``top_k`` most likely tokens.
    max_new_tokens: generated tokens at most (``>= 1``).
    stop: token ids that end generation (the stop token is kept in the output).
    ignore_eos: keep generating past the model's EOS tokens (benchmarks).
    seed: seed of this request's random stream; ``None`` draws one from the engine's seed. Sample ``i``
        of ``n`` uses its own stream derived from ``(seed, i)``.
    logprobs: ``None``, or ``k`` in ``1..20``: also return the ``k`` most likely tokens of the sampling
        distribution with their log-probs at every step.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 256
    stop: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature={self.temperature!r} must be a finite number >= 0 (0 = greedy)")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
        if not _is_int(self.top_k) or self.top_k < -1:
            raise ValueError(f"top_k={self.top_k!r} must be -1 or 0 (off) or a positive int")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be a positive int")
        stop = (self.stop,) if _is_int(self.stop) else tuple(self.stop)
        if not all(_is_int(t) and t >= 0 for t in stop):
            raise ValueError(f"stop={self.stop!r} must be token ids (ints >= 0)")
        self.stop = stop
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ValueError(f"seed={self.seed!r} must be None or an int >= 0")
        if self.logprobs is not None and (not _is_int(self.logprobs) or not 1 <= self.logprobs <= MAX_LOGPROBS):
            raise ValueError(f"logprobs={self.logprobs!r} must be None or an int in 1..{MAX_LOGPROBS}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def filters(self) -> bool:
        """Whether top-k or top-p filtering changes the distribution (greedy ignores both)."""
        return not self.greedy and (self.top_k > 0 or self.top_p < 1)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def params_for_prompts(sampling_params: "SamplingParams | list[SamplingParams] | None", count: int
                      ) -> list["SamplingParams"]:
    """One ``SamplingParams`` per prompt from ``None`` (defaults), one shared object, or a list of ``count``."""
    if sampling_params is None:
        sampling_params = SamplingParams()
    if isinstance(sampling_params, SamplingParams):
        return [sampling_params] * count
    params = list(sampling_params)
    if len(params) != count or not all(isinstance(p, SamplingParams) for p in params):
        raise ValueError(f"sampling_params must be one SamplingParams or a list of {count} (one per prompt)")
    return params
