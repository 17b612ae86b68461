"""Decode steps captured in CUDA graphs, one per batch size, sharing one memory pool.

Inputs live in static buffers that every replay overwrites: token ids, positions, cache slots, the
page table ``[max_batch, max_pages_per_seq]`` and sequence lengths. ``FlowRunner.plan`` runs inside the
graph, so the per-step metadata every layer reads is derived on the device from those buffers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from vortex_rl.rollout.model_runner import ModelRunner
    from vortex_rl.rollout.scheduler import ScheduledBatch


class DecodeGraphs:
    def __init__(self, runner: "ModelRunner", batch_sizes: tuple[int, ...]):
        self.runner = runner
        self.batch_sizes = tuple(sorted(batch_sizes))
        rows, width, device = self.batch_sizes[-1], runner.max_pages_per_seq, runner.device
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
        return batch <= self.batch_sizes[-1]

    def _forward(self, rows: int) -> torch.Tensor:
        return self.runner.decode_forward({name: buffer[:rows] for name, buffer in self.buffers.items()})

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every batch size, largest first so smaller graphs reuse the pool's memory."""
        # Every row starts as padding: it attends to and writes only the scratch page.
        self.buffers["page_table"][:, 0] = self.runner.scratch_page
        self.buffers["slots"].fill_(self.runner.scratch_page * self.runner.page_size)
        for rows in reversed(self.batch_sizes):
            self._forward(rows)  # warm-up: compiles kernels, fills lazily built tensors
            torch.cuda.synchronize(self.runner.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.outputs[rows] = self._forward(rows)
            if self.pool is None:
                self.pool = graph.pool()
            self.graphs[rows] = graph
        torch.cuda.synchronize(self.runner.device)

    def run(self, batch: "ScheduledBatch") -> torch.Tensor:
        """Replay the smallest graph that holds ``batch``; returns hidden states ``[batch, hidden]``."""
        n = len(batch.seqs)
        rows = self.batch_sizes[int(np.searchsorted(self.batch_sizes, n))]
        width = max(len(seq.page_table) for seq in batch.seqs)
        host = self.runner.decode_inputs(batch, rows, width)
        for name, buffer in self.buffers.items():
            value = torch.from_numpy(host[name])
            if name == "page_table":
                buffer[:rows, :width].copy_(value, non_blocking=True)
                buffer[:rows, width:].fill_(-1)
            else:
                buffer[:rows].copy_(value, non_blocking=True)
        self.graphs[rows].replay()
        return self.outputs[rows][:n]
