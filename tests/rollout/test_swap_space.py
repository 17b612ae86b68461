"""Swap bookkeeping without a model: pages freed and restored, shared-page reference counts, FIFO return,
admission held back, the host cap, counters."""

from __future__ import annotations

import pytest

from vortex_rl.rollout import EngineConfig, SamplingParams
from vortex_rl.rollout.page_manager import PageManager
from vortex_rl.rollout.scheduler import Scheduler
from vortex_rl.rollout.sequence import Sequence, SequenceStatus
from vortex_rl.rollout.swap_space import SwapSpace

PAGE = 16


def scheduler(num_pages: int, host_pages: int = 100) -> Scheduler:
    config = EngineConfig(flow="dense", max_num_seqs=8, max_model_len=256)
    return Scheduler(config, PageManager(num_pages, PAGE), SwapSpace(host_pages, swap_space_gb=0.25), set(), 256)


def request(seq_id: int, prompt_len: int, n: int = 1) -> Sequence:
    group = [Sequence(seq_id + j, list(range(1, prompt_len + 1)), SamplingParams(max_new_tokens=100), seed=0,
                      prompt_index=seq_id, sample_index=j, max_pages=16) for j in range(n)]
    group[0].pending_samples = group[1:]
    return group[0]


def decoding(s: Scheduler, *requests: Sequence) -> list[Sequence]:
    """Admit and prefill ``requests``, sample one token each: all their samples are then decoding."""
    for r in requests:
        s.add(r)
    batch = s.schedule()
    assert batch.is_prefill
    seqs = [seq for _, seq in s.complete_step(batch)]
    s.append_tokens(seqs, [q.append_pending() for q in seqs], [7] * len(seqs), [0.0] * len(seqs), [None] * len(seqs))
    return seqs


def test_preempting_a_sibling_keeps_the_shared_pages_for_the_others():
    s = scheduler(10)
    parent, child = decoding(s, request(0, 20, n=2))  # a full page and a partial page, both shared
    shared = list(parent.page_table)
    assert list(child.page_table) == shared and [s.pages.ref_counts[p] for p in shared] == [2, 2]
    assert s.preempt(child) == (child, shared)  # every page it reads is copied out, shared ones included
    assert child.status == SequenceStatus.SWAPPED and len(child.page_table) == 0 and child.num_swapped_pages == 2
    assert [s.pages.ref_counts[p] for p in shared] == [1, 1] and s.pages.num_free == 8
    assert list(parent.page_table) == shared and s.running == [parent]
    assert (s.swap.num_used, s.swap.num_swapped_out, s.num_preemptions) == (2, 2, 1)


def test_a_private_sequence_frees_its_pages_and_gets_fresh_private_ones_back():
    s = scheduler(10)
    a, b = decoding(s, request(0, 40), request(1, 20))
    pages_b = list(b.page_table)
    s.preempt(b)
    assert s.pages.num_free == 10 - 3 and all(s.pages.ref_counts[p] == 0 for p in pages_b)
    batch = s.schedule()  # nothing preempted in this step: b comes back and decodes in it
    assert not batch.is_prefill and batch.seqs == [a, b] and batch.swap_out == []
    [(back, restored)] = batch.swap_in
    assert back is b and restored == list(b.page_table) and len(restored) == 2
    assert not set(restored) & set(a.page_table) and all(s.pages.ref_counts[p] == 1 for p in restored)
    assert b.status == SequenceStatus.RUNNING and s.swap.num_used == 0 and s.swap.num_swapped_out == 2


def test_a_resumed_sibling_holds_private_copies_of_the_prompt_pages():
    s = scheduler(10)
    parent, child = decoding(s, request(0, 20, n=2))
    s.preempt(child)
    [(_, restored)] = s.schedule().swap_in
    assert not set(restored) & set(parent.page_table)
    assert all(s.pages.ref_counts[p] == 1 for p in list(parent.page_table) + list(child.page_table))


def hold(s: Scheduler, num_pages: int) -> Sequence:
    """Take ``num_pages`` free pages for a sequence the scheduler does not know (memory used elsewhere)."""
    filler = request(99, num_pages * PAGE)
    s.pages.prepare_write(filler, num_pages * PAGE)
    return filler


