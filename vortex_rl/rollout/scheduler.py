"""`Scheduler`: continuous batching with chunked prefill, KV-aware admission and preemption.

A step is either a prefill step (continuing chunked prompts, then admitting waiting requests in FIFO
order within the token budget) or a decode step (one token for every running sequence). Admission
takes the pages of a whole prompt and keeps one free page per running sequence in reserve, so decoding
rarely runs out. When it does, the newest sequences are preempted: their pages are freed and they are
recomputed later from their tokens (prompt + generated so far), so no request is ever lost.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from vortex_rl.rollout.config import EngineConfig
from vortex_rl.rollout.page_manager import PageManager, pages_for
from vortex_rl.rollout.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    """One step's work.

    ``chunk_lens[i]``: tokens of ``seqs[i]`` computed this step (1 in decode). ``copies``: ``(src, dst)``
    page copies to make before the forward (copy-on-write). ``samples[i]``: whether ``seqs[i]`` has all
    its tokens cached after this step and so samples a token (fixed when the batch is made).
    """

    is_prefill: bool
    seqs: list[Sequence]
    chunk_lens: list[int]
    copies: list[tuple[int, int]] = field(default_factory=list)
    samples: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.samples = [s.num_cached_tokens + c == len(s) for s, c in zip(self.seqs, self.chunk_lens)]


class Scheduler:
    def __init__(self, config: EngineConfig, pages: PageManager, eos_token_ids: set[int], max_model_len: int):
        self.config = config
        self.pages = pages
        self.eos_token_ids = frozenset(eos_token_ids)
        self.max_model_len = max_model_len
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        """Queue a request (a sequence plus its ``pending_samples``)."""
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort_all(self) -> None:
        """Drop every request and free its pages."""
        for seq in self.running:
            self.pages.free(seq)
        self.running.clear()
        self.waiting.clear()

    def schedule(self) -> ScheduledBatch:
        batch = self._schedule_prefill()
        if batch is None:
            batch = self._schedule_decode()
        if not batch.seqs:
            raise RuntimeError(
                f"scheduler found nothing to run: {len(self.waiting)} waiting, {len(self.running)} running, "
                f"{self.pages.num_free}/{self.pages.num_pages} pages free"
            )
        return batch

    def _schedule_prefill(self) -> ScheduledBatch | None:
        budget = self.config.max_num_batched_tokens
        seqs, chunks = [], []
        for seq in self.running:
            if seq.in_prefill and budget > 0:
                chunk = min(len(seq) - seq.num_cached_tokens, budget)
                seqs.append(seq)
                chunks.append(chunk)
                budget -= chunk
        while self.waiting and budget > 0 and self._can_admit(self.waiting[0]):
            seq = self.waiting.popleft()
            seq.status, seq.in_prefill, seq.num_cached_tokens = SequenceStatus.RUNNING, True, 0
            self.pages.prepare_write(seq, len(seq))
            self.running.append(seq)
            chunk = min(len(seq), budget)
            seqs.append(seq)
            chunks.append(chunk)
            budget -= chunk
        return ScheduledBatch(True, seqs, chunks) if seqs else None

    def _can_admit(self, seq: Sequence) -> bool:
        if len(self.running) + seq.group_size > self.config.max_num_seqs:
            return False
        # Keep a page of headroom for every sequence that will decode, unless nothing else runs.
        reserve = len(self.running) + seq.group_size if self.running else 0
        return pages_for(len(seq), self.pages.page_size) + reserve <= self.pages.num_free

    def _schedule_decode(self) -> ScheduledBatch:
        seqs, copies = [], []
        for seq in [s for s in self.running if not s.in_prefill]:
            if seq.status != SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            while not self.pages.can_write(seq, 1):
                victim = self.running[-1]
                self.preempt(victim)
                if victim is seq:
                    break
            if seq.status == SequenceStatus.RUNNING:
                copies += self.pages.prepare_write(seq, 1)
                seqs.append(seq)
        return ScheduledBatch(False, seqs, [1] * len(seqs), copies)

    def preempt(self, seq: Sequence) -> None:
        """Free ``seq``'s pages; it is recomputed from its tokens when admitted again (first in line)."""
        self.running.remove(seq)
        self.pages.free(seq)
        seq.status, seq.in_prefill, seq.num_cached_tokens = SequenceStatus.WAITING, False, 0
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def complete_step(self, batch: ScheduledBatch) -> list[tuple[int, Sequence]]:
        """Account for the tokens just cached; fork the samples of prompts whose prefill completed.

        Returns ``(row, seq)`` pairs: ``seq`` samples its next token from logits row ``row`` (rows
        follow the sampling sequences of ``batch`` in order; forked samples share their parent's row).
        """
        samplers, row = [], -1
        for seq, chunk, completes in zip(batch.seqs, batch.chunk_lens, batch.samples):
            seq.num_cached_tokens += chunk
            if not completes:
                continue
            row += 1
            seq.in_prefill = False
            samplers.append((row, seq))
            for child in seq.pending_samples:
                seq.fork(child)
                self.pages.share(seq, child)
                self.running.append(child)
                samplers.append((row, child))
            seq.pending_samples = []
        return samplers

    def append_tokens(self, seqs: list[Sequence], tokens: list[int], logprobs: list[float],
                      tops: list[dict[int, float] | None]) -> list[Sequence]:
        """Append sampled tokens; finish sequences that stop. Returns the sequences finished now."""
        finished = []
        for seq, token, logprob, top in zip(seqs, tokens, logprobs, tops):
            seq.append(token, logprob, top)
            params = seq.params
            if token in params.stop or (not params.ignore_eos and token in self.eos_token_ids):
                seq.finish_reason = "stop"
            elif seq.num_completion_tokens >= params.max_new_tokens or len(seq) >= self.max_model_len:
                seq.finish_reason = "length"
            else:
                continue
            seq.status = SequenceStatus.FINISHED
            self.running.remove(seq)
            self.pages.free(seq)
            finished.append(seq)
        return finished
