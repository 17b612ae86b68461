"""`PageManager`: reference-counted KV pages, shared prompt pages and copy-on-write of partial pages."""

from __future__ import annotations

from collections import deque

from vortex_rl.rollout.sequence import Sequence


def pages_for(num_tokens: int, page_size: int) -> int:
    return (num_tokens + page_size - 1) // page_size


class PageManager:
    """Allocates physical pages ``0 .. num_pages-1`` to sequences.

    A page may be shared (reference count > 1) by the samples of one prompt. A sequence about to write
    into a shared page first gets a private copy (``prepare_write`` returns the copies for the model
    runner to perform); full shared pages are never written again, so only a partial last page is ever
    copied. A preempted sequence gives up all its references (``free``) and gets private pages back
    (``restore``).
    """

    def __init__(self, num_pages: int, page_size: int):
        if num_pages < 1:
            raise ValueError(f"num_pages={num_pages} must be >= 1")
        self.num_pages = num_pages
        self.page_size = page_size
        self.ref_counts = [0] * num_pages
        self.free_pages: deque[int] = deque(range(num_pages))
        self.peak_used = 0

    @property
    def num_free(self) -> int:
        return len(self.free_pages)

    @property
    def num_used(self) -> int:
        return self.num_pages - len(self.free_pages)

    def _take(self) -> int:
        page = self.free_pages.popleft()
        self.ref_counts[page] = 1
        self.peak_used = max(self.peak_used, self.num_used)
        return page

    def _release(self, page: int) -> None:
        self.ref_counts[page] -= 1
        if self.ref_counts[page] == 0:
            self.free_pages.append(page)

    def pages_to_write(self, seq: Sequence, num_new_tokens: int) -> int:
        """Pages ``seq`` must take to write ``num_new_tokens`` more tokens (new pages and private copies)."""
        end = seq.num_cached_tokens + num_new_tokens
        needed = max(0, pages_for(end, self.page_size) - seq.page_table.size)
        return needed + int(self._last_page_shared(seq))  # a shared partial last page is copied first

    def can_write(self, seq: Sequence, num_new_tokens: int, *, reserve: int = 0) -> bool:
        return self.pages_to_write(seq, num_new_tokens) + reserve <= self.num_free

    def _last_page_shared(self, seq: Sequence) -> bool:
        """Whether ``seq``'s last page is partly filled and shared (``prepare_write`` copies it first)."""
        partial = seq.num_cached_tokens % self.page_size != 0
        return partial and self.ref_counts[seq.page_table[-1]] > 1

    def prepare_write(self, seq: Sequence, num_new_tokens: int) -> list[tuple[int, int]]:
        """Give ``seq`` private pages for its next ``num_new_tokens`` tokens.

        Returns the ``(src, dst)`` page copies the runner must make before writing (copy-on-write of a
        shared partial last page). Call ``can_write`` first.
        """
        copies = []
        if self._last_page_shared(seq):
            src = seq.page_table[-1]
            dst = self._take()
            self._release(src)
            seq.page_table[-1] = dst
            copies.append((src, dst))
        end = seq.num_cached_tokens + num_new_tokens
        while len(seq.page_table) < pages_for(end, self.page_size):
            seq.page_table.append(self._take())
        return copies

    def share(self, parent: Sequence, child: Sequence) -> None:
        """``child`` reads ``parent``'s pages from now on (same page table, one more reference each)."""
        for page in parent.page_table:
            self.ref_counts[page] += 1
        child.page_table = parent.page_table.copy()

    def restore(self, seq: Sequence) -> list[int]:
        """Give a swapped-out ``seq`` (no pages) fresh private pages for its ``num_swapped_pages`` pages;
        returns them in logical order, for the runner to copy its host pages into. Pages it shared before
        it left come back as private copies: its siblings may have freed or kept them meanwhile."""
        if len(seq.page_table):
            raise ValueError(f"sequence {seq.seq_id} still holds {len(seq.page_table)} pages; restore needs none")
        for _ in range(seq.num_swapped_pages):
            seq.page_table.append(self._take())
        return list(seq.page_table)

    def free(self, seq: Sequence) -> None:
        for page in reversed(list(seq.page_table)):
            self._release(page)
        seq.page_table.clear()

    def reset(self) -> None:
        """Forget every allocation (all sequences must be dropped by the caller)."""
        self.ref_counts = [0] * self.num_pages
        self.free_pages = deque(range(self.num_pages))
        self.peak_used = 0
