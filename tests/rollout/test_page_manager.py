"""Page allocation: reference counts, sharing, copy-on-write of a shared partial page."""

from __future__ import annotations

import pytest

from vortex_rl.rollout import SamplingParams
from vortex_rl.rollout.page_manager import PageManager, pages_for
from vortex_rl.rollout.sequence import PageTable, Sequence


def seq(num_tokens: int) -> Sequence:
    return Sequence(0, list(range(num_tokens)), SamplingParams(), seed=0, prompt_index=0, sample_index=0, max_pages=8)


@pytest.mark.parametrize("tokens,pages", [(1, 1), (15, 1), (16, 1), (17, 2), (32, 2), (33, 3)])
def test_pages_for_counts_partial_pages(tokens, pages):
    assert pages_for(tokens, 16) == pages


def test_allocate_and_free_return_every_page():
    pm = PageManager(10, 16)
    a, b = seq(17), seq(40)
    pm.prepare_write(a, 17)
    pm.prepare_write(b, 40)
    assert (len(a.page_table), len(b.page_table)) == (2, 3)
    assert len(set(a.page_table) | set(b.page_table)) == 5 and pm.num_free == 5 and pm.peak_used == 5
    pm.free(a)
    pm.free(b)
    assert pm.num_free == 10 and sorted(pm.free_pages) == list(range(10))


def test_shared_partial_page_is_copied_on_write_and_full_pages_stay_shared():
    pm = PageManager(10, 16)
    parent = seq(20)  # one full page + a partial page of 4 tokens
    pm.prepare_write(parent, 20)
    parent.num_cached_tokens = 20
    child = seq(20)
    child.num_cached_tokens = 20
    pm.share(parent, child)
    assert pm.num_used == 2 and pm.ref_counts[parent.page_table[0]] == 2
    assert pm.pages_to_write(child, 1) == 1
    copies = pm.prepare_write(child, 1)
    assert copies == [(parent.page_table[1], child.page_table[1])]
    assert child.page_table[0] == parent.page_table[0] and child.page_table[1] != parent.page_table[1]
    # The parent is now the only reader of its partial page: it writes in place.
    assert pm.prepare_write(parent, 1) == []
    assert pm.num_used == 3
    pm.free(child)
    assert pm.ref_counts[parent.page_table[0]] == 1 and pm.num_used == 2


def test_full_last_page_needs_no_copy():
    pm = PageManager(4, 16)
    parent, child = seq(16), seq(16)
    pm.prepare_write(parent, 16)
    parent.num_cached_tokens = child.num_cached_tokens = 16
    pm.share(parent, child)
    assert pm.prepare_write(child, 1) == [] and len(child.page_table) == 2 and pm.num_used == 2


def test_page_table_capacity_is_enforced():
    table = PageTable(2)
    table.append(5)
    table.append(6)
    assert list(table) == [5, 6] and table[-1] == 6
    with pytest.raises(ValueError, match="at most 2 pages"):
        table.append(7)


def test_restore_gives_a_swapped_sequence_private_pages():
    pm = PageManager(6, 16)
    parent, child = seq(20), seq(20)
    pm.prepare_write(parent, 20)
    parent.num_cached_tokens = child.num_cached_tokens = 20
    pm.share(parent, child)
    child.num_swapped_pages = len(child.page_table)
    pm.free(child)  # swapped out: the parent keeps the shared pages
    assert pm.num_used == 2 and all(pm.ref_counts[p] == 1 for p in parent.page_table)
    restored = pm.restore(child)
    assert restored == list(child.page_table) and len(restored) == 2 and not set(restored) & set(parent.page_table)
    assert pm.num_used == 4 and all(pm.ref_counts[p] == 1 for p in restored)
    with pytest.raises(ValueError, match="still holds 2 pages"):
        pm.restore(child)
