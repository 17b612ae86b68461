"""`SwapSpace`: host memory for the KV pages of preempted sequences, and the queue they come back from.

A preempted sequence's pages (K, V and the flow's per-page state, every layer) are copied to host memory
bit for bit and copied back to fresh device pages when it is resumed, so its rollout does not depend on
memory pressure. Recomputing it instead would not be exact: prefill is dense while its tokens were
decoded through the flow. This class only counts; ``ModelRunner`` moves the bytes
(``Sequence.host_kv`` holds them while the sequence is out).
"""

from __future__ import annotations

from collections import deque

from vortex_rl.rollout.sequence import Sequence, SequenceStatus


class SwapSpace:
    """Host pages in use, under a cap, and the swapped-out sequences in the order they left.

    Parameters
    ----------
    capacity_pages: host pages available (``EngineConfig.swap_space_gb`` over the bytes of one page).
    swap_space_gb: the budget it came from, named in the error when it is exhausted.
    """

    def __init__(self, capacity_pages: int, *, swap_space_gb: float):
        if capacity_pages < 0:
            raise ValueError(f"capacity_pages={capacity_pages} must be >= 0")
        self.capacity_pages = capacity_pages
        self.swap_space_gb = swap_space_gb
        self.queue: deque[Sequence] = deque()
        self.num_used = 0
        self.peak_used = 0
        self.num_swapped_out = 0  # pages copied to host since the counters were reset

    def __len__(self) -> int:
        return len(self.queue)

    def push(self, seq: Sequence, num_pages: int) -> None:
        """Account for ``seq`` leaving the device with ``num_pages`` pages; raises when they do not fit."""
        if self.num_used + num_pages > self.capacity_pages:
            raise RuntimeError(
                f"preempting sequence {seq.seq_id} needs {num_pages} host pages but the swap space has "
                f"{self.capacity_pages - self.num_used} of {self.capacity_pages} left "
                f"(swap_space_gb={self.swap_space_gb}); raise swap_space_gb, or give the KV cache more pages "
                "(num_pages / kv_cache_memory_gb) or fewer sequences (max_num_seqs)"
            )
        seq.status, seq.num_swapped_pages = SequenceStatus.SWAPPED, num_pages
        self.queue.append(seq)
        self.num_used += num_pages
        self.peak_used = max(self.peak_used, self.num_used)
        self.num_swapped_out += num_pages

    def peek(self) -> Sequence:
        """The sequence that left first: the next to come back."""
        return self.queue[0]

    def pop(self) -> Sequence:
        """Take the next sequence back (its host pages are released once the runner copied them in)."""
        seq = self.queue.popleft()
        self.num_used -= seq.num_swapped_pages
        return seq

    def remove(self, seq: Sequence) -> None:
        """Take ``seq`` out of the queue for good (an aborted request), releasing its host pages."""
        self.queue.remove(seq)
        self.num_used -= seq.num_swapped_pages
        seq.host_kv, seq.num_swapped_pages = None, 0

    def clear(self) -> None:
        """Drop every swapped-out sequence and its host copy."""
        for seq in self.queue:
            seq.host_kv = None
        self.queue.clear()
        self.num_used = 0

    def reset_counters(self) -> None:
        self.peak_used = self.num_used
        self.num_swapped_out = 0
