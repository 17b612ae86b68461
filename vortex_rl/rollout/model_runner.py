"""`ModelRunner`: the model, its paged KV cache, and the inputs of every step.

The cache is one tensor per kind for all layers, ``k``/``v`` ``[num_layers, num_pages + 1, kv_heads,
page_size, head_dim]`` plus the flow's per-page state (``FlowRunner.allocate_state``) laid out the same
way. The extra last page is a scratch page: padded rows of a CUDA-graph batch write there.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from vortex_rl.devices import to_device
from vortex_rl.rollout.config import EngineConfig
from vortex_rl.rollout.cuda_graphs import DecodeGraphs
from vortex_rl.rollout.forward_batch import ForwardBatch
from vortex_rl.rollout.loader import load_weights
from vortex_rl.rollout.memory import decide_num_pages
from vortex_rl.rollout.models import DecoderForCausalLM, ModelArch
from vortex_rl.rollout.page_manager import PageManager, pages_for
from vortex_rl.rollout.sampling_params import SamplingParams
from vortex_rl.rollout.scheduler import ScheduledBatch
from vortex_rl.rollout.sampled_step import SampledStep
from vortex_rl.rollout.sequence import PENDING_TOKEN, Sequence
from vortex_rl.sparse import FlowRunner


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class ModelRunner:
    def __init__(self, arch: ModelArch, config: EngineConfig, *, device: torch.device, dtype: torch.dtype,
                 max_model_len: int):
        self.arch, self.config, self.device, self.dtype = arch, config, device, dtype
        if device.type == "cuda" and device.index is not None:
            # Triton launches and graph capture use the current CUDA device, not their tensors' device.
            torch.cuda.set_device(device)
        self.page_size = config.page_size
        self.max_model_len = max_model_len
        self.max_pages_per_seq = pages_for(max_model_len, self.page_size)
        self.flow_runner = FlowRunner(
            config.flow, config.sparse, num_q_heads=arch.num_heads, num_kv_heads=arch.num_kv_heads,
            head_dim=arch.head_dim, kernel_backend=config.kernel_backend,
        )
        with torch.device(device), default_dtype(dtype):
            self.model = DecoderForCausalLM(arch, self.flow_runner, max_positions=max_model_len)
        self.kv: dict[str, torch.Tensor] | None = None
        self.num_pages: int | None = None
        self.graphs: DecodeGraphs | None = None

    # ------------------------------------------------------------------------------------------- weights
    def load_weights(self, weights, *, strict: bool, atomic: bool) -> int:
        return load_weights(self.model, weights, strict=strict, atomic=atomic)

    # ---------------------------------------------------------------------------------------------- cache
    @property
    def scratch_page(self) -> int:
        return self.num_pages

    def page_bytes(self) -> int:
        """Bytes of one page across all layers: K, V and the flow's state."""
        a = self.arch
        rows = 2 * self.page_size + sum(r for r, _ in self.flow_runner.state_shapes.values())
        return a.num_layers * a.num_kv_heads * a.head_dim * rows * torch.finfo(self.dtype).bits // 8

    def allocate_kv_cache(self, num_pages: int | None = None, *, capture_graphs: bool = True) -> int:
        """Allocate the cache (``num_pages``, or as many as the memory budget allows) and, on CUDA
        unless ``enforce_eager``, capture the decode graphs. Returns the number of pages."""
        if num_pages is None:
            num_pages = decide_num_pages(self.config, page_bytes=self.page_bytes(),
                                         max_pages_per_seq=self.max_pages_per_seq, vocab_size=self.arch.vocab_size,
                                         device=self.device, warmup_prefill=self._warmup_prefill)
        self.num_pages = num_pages
        layers = self.arch.num_layers
        shape = (layers, num_pages + 1, self.arch.num_kv_heads, self.page_size, self.arch.head_dim)
        kv = {"k": torch.zeros(shape, dtype=self.dtype, device=self.device),
              "v": torch.zeros(shape, dtype=self.dtype, device=self.device)}
        state = self.flow_runner.allocate_state(layers * (num_pages + 1), dtype=self.dtype, device=self.device)
        kv.update({name: t.view(layers, num_pages + 1, *t.shape[1:]) for name, t in state.items()})
        self.kv = kv
        for i, attn in enumerate(self.model.attention_layers()):
            attn.cache = {name: t[i] for name, t in kv.items()}
        if capture_graphs and self.device.type == "cuda" and not self.config.enforce_eager:
            self.graphs = DecodeGraphs(self.decode_forward, self.config.graph_batch_sizes(),
                                       max_pages_per_seq=self.max_pages_per_seq, scratch_page=self.scratch_page,
                                       page_size=self.page_size, device=self.device)
            self.graphs.capture()
        return num_pages

    def _warmup_prefill(self) -> None:
        """One prefill of ``max_num_batched_tokens`` tokens into a temporary cache, then free it: how
        ``decide_num_pages`` measures the peak activation memory on CUDA."""
        tokens = min(self.config.max_num_batched_tokens, self.max_model_len)
        pages = PageManager(pages_for(tokens, self.page_size), self.page_size)
        try:
            self.allocate_kv_cache(pages.num_pages, capture_graphs=False)
            seq = Sequence(0, [0] * tokens, SamplingParams(), seed=0, prompt_index=0, sample_index=0,
                           max_pages=self.max_pages_per_seq)
            pages.prepare_write(seq, tokens)
            self.run(ScheduledBatch(True, [seq], [tokens]))
        finally:
            self.free_kv_cache()

    def free_kv_cache(self) -> None:
        for attn in self.model.attention_layers():
            attn.cache = None
        self.kv, self.graphs = None, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def copy_pages(self, copies: list[tuple[int, int]]) -> None:
        """Copy whole pages (K, V and flow state, every layer): ``(src, dst)`` pairs."""
        src, dst = self._tensor([s for s, _ in copies]), self._tensor([d for _, d in copies])
        for t in self.kv.values():
            t[:, dst] = t[:, src]

    def swap_out(self, seq: Sequence, pages: list[int]) -> None:
        """Copy ``pages`` (K, V and flow state, every layer) to ``seq.host_kv``, bit for bit.

        On CUDA the copies go to pinned memory without blocking, on the current stream: every later use
        of these device pages (a new owner's writes, a swap-in) is queued behind them on that stream, and
        PyTorch's pinned-memory cache keeps a host buffer alive until its copy has run."""
        index = self._tensor(pages)
        pinned = self.device.type == "cuda"
        host = {}
        for name, t in self.kv.items():
            gathered = t[:, index]
            if gathered.device.type == "cpu":
                host[name] = gathered  # already a private host copy
            else:
                host[name] = torch.empty(gathered.shape, dtype=t.dtype, pin_memory=pinned)
                host[name].copy_(gathered, non_blocking=True)
        seq.host_kv = host

    def swap_in(self, seq: Sequence, pages: list[int]) -> None:
        """Copy ``seq.host_kv`` into the fresh device ``pages`` (same logical order) and drop the host copy."""
        if seq.host_kv is None or any(h.shape[1] != len(pages) for h in seq.host_kv.values()):
            held = None if seq.host_kv is None else {k: h.shape[1] for k, h in seq.host_kv.items()}
            raise ValueError(f"sequence {seq.seq_id}: host pages {held} do not match {len(pages)} device pages")
        index = self._tensor(pages)
        for name, t in self.kv.items():
            t[:, index] = seq.host_kv[name].to(self.device, non_blocking=True)
        seq.host_kv = None

    # ---------------------------------------------------------------------------------------------- steps
    @torch.inference_mode()
    def run(self, batch: ScheduledBatch, feed: SampledStep | None = None) -> torch.Tensor:
        """Run one step; returns logits ``[rows, vocab]`` float32 for the sequences that sample
        (``batch.samples``), in batch order. A decoding sequence whose last token is still pending
        (``PENDING_TOKEN``) takes its input id from ``feed``, the step that sampled it, on the device."""
        if self.kv is None:
            raise RuntimeError("the KV cache is not allocated: call Engine.wake() after sleep()")
        # Outside any CUDA graph, in stream order: swap-outs first, as their pages may be taken again in
        # this step; copy-on-write before swap-ins, so no page a copy reads is overwritten first.
        for seq, pages in batch.swap_out:
            self.swap_out(seq, pages)
        if batch.copies:
            self.copy_pages(batch.copies)
        for seq, pages in batch.swap_in:
            self.swap_in(seq, pages)
        if batch.is_prefill:
            hidden = self._run_prefill(batch)
        else:
            hidden = self._run_decode(batch, feed)
        return self.model.compute_logits(hidden)

    def _tensor(self, values, dtype=torch.long) -> torch.Tensor:
        return to_device(torch.as_tensor(values, dtype=dtype), self.device)

    def _run_prefill(self, batch: ScheduledBatch) -> torch.Tensor:
        ids, positions, slots, prefix_index, last_rows = [], [], [], [], []
        num_tokens, ps = 0, self.page_size
        for seq, chunk, samples in zip(batch.seqs, batch.chunk_lens, batch.samples):
            start = seq.num_cached_tokens
            table = seq.page_table.array
            pos = np.arange(start, start + chunk)
            ids.append(np.asarray(seq.token_ids[start:start + chunk], dtype=np.int64))
            positions.append(pos)
            slots.append(table[pos // ps].astype(np.int64) * ps + pos % ps)
            prefix = np.arange(start)
            prefix_index.append(
                (self._tensor(table[prefix // ps]), self._tensor(prefix % ps)) if start > 0 else None
            )
            num_tokens += chunk
            if samples:
                last_rows.append(num_tokens - 1)
        fb = ForwardBatch(True, self._tensor(np.concatenate(slots)), query_lens=list(batch.chunk_lens),
                          prefix_index=prefix_index)
        hidden = self.model(self._tensor(np.concatenate(ids)), self._tensor(np.concatenate(positions)), fb)
        return hidden[self._tensor(last_rows)]

    def decode_inputs(self, batch: ScheduledBatch, rows: int, width: int) -> dict[str, np.ndarray]:
        """Host arrays of a decode step padded to ``rows`` x ``width`` pages; padded rows attend to and
        write the scratch page only."""
        ps, seqs, n = self.page_size, batch.seqs, len(batch.seqs)
        positions = np.zeros(rows, dtype=np.int64)
        positions[:n] = np.fromiter((len(seq.token_ids) for seq in seqs), np.int64, n) - 1
        ids = np.zeros(rows, dtype=np.int64)
        ids[:n] = np.fromiter((seq.token_ids[-1] for seq in seqs), np.int64, n)
        table = np.empty((rows, width), dtype=np.int32)
        table[n:] = -1
        table[n:, 0] = self.scratch_page
        for row, seq in zip(table, seqs):  # row by row: half the time of stacking slices
            row[:] = seq.page_table.array[:width]
        slots = table[np.arange(rows), positions // ps].astype(np.int64) * ps + positions % ps
        seq_lens = (positions + 1).astype(np.int32)
        return {"input_ids": ids, "positions": positions, "slots": slots, "page_table": table, "seq_lens": seq_lens}

    def _run_decode(self, batch: ScheduledBatch, feed: SampledStep | None) -> torch.Tensor:
        n = len(batch.seqs)
        width = max(len(seq.page_table) for seq in batch.seqs)
        fill = self._pending_ids(batch, feed)
        if self.graphs is not None and self.graphs.fits(n):
            return self.graphs.replay(self.decode_inputs(batch, self.graphs.rows_for(n), width), n, fill_ids=fill)
        host = self.decode_inputs(batch, n, width)
        dtypes = {"page_table": torch.int32, "seq_lens": torch.int32}
        inputs = {k: self._tensor(v, dtypes.get(k, torch.long)) for k, v in host.items()}
        if fill is not None:
            fill(inputs["input_ids"])
        return self.decode_forward(inputs)

    def _pending_ids(self, batch: ScheduledBatch, feed: SampledStep | None):
        """``None`` when every input id is known on the host; else a function that writes the pending ones
        (``feed.tokens`` rows) into a device ``input_ids`` tensor, in stream order after ``feed``'s step."""
        dst, src = [], []
        for i, seq in enumerate(batch.seqs):
            if seq.token_ids[-1] == PENDING_TOKEN:
                if feed is None or seq.seq_id not in feed.rows:
                    raise RuntimeError(f"sequence {seq.seq_id}: its last token is pending but not in the step "
                                       "in flight (a step was read out of order)")
                dst.append(i)
                src.append(feed.rows[seq.seq_id])
        if not dst:
            return None
        if dst == src == list(range(len(dst))):  # steady decoding: the same sequences in the same rows
            return lambda ids: ids[: len(dst)].copy_(feed.tokens[: len(dst)])
        dst_t, src_t = self._tensor(dst), self._tensor(src)
        return lambda ids: ids.index_copy_(0, dst_t, feed.tokens.index_select(0, src_t))

    def decode_forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One decode forward from device tensors (``decode_inputs`` keys): plans the step once, then
        runs every layer. Device ops only, so CUDA graphs capture it."""
        ctx = self.flow_runner.plan(inputs["page_table"], inputs["seq_lens"])
        batch = ForwardBatch(False, inputs["slots"], flow_ctx=ctx)
        return self.model(inputs["input_ids"], inputs["positions"], batch)