def test_swapped_sequences_return_first_out_first_in_before_new_requests():
    s = scheduler(16)
    a, b, c = decoding(s, request(0, 40), request(1, 40), request(2, 40))  # 3 pages each, 7 left
    s.preempt(c)
    s.preempt(b)
    s.add(request(3, 5))
    # 13 free pages: c returns (3 pages + 2 reserve), then b (3 + 3); the new request is not admitted.
    batch = s.schedule()
    assert not batch.is_prefill and [seq for seq, _ in batch.swap_in] == [c, b] and s.running == [a, c, b]
    assert len(s.waiting) == 1 and len(s.swap) == 0
    assert s.schedule().is_prefill  # nothing is swapped out any more: the new request is admitted


def test_the_head_of_the_queue_is_not_overtaken():
    s = scheduler(12)
    a, big, small = decoding(s, request(0, 20), request(1, 60), request(2, 5))  # 2 + 4 + 1 pages
    s.preempt(big)
    s.preempt(small)
    filler = hold(s, 5)  # 5 free: small would fit (1 + 2 reserve) but big (4 + 2) is first
    assert s.schedule().swap_in == []
    s.pages.free(filler)
    assert [seq for seq, _ in s.schedule().swap_in] == [big, small]


def test_no_swap_in_in_a_step_that_preempts():
    s = scheduler(16)
    a, b, c = decoding(s, request(0, 32), request(1, 60), request(2, 5))  # 2 + 4 + 1 pages; a's page is full
    s.preempt(c)
    hold(s, 10)  # no page free
    pages_b = list(b.page_table)
    batch = s.schedule()  # a needs a page: b is preempted, 4 free, a takes one, c would fit the 3 left
    assert batch.swap_out == [(b, pages_b)] and batch.swap_in == [] and batch.seqs == [a]
    assert list(s.swap.queue) == [c, b]
    batch = s.schedule()  # no preemption now: c comes back (1 + 2 reserve), b (4 + 3) does not fit
    assert [seq for seq, _ in batch.swap_in] == [c] and batch.seqs == [a, c] and s.swap.peek() is b


def test_a_full_swap_space_raises_before_anything_changes():
    s = scheduler(10, host_pages=1)
    a, = decoding(s, request(0, 20))
    pages = list(a.page_table)
    with pytest.raises(RuntimeError, match="needs 2 host pages but the swap space has 1 of 1 left "
                                           r"\(swap_space_gb=0.25\); raise swap_space_gb"):
        s.preempt(a)
    assert a.status == SequenceStatus.RUNNING and list(a.page_table) == pages and s.running == [a]
    assert s.swap.num_used == 0 and s.num_preemptions == 0


def test_abort_all_drops_swapped_sequences_and_their_host_copies():
    s = scheduler(10)
    a, b = decoding(s, request(0, 20), request(1, 20))
    s.preempt(b)
    b.host_kv = {"k": object()}  # what the runner would have put there
    assert s.has_work()
    s.abort_all()
    assert not s.has_work() and b.host_kv is None and s.swap.num_used == 0 and s.pages.num_free == 10


def test_only_decoding_sequences_are_preempted():
    s = scheduler(10)
    s.add(request(0, 20, n=2))
    batch = s.schedule()
    with pytest.raises(ValueError, match="sequence 0 is still in prefill"):
        s.preempt(batch.seqs[0])


def test_peak_and_counters_reset():
    swap = SwapSpace(10, swap_space_gb=1.0)
    seqs = [request(i, 5) for i in range(3)]
    for seq, n in zip(seqs, [2, 3, 4]):
        swap.push(seq, n)
    assert (swap.num_used, swap.peak_used, swap.num_swapped_out) == (9, 9, 9)
    assert swap.pop() is seqs[0] and swap.num_used == 7
    swap.reset_counters()
    assert (swap.num_used, swap.peak_used, swap.num_swapped_out) == (7, 7, 0)
    with pytest.raises(ValueError, match="capacity_pages=-1"):
        SwapSpace(-1, swap_space_gb=0)
