"""Split-KV for decode attention: how many programs share one (request, KV head), and their merge.

Decode attention runs one program per (request, KV head). Fewer programs than streaming
multiprocessors leave most of the GPU idle, so the page list is cut into ``num_splits`` contiguous
chunks whose partial states ``(o, lse)`` are merged afterwards. The grid's split count depends on
shapes and the device's SM count only (no host sync, so a decode step stays capturable in a CUDA
graph); the kernel then sizes each request's splits from its real length (at least
``MIN_BLOCKS_PER_SPLIT`` blocks each), so a short request in a wide page table takes one or two
splits instead of piling its pages into the first ones.
"""

from functools import lru_cache

import torch

from vortex_rl.kernels._triton import launch, next_pow2
from vortex_rl.kernels.merge_states import _merge_splits_kernel

# A split must stream enough blocks to amortise writing and merging its partial state.
MIN_BLOCKS_PER_SPLIT = 2
# Programs aimed for per SM when splitting: two co-resident programs keep loads in flight.
PROGRAMS_PER_SM = 2
# Most splits of one (request, KV head): the merge reads this many partial states at most, with one
# compiled width for every batch size.
MAX_SPLITS = 16


@lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of CUDA ``device`` (cached per device)."""
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


# A split count within this factor of the best modelled time is taken if it is smaller (fewer partial
# states to write and merge).
SPLIT_SLACK = 1.1


def split_count_for(programs: int, num_blocks: int, sms: int, *, min_blocks: int, max_splits: int) -> int:
    """Splits per row for ``programs`` rows of ``num_blocks`` blocks on ``sms`` SMs (pure; see below).

    ``PROGRAMS_PER_SM * sms`` programs run at once (a wave). Cutting every row into ``s`` splits makes
    ``programs * s`` programs of ``1 / s`` the work, which take ``ceil(programs * s / slots) / s``
    waves of a whole row: the fewest splits (a power of two) within ``SPLIT_SLACK`` of the best win. So a batch far
    below the GPU splits until it fills it, and one just above a wave (``programs = 300`` on 132 SMs
    takes 2 waves, half the second one idle) splits to even out its tail; each split keeps at least
    ``min_blocks`` blocks.
    """
    slots = PROGRAMS_PER_SM * sms
    limit = max(1, min(max_splits, num_blocks // max(min_blocks, 1)))
    # Powers of two only: the kernels cut a row into whole blocks per split, so a count that does not
    # divide the blocks leaves splits empty (15 splits of 16 blocks would run as 8).
    counts = [1 << i for i in range(limit.bit_length()) if 1 << i <= limit]
    waves = [-(-max(programs, 1) * s // slots) / s for s in counts]
    best = min(waves)
    return next(s for s, w in zip(counts, waves) if w <= best * SPLIT_SLACK)


def choose_num_splits(batch: int, kv_heads: int, num_blocks: int, device: torch.device) -> int:
    """Splits per (request, KV head) for ``num_blocks`` blocks of pages each; 1 off CUDA.

    :func:`split_count_for` on the device's SM count, at least ``MIN_BLOCKS_PER_SPLIT`` blocks per split.
    """
    if device.type != "cuda":
        return 1
    return split_count_for(batch * kv_heads, num_blocks, sm_count(device), min_blocks=MIN_BLOCKS_PER_SPLIT,
                           max_splits=MAX_SPLITS)


def grid_splits(num_splits: int, num_blocks: int) -> int:
    """Splits per (request, KV head) in the launch grid when ``num_splits`` are asked for a page list of
    ``num_blocks`` blocks: at most the blocks and ``MAX_SPLITS``."""
    return max(1, min(num_splits, num_blocks, MAX_SPLITS))


def request_splits(grid: int, blocks: int) -> int:
    """Splits that hold work for one request of ``blocks`` blocks in a grid of ``grid`` splits: the rule
    ``paged_decode._paged_decode_kernel`` applies in each program (``MIN_BLOCKS_PER_SPLIT`` blocks a split
    at least, whole blocks per split, so 5 blocks in 3 splits run as 2 + 2 + 1), here on the host for the
    benchmarks that name what a launch really did. The other splits write an empty state."""
    splits = max(1, min(grid, -(-blocks // MIN_BLOCKS_PER_SPLIT)))
    per_split = -(-blocks // splits)
    return -(-blocks // per_split)


def check_outputs(q: torch.Tensor, out: torch.Tensor | None, lse: torch.Tensor | None) -> None:
    """``out`` must be a contiguous ``q``-shaped tensor of ``q.dtype``; ``lse`` contiguous float32 ``q.shape[:2]``."""
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous()):
        raise ValueError(
            f"out must be a contiguous {q.dtype} tensor of shape {tuple(q.shape)}, got {out.dtype} "
            f"{tuple(out.shape)} (contiguous={out.is_contiguous()})"
        )
    if lse is not None and (lse.shape != q.shape[:2] or lse.dtype != torch.float32 or not lse.is_contiguous()):
        raise ValueError(
            f"lse must be a contiguous float32 tensor of shape {tuple(q.shape[:2])}, got {lse.dtype} "
            f"{tuple(lse.shape)}"
        )


def split_outputs(
    q: torch.Tensor, num_splits: int, out: torch.Tensor | None, lse: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(out, lse, o_target, lse_target)``: the final outputs and where the kernel writes.

    The targets are ``[batch, q_heads, num_splits, head_dim]`` / ``[batch, q_heads, num_splits]``:
    fp32 partial buffers when splitting, else views of the final outputs.
    """
    check_outputs(q, out, lse)
    batch, q_heads, head_dim = q.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format) if out is None else out
    lse = torch.empty(batch, q_heads, dtype=torch.float32, device=q.device) if lse is None else lse
    if num_splits == 1:
        return out, lse, out.unsqueeze(2), lse.unsqueeze(2)
    o_part = torch.empty(batch, q_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
    lse_part = torch.empty(batch, q_heads, num_splits, dtype=torch.float32, device=q.device)
    return out, lse, o_part, lse_part


def finish_splits(out: torch.Tensor, lse: torch.Tensor, o_part: torch.Tensor, lse_part: torch.Tensor) -> None:
    """Merge the partial states of :func:`split_outputs` (``num_splits > 1``) into ``out`` / ``lse``."""
    num_splits = o_part.shape[2]
    batch, q_heads, head_dim = out.shape
    rows = batch * q_heads
    o_part, lse_part = o_part.view(rows, num_splits, head_dim), lse_part.view(rows, num_splits)
    out, lse = out.view(rows, head_dim), lse.view(rows)
    # The merge kernel of merge_states, launched here so record_launches sees it.
    launch(
        _merge_splits_kernel, (rows,),
        o_part_ptr=o_part, lse_part_ptr=lse_part, o_ptr=out, lse_ptr=lse,
        num_splits=num_splits, head_dim=head_dim,
        stride_pr=o_part.stride(0), stride_ps=o_part.stride(1), stride_lr=lse_part.stride(0),
        stride_o=out.stride(0),
        BLOCK_S=MAX_SPLITS, BLOCK_D=next_pow2(head_dim),  # one width for every split count: no recompile
    )
