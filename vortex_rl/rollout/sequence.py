"""`Sequence`: one sample being generated, with the `PageTable` of its KV pages; `Completion`: what the
caller gets back."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vortex_rl.rollout.sampling_params import SamplingParams

if TYPE_CHECKING:
    import torch

# Stands in ``Sequence.token_ids`` for a token sampled on the device whose value has not reached the host
# yet (overlap scheduling); never a valid id, so a step that fed it to the model would fail loudly.
PENDING_TOKEN = -1


class PageTable:
    """A sequence's physical page ids in logical order, kept in a fixed-capacity int32 array so a
    batch's page table is one numpy gather (``-1`` past the last page)."""

    def __init__(self, capacity: int):
        self.array = np.full(capacity, -1, dtype=np.int32)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"page index {index} out of range for {self.size} pages")
        return int(self.array[index])

    def __setitem__(self, index: int, page: int) -> None:
        if index < 0:
            index += self.size
        self.array[index] = page

    def __iter__(self):
        return iter(self.array[: self.size].tolist())

    def append(self, page: int) -> None:
        if self.size == len(self.array):
            raise ValueError(f"page table full: a sequence may hold at most {len(self.array)} pages (max_model_len)")
        self.array[self.size] = page
        self.size += 1

    def copy(self) -> "PageTable":
        other = PageTable(len(self.array))
        other.array[:] = self.array
        other.size = self.size
        return other

    def clear(self) -> None:
        self.array[: self.size] = -1
        self.size = 0


class SequenceStatus(enum.Enum):
    WAITING = "waiting"    # not admitted yet: holds no pages
    RUNNING = "running"    # holds pages: prefilling (``in_prefill``) or decoding
    SWAPPED = "swapped"    # preempted while decoding: its pages are in host memory (``host_kv``)
    RETIRING = "retiring"  # sampled its last token (length reached), not read yet: holds no pages
    FINISHED = "finished"


@dataclass
class Completion:
    """One generated sample.

    Attributes
    ----------
    token_ids: generated token ids (the stop token included when generation stopped on one).
    text: ``token_ids`` decoded by the engine's tokenizer (``""`` without a tokenizer).
    logprobs: one float per generated token: its log-prob under the distribution it was sampled from
        (see ``SamplingParams``).
    top_logprobs: with ``SamplingParams.logprobs=k``: per generated token, ``{token_id: logprob}`` of the
        ``k`` most likely tokens of that distribution; otherwise ``None``.
    finish_reason: ``"stop"`` (EOS or a stop token), ``"length"`` (``max_new_tokens`` or
        ``max_model_len`` reached) or ``"abort"`` (``Engine.abort_request``; the tokens so far).
    """

    token_ids: list[int]
    text: str
    logprobs: list[float]
    top_logprobs: list[dict[int, float]] | None
    finish_reason: str


class Sequence:
    """A prompt plus the tokens sampled so far, and where its KV lives.

    ``num_cached_tokens`` tokens have K/V in the pages of ``page_table``; a decoding sequence has all
    tokens but the last one cached. Under overlap scheduling the last token may be ``PENDING_TOKEN``:
    sampled on the device, its value not read yet (``append_pending`` / ``resolve``); ``logprobs`` then
    holds one entry fewer than the completion. ``pending_samples`` are the other samples of the same prompt: they
    are forked from this one (sharing its prompt pages) when its prompt prefill completes. While it is
    swapped out, ``host_kv`` holds its ``num_swapped_pages`` pages in host memory (``ModelRunner``'s
    cache tensors gathered at its page table: ``{name: [num_layers, num_swapped_pages, ...]}``).
    """

    def __init__(self, seq_id: int, prompt_ids: list[int], params: SamplingParams, *, seed: int,
                 prompt_index: int, sample_index: int, max_pages: int):
        self.seq_id = seq_id
        self.token_ids = list(prompt_ids)
        self.num_prompt_tokens = len(prompt_ids)
        self.params = params
        self.seed = seed
        self.prompt_index = prompt_index
        self.sample_index = sample_index
        self.status = SequenceStatus.WAITING
        self.in_prefill = False
        self.num_cached_tokens = 0
        self.page_table = PageTable(max_pages)
        self.logprobs: list[float] = []
        self.top_logprobs: list[dict[int, float]] | None = [] if params.logprobs else None
        self.finish_reason: str | None = None
        self.pending_samples: list[Sequence] = []
        self.host_kv: dict[str, torch.Tensor] | None = None
        self.num_swapped_pages = 0

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_completion_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def completion_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def group_size(self) -> int:
        """This sequence plus the samples waiting to be forked from it."""
        return 1 + len(self.pending_samples)

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def append_pending(self) -> int:
        """Append a token sampled on the device, value unknown; returns its index in ``token_ids``."""
        self.token_ids.append(PENDING_TOKEN)
        return len(self.token_ids) - 1

    @property
    def num_resolved_tokens(self) -> int:
        """Prompt plus completion tokens whose values are known (all but the pending ones)."""
        return self.num_prompt_tokens + len(self.logprobs)

    def resolve(self, index: int, token_id: int, logprob: float, top: dict[int, float] | None) -> None:
        """Give the pending token at ``index`` (the oldest pending one) its value and log-probs."""
        if index != self.num_resolved_tokens or self.token_ids[index] != PENDING_TOKEN:
            raise RuntimeError(f"sequence {self.seq_id}: token {index} is not its oldest pending token "
                               f"({self.num_resolved_tokens} resolved of {len(self.token_ids)})")
        self.token_ids[index] = token_id
        self.logprobs.append(logprob)
        if self.top_logprobs is not None:
            self.top_logprobs.append(top or {})

    def drop_pending(self) -> None:
        """Forget tokens sampled after the last resolved one (the sequence finished before them)."""
        del self.token_ids[self.num_resolved_tokens:]

    def fork(self, child: "Sequence") -> None:
        """Give ``child`` (a pending sample) this sequence's prompt state and page table; the caller
        counts the shared page references."""
        child.token_ids = list(self.token_ids)
        child.num_cached_tokens = self.num_cached_tokens
        child.status = SequenceStatus.RUNNING
        child.in_prefill = False

    def to_completion(self, text: str) -> Completion:
        return Completion(
            token_ids=self.completion_ids,
            text=text,
            logprobs=list(self.logprobs),
            top_logprobs=self.top_logprobs,
            finish_reason=self.finish_reason or "length",
        )
