"""Decode steps captured in CUDA graphs, one per batch size, sharing one memory pool.

Inputs live in static buffers that every replay overwrites: token ids, positions, cache slots, the
page table ``[max_batch, max_pages_per_seq]`` and sequence lengths. ``FlowRunner.plan`` runs inside the
graph, so the per-step metadata every layer reads is derived on the device from those buffers.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

DecodeForward = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class DecodeGraphs:
    """CUDA graphs of one decode forward per batch size.

    Parameters
    ----------
    forward: the decode step, ``forward(inputs) -> hidden [rows, hidden]`` from device tensors
        ``input_ids``, ``positions``, ``slots`` ``[rows]`` int64, ``page_table`` ``[rows, width]`` and
        ``seq_lens`` ``[rows]`` int32; device ops only (``ModelRunner.decode_forward``).
    batch_sizes: the batch sizes to capture; none (every size above ``max_num_seqs``) captures nothing
        and every batch runs eagerly.
    max_pages_per_seq: page-table width of the buffers (the longest sequence's pages).
    scratch_page: the page padded rows attend to and write; ``page_size`` tokens per page.
    """

    def __init__(self, forward: DecodeForward, batch_sizes: tuple[int, ...], *, max_pages_per_seq: int,
                 scratch_page: int, page_size: int, device: torch.device):
        self.forward = forward
        self.batch_sizes = tuple(sorted(batch_sizes))
        self.scratch_page, self.page_size, self.device = scratch_page, page_size, device
        rows, width = (self.batch_sizes[-1] if self.batch_sizes else 0), max_pages_per_seq
        self.buffers = {
            "input_ids": torch.zeros(rows, dtype=torch.long, device=device),
            "positions": torch.zeros(rows, dtype=torch.long, device=device),
            "slots": torch.zeros(rows, dtype=torch.long, device=device),
            "page_table": torch.full((rows, width), -1, dtype=torch.int32, device=device),
            "seq_lens": torch.ones(rows, dtype=torch.int32, device=device),
        }
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.pool = None

    def fits(self, batch: int) -> bool:
        return bool(self.batch_sizes) and batch <= self.batch_sizes[-1]

    def rows_for(self, batch: int) -> int:
        """The smallest captured batch size that holds ``batch`` rows."""
        return self.batch_sizes[int(np.searchsorted(self.batch_sizes, batch))]

    def _forward(self, rows: int) -> torch.Tensor:
        return self.forward({name: buffer[:rows] for name, buffer in self.buffers.items()})

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every batch size, largest first so smaller graphs reuse the pool's memory."""
        # Every row starts as padding: it attends to and writes only the scratch page.
        self.buffers["page_table"][:, 0] = self.scratch_page
        self.buffers["slots"].fill_(self.scratch_page * self.page_size)
        for rows in reversed(self.batch_sizes):
            self._forward(rows)  # warm-up: compiles kernels, fills lazily built tensors
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.outputs[rows] = self._forward(rows)
            if self.pool is None:
                self.pool = graph.pool()
            self.graphs[rows] = graph
        torch.cuda.synchronize(self.device)

    def replay(self, host: dict[str, np.ndarray], batch: int,
               fill_ids: Callable[[torch.Tensor], object] | None = None) -> torch.Tensor:
        """Copy the host arrays of a decode step (``rows_for(batch)`` rows, any page-table width up to the
        buffers') into the static buffers and replay that graph; returns hidden states ``[batch, hidden]``.
        ``fill_ids(input_ids)``, when given, then writes the token ids the host does not know yet (overlap
        scheduling) into the ``input_ids`` buffer."""
        rows, width = host["page_table"].shape
        for name, buffer in self.buffers.items():
            value = torch.from_numpy(host[name])
            if self.device.type == "cuda":
                value = value.pin_memory()  # a pageable source may make the host wait for the stream
            if name == "page_table":
                buffer[:rows, :width].copy_(value, non_blocking=True)
                buffer[:rows, width:].fill_(-1)
            else:
                buffer[:rows].copy_(value, non_blocking=True)
        if fill_ids is not None:
            fill_ids(self.buffers["input_ids"][:rows])
        self.graphs[rows].replay()
        return self.outputs[rows][:batch]
