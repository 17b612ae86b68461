"""`SampledStep`: one step's sampled tokens, on the device and on their way to the host.

Overlap scheduling (``EngineConfig.overlap_schedule``) launches step ``t + 1`` before reading step
``t``'s tokens: the next step's input ids are gathered on the device from ``tokens``, while the host
copy (pinned memory, an event marking its end) is read one step later. Without overlap a step's tokens
are read right after it is launched; both modes go through this class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vortex_rl.rollout.sampler import SamplerOutput
from vortex_rl.rollout.sequence import Sequence


@dataclass
class SampledStep:
    """Tokens sampled for ``seqs`` (row order); ``seqs[i]``'s token stands at ``indices[i]`` of its
    ``token_ids`` as ``PENDING_TOKEN`` until ``read`` is called.

    Attributes
    ----------
    tokens: ``[rows]`` int64 on the device: where the next step takes these sequences' input ids.
    rows: ``seq_id -> row`` of ``tokens``.
    host: ``tokens``, ``logprobs`` and (with top log-probs) ``top_ids`` / ``top_logprobs``, copied to
        host memory without blocking; ``ready`` (CUDA only) is recorded after the copies.
    """

    seqs: list[Sequence]
    indices: list[int]
    tokens: torch.Tensor
    rows: dict[int, int]
    host: dict[str, torch.Tensor]
    ready: torch.cuda.Event | None

    @classmethod
    def launch(cls, seqs: list[Sequence], indices: list[int], out: SamplerOutput) -> "SampledStep":
        """Start copying ``out`` to the host: the values of ``seqs``' pending tokens at ``indices``
        (``Scheduler.sampled``)."""
        device = {"tokens": out.tokens, "logprobs": out.logprobs}
        if out.top_ids is not None:
            device.update(top_ids=out.top_ids, top_logprobs=out.top_logprobs)
        ready = None
        if out.tokens.device.type == "cuda":
            host = {name: torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for name, t in device.items()}
            for name, t in device.items():
                host[name].copy_(t, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(out.tokens.device))  # not the thread's current device
        else:
            host = device
        return cls(seqs, indices, out.tokens,
                   {seq.seq_id: row for row, seq in enumerate(seqs)}, host, ready)

    def read(self) -> tuple[list[int], list[float], list[dict[int, float] | None]]:
        """Wait for the host copy; returns per row the token, its log-prob and its top log-probs
        (``{token_id: logprob}`` of the ``SamplingParams.logprobs`` most likely tokens, or ``None``)."""
        if self.ready is not None:
            self.ready.synchronize()
        tokens, logprobs = self.host["tokens"].tolist(), self.host["logprobs"].tolist()
        if "top_ids" not in self.host:
            return tokens, logprobs, [None] * len(self.seqs)
        ids, values = self.host["top_ids"].tolist(), self.host["top_logprobs"].tolist()
        tops = [
            {t: v for t, v in zip(ids[i][: s.params.logprobs], values[i][: s.params.logprobs]) if v > float("-inf")}
            if s.params.logprobs else None
            for i, s in enumerate(self.seqs)
        ]
        return tokens, logprobs, tops
