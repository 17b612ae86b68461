"""`Scheduler`: continuous batching with chunked prefill, KV-aware admission and preemption by swapping.

A step is either a prefill step (continuing chunked prompts, then admitting waiting requests in FIFO
order within the token budget) or a decode step (one token for every running sequence). Admission
takes the pages of a whole prompt and keeps one free page per running sequence in reserve, so decoding
rarely runs out. When it does, the newest sequences are preempted: their pages are copied to host memory
(``SwapSpace``) and freed. A decode step that preempted nobody brings swapped sequences back, first out
first in, and no new request is admitted while any is out; so no request is lost or starved, and a
resumed sequence continues from exactly the KV it left with.

A sequence that has sampled its last token (``max_new_tokens`` or ``max_model_len``) gives its slot and
pages back at once (``sampled``), before the token is read: under overlap scheduling the next step's
admission then sees the same free memory as without it, and such a sequence is never a preemption victim.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from vortex_rl.rollout.config import EngineConfig
from vortex_rl.rollout.page_manager import PageManager, pages_for
from vortex_rl.rollout.sequence import Sequence, SequenceStatus
from vortex_rl.rollout.swap_space import SwapSpace


@dataclass
class ScheduledBatch:
    """One step's work.

    ``chunk_lens[i]``: tokens of ``seqs[i]`` computed this step (1 in decode). ``copies``: ``(src, dst)``
    page copies to make before the forward (copy-on-write). ``swap_out``: ``(seq, pages)``, device pages
    to copy to ``seq.host_kv`` before anything else (they may be taken again in this very step);
    ``swap_in``: ``(seq, pages)``, fresh device pages to fill from ``seq.host_kv``. ``samples[i]``:
    whether ``seqs[i]`` has all its tokens cached after this step and so samples a token (fixed when the
    batch is made).
    """

    is_prefill: bool
    seqs: list[Sequence]
    chunk_lens: list[int]
    copies: list[tuple[int, int]] = field(default_factory=list)
    swap_out: list[tuple[Sequence, list[int]]] = field(default_factory=list)
    swap_in: list[tuple[Sequence, list[int]]] = field(default_factory=list)
    samples: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        if self.is_prefill:
            self.samples = [s.num_cached_tokens + c == len(s) for s, c in zip(self.seqs, self.chunk_lens)]
        else:  # a decoding sequence has all its tokens but the last cached, and computes that one
            self.samples = [True] * len(self.seqs)


class Scheduler:
    def __init__(self, config: EngineConfig, pages: PageManager, swap: SwapSpace, eos_token_ids: set[int],
                 max_model_len: int):
        self.config = config
        self.pages = pages
        self.swap = swap
        self.eos_token_ids = frozenset(eos_token_ids)
        self.max_model_len = max_model_len
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.retiring: list[Sequence] = []  # last token sampled, not read yet; no slot, no pages
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        """Queue a request (a sequence plus its ``pending_samples``)."""
        self.waiting.append(seq)

    def has_work(self) -> bool:
        """Whether any request is unfinished: waiting, running, swapped out, or its last token unread."""
        return bool(self.waiting or self.running or self.swap or self.retiring)

    def abort_all(self) -> list[Sequence]:
        """Abort every request (``abort`` each); returns the sequences aborted."""
        heads = list(self.waiting) + list(self.running) + list(self.swap.queue) + list(self.retiring)
        return [seq for head in heads for seq in self.abort(head)]

    def abort(self, seq: Sequence) -> list[Sequence]:
        """Stop ``seq`` wherever it is (waiting, prefilling, decoding or swapped out), with its samples
        not forked yet: free its pages and host copy, mark it finished with ``finish_reason="abort"``.

        Returns the sequences aborted now (none when ``seq`` had already finished). Call between steps.
        """
        if seq.is_finished:
            return []
        if seq.status == SequenceStatus.WAITING:
            self.waiting.remove(seq)
        else:
            self._release(seq)
        seq.drop_pending()
        aborted = [seq] + seq.pending_samples
        seq.pending_samples = []
        for s in aborted:
            s.status, s.finish_reason = SequenceStatus.FINISHED, "abort"
        return aborted

    def schedule(self, *, tokens_in_flight: bool = False) -> ScheduledBatch | None:
        """The next step's batch. With ``tokens_in_flight`` (a step's sampled tokens not read yet), a
        step with nothing to run returns ``None``: every running sequence is waiting on those tokens."""
        batch = self._schedule_prefill()
        if batch is None:
            batch = self._schedule_decode()
        if not batch.seqs:
            if tokens_in_flight:
                return None
            raise RuntimeError(
                f"scheduler found nothing to run: {len(self.waiting)} waiting, {len(self.running)} running, "
                f"{len(self.swap)} swapped out, {len(self.retiring)} with their last token unread, "
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
        # Swapped-out sequences come back before anything new is admitted.
        while self.waiting and not self.swap and budget > 0 and self._can_admit(self.waiting[0]):
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
        return self._fits(len(seq), seq.group_size)

    def _fits(self, num_tokens: int, group_size: int) -> bool:
        """Whether ``group_size`` more sequences, with pages for ``num_tokens`` tokens, may run now."""
        # A prompt still in prefill holds the slots of the samples it will fork, admitted in this very step.
        slots = len(self.running) + sum(len(s.pending_samples) for s in self.running if s.in_prefill)
        if slots + group_size > self.config.max_num_seqs:
            return False
        # Keep a page of headroom for every sequence that will decode, unless nothing else runs.
        reserve = slots + group_size if self.running else 0
        return pages_for(num_tokens, self.pages.page_size) + reserve <= self.pages.num_free

    def _schedule_decode(self) -> ScheduledBatch:
        seqs, copies, swap_out = [], [], []
        for seq in [s for s in self.running if not s.in_prefill]:  # none has reached its length (``sampled``)
            if seq.status != SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            if self.pages.pages_to_write(seq, 1) == 0:  # 15 steps in 16: the token fits its own last page
                seqs.append(seq)
                continue
            while not self.pages.can_write(seq, 1):
                victim = self.running[-1]
                swap_out.append(self.preempt(victim))
                if victim is seq:
                    break
            if seq.status == SequenceStatus.RUNNING:
                copies += self.pages.prepare_write(seq, 1)
                seqs.append(seq)
        swap_in = [] if swap_out else self._resume()
        for seq, _ in swap_in:
            copies += self.pages.prepare_write(seq, 1)
            seqs.append(seq)
        return ScheduledBatch(False, seqs, [1] * len(seqs), copies, swap_out, swap_in)

    def preempt(self, seq: Sequence) -> tuple[Sequence, list[int]]:
        """Swap out a decoding ``seq``: free its page references (pages it shares stay with its siblings)
        and queue it to come back. Returns ``(seq, pages)``: the device pages the runner must copy to host
        memory before they are used again (all of them, shared ones included)."""
        if seq.in_prefill or seq.pending_samples:
            raise ValueError(f"sequence {seq.seq_id} is still in prefill; only decoding sequences are preempted")
        pages = list(seq.page_table)[: pages_for(seq.num_cached_tokens, self.pages.page_size)]
        self.swap.push(seq, len(pages))  # raises, before anything changed, when the host cap is reached
        self.running.remove(seq)
        self.pages.free(seq)
        self.num_preemptions += 1
        return seq, pages

    def _resume(self) -> list[tuple[Sequence, list[int]]]:
        """Bring swapped-out sequences back onto fresh pages, first out first in, while they fit with the
        admission reserve. Returns ``(seq, pages)``: the pages to fill from ``seq.host_kv``."""
        resumed = []
        while self.swap and self._fits(len(self.swap.peek()), 1):
            seq = self.swap.pop()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            resumed.append((seq, self.pages.restore(seq)))
        return resumed

    def complete_step(self, batch: ScheduledBatch) -> list[tuple[int, Sequence]]:
        """Account for the tokens just cached; fork the samples of prompts whose prefill completed.

        Returns ``(row, seq)`` pairs: ``seq`` samples its next token from logits row ``row`` (rows
        follow the sampling sequences of ``batch`` in order; forked samples share their parent's row).
        """
        if not batch.is_prefill:  # one token each, every sequence samples from its own row
            for seq in batch.seqs:
                seq.num_cached_tokens += 1
            return list(enumerate(batch.seqs))
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

    def sampled(self, seqs: list[Sequence]) -> list[int]:
        """Append a pending token (sampled on the device, ``Sequence.append_pending``) to each of ``seqs``
        and retire those whose length it reaches: they give their slot and pages back now, as no step
        computes that token, and finish when it is read (``append_tokens``). Returns the tokens' indices
        in ``token_ids``."""
        indices = [seq.append_pending() for seq in seqs]
        for seq in seqs:
            if self.reached_length(seq):
                self.running.remove(seq)
                self.pages.free(seq)
                seq.status = SequenceStatus.RETIRING
                self.retiring.append(seq)
        return indices

    def reached_length(self, seq: Sequence) -> bool:
        """Whether ``seq``'s tokens (pending ones included) reach ``max_new_tokens`` or ``max_model_len``:
        it samples no more, and finishes once its last token is resolved."""
        length = len(seq.token_ids)
        return length - seq.num_prompt_tokens >= seq.params.max_new_tokens or length >= self.max_model_len

    def append_tokens(self, seqs: list[Sequence], indices: list[int], tokens: list[int], logprobs: list[float],
                      tops: list[dict[int, float] | None]) -> list[Sequence]:
        """Resolve sampled tokens: ``tokens[i]`` is the value of ``seqs[i]``'s pending token at
        ``indices[i]`` (``Sequence.append_pending``). Finishes the sequences that stop, dropping tokens
        sampled after the stop; skips sequences that finished before (an overlapped step sampled them
        once more). Returns the sequences finished now."""
        finished = []
        for seq, index, token, logprob, top in zip(seqs, indices, tokens, logprobs, tops):
            if seq.is_finished:
                continue
            seq.resolve(index, token, logprob, top)
            params, length = seq.params, index + 1
            if token in params.stop or (not params.ignore_eos and token in self.eos_token_ids):
                seq.finish_reason = "stop"
            elif length - seq.num_prompt_tokens >= params.max_new_tokens or length >= self.max_model_len:
                seq.finish_reason = "length"
            else:
                continue
            seq.drop_pending()
            self._release(seq)
            seq.status = SequenceStatus.FINISHED
            finished.append(seq)
        return finished

    def _release(self, seq: Sequence) -> None:
        """Take a running, swapped-out or retiring ``seq`` off the device pages, host copy or list it holds."""
        if seq.status == SequenceStatus.RUNNING:
            self.running.remove(seq)
            self.pages.free(seq)
        elif seq.status == SequenceStatus.SWAPPED:
            self.swap.remove(seq)
        elif seq.status == SequenceStatus.RETIRING:
            self.retiring.remove(seq)
