"""`EngineConfig`: everything the rollout engine needs besides the model and the sampling parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from vortex_rl.devices import check_device_name, check_dtype_name
from vortex_rl.sparse import FLOWS, SparseConfig
from vortex_rl.sparse.backend import check_kernel_backend


@dataclass
class EngineConfig:
    """Configuration of the embedded rollout engine.

    Attributes
    ----------
    flow:
        Decode-attention flow: ``"dense"`` or any registered vFlow (``vortex_rl.sparse.list_flows()``).
        Prefill is always dense.
    sparse:
        Page size, page budget, sink/local pages and dense layers of the flow (``SparseConfig``). Its
        ``page_size`` is the KV page size of the cache.
    max_num_seqs:
        Sequences decoded together at most (the largest decode batch).
    max_num_batched_tokens:
        Token budget of one prefill step; longer prompts are prefilled in chunks of at most this size.
    max_model_len:
        Longest sequence (prompt + generated tokens); ``None`` takes the model's
        ``max_position_embeddings``. It fixes the page-table width of the decode step, so set it no
        larger than needed.
    num_pages:
        KV pages to allocate. Overrides the memory budget below when given.
    kv_cache_memory_gb:
        Memory for the KV cache and the flow's per-page state, in GiB. Used when ``num_pages`` is None.
    swap_space_gb:
        Host memory, in GiB, for the KV pages (and flow state) of preempted sequences, which are copied
        there bit for bit and back when they resume (pinned memory on CUDA). A preemption that would
        exceed it raises ``RuntimeError``; ``0`` forbids preemption. ``EngineStats.peak_swapped_pages``
        shows what a workload used. Used by the embedded engine only (``rollout.engine=sglang`` preempts
        its own way).
    gpu_memory_utilization:
        On CUDA, when neither ``num_pages`` nor ``kv_cache_memory_gb`` is given: the fraction of the
        device's memory the engine may use in all (weights, activations, CUDA graphs and KV cache).
        On CPU the default budget is 1 GiB. The cache never exceeds what ``max_num_seqs`` sequences of
        ``max_model_len`` tokens can use.
    dtype:
        Weights, activations and KV cache: ``"auto"`` (bfloat16 on CUDA, float32 on CPU), ``"float32"``,
        ``"float16"`` or ``"bfloat16"``.
    device:
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    enforce_eager:
        Run decode steps eagerly instead of replaying CUDA graphs.
    cuda_graph_batch_sizes:
        Decode batch sizes to capture; ``None`` gives 1, 2, 4, 8 and multiples of 16 up to
        ``max_num_seqs``. A batch runs in the smallest captured size that holds it (eagerly if none).
    kernel_backend:
        ``"auto"`` (Triton on CUDA, the CPU kernels on CPU), ``"triton"``, ``"cpu"`` or ``"torch"`` (the
        plain-torch references); ``vortex_rl.sparse.backend`` says what each set holds.
    overlap_schedule:
        Schedule and launch each step before reading the tokens the previous one sampled (as SGLang's
        overlap scheduler does), so the host's work for step ``t + 1`` (scheduling, inputs, sampling
        parameters) runs while the device computes step ``t``. The next input ids are taken from the
        sampled tokens on the device. A sample that reaches its length gives its slot and pages back
        when its last token is sampled, as without overlap. One that stops on a token (EOS, ``stop``)
        is only known to once that token is read: it runs one extra step whose token is discarded
        (``EngineStats.discarded_tokens``) and holds its slot and pages a step longer, so when
        requests wait for a slot, one may be admitted a step later. Outputs are the same either way up
        to the rounding of differently sized batches (identical when no sample stops on a token
        while requests wait).
    seed:
        Seeds the per-request seeds of requests whose ``SamplingParams.seed`` is None, so a run of the
        engine is reproducible.
    """

    flow: str = "block_sparse_attention"
    sparse: SparseConfig = field(default_factory=SparseConfig)
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int | None = None
    num_pages: int | None = None
    kv_cache_memory_gb: float | None = None
    swap_space_gb: float = 4.0
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    device: str = "auto"
    enforce_eager: bool = False
    cuda_graph_batch_sizes: tuple[int, ...] | None = None
    kernel_backend: str = "auto"
    overlap_schedule: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        FLOWS.check_name(self.flow, "flow")
        if not isinstance(self.sparse, SparseConfig):
            raise TypeError(f"sparse must be a SparseConfig, got {type(self.sparse).__name__}")
        _positive_int("max_num_seqs", self.max_num_seqs)
        _positive_int("max_num_batched_tokens", self.max_num_batched_tokens)
        for name in ("max_model_len", "num_pages"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.kv_cache_memory_gb is not None and not self.kv_cache_memory_gb > 0:
            raise ValueError(f"kv_cache_memory_gb={self.kv_cache_memory_gb!r} must be > 0 (GiB) or None")
        if isinstance(self.swap_space_gb, bool) or not isinstance(self.swap_space_gb, (int, float)) \
                or not self.swap_space_gb >= 0:
            raise ValueError(f"swap_space_gb={self.swap_space_gb!r} must be a number >= 0 (GiB of host memory)")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization={self.gpu_memory_utilization!r} must be in (0, 1]")
        check_dtype_name(self.dtype, "dtype")
        check_device_name(self.device, "device")
        check_kernel_backend(self.kernel_backend)
        if self.cuda_graph_batch_sizes is not None:
            sizes = tuple(self.cuda_graph_batch_sizes)
            if not sizes or not all(isinstance(s, int) and s >= 1 for s in sizes):
                raise ValueError(f"cuda_graph_batch_sizes={sizes!r} must be a non-empty tuple of positive ints")
            self.cuda_graph_batch_sizes = tuple(sorted(set(sizes)))
        if not isinstance(self.overlap_schedule, bool):
            raise ValueError(f"overlap_schedule={self.overlap_schedule!r} must be True or False")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an int >= 0")

    @property
    def page_size(self) -> int:
        return self.sparse.page_size

    def graph_batch_sizes(self) -> tuple[int, ...]:
        """Decode batch sizes captured in CUDA graphs, ascending, none above ``max_num_seqs``."""
        if self.cuda_graph_batch_sizes is not None:
            return tuple(s for s in self.cuda_graph_batch_sizes if s <= self.max_num_seqs)
        sizes = [1, 2, 4, 8] + list(range(16, self.max_num_seqs + 1, 16)) + [self.max_num_seqs]
        return tuple(sorted({s for s in sizes if s <= self.max_num_seqs}))


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int")
