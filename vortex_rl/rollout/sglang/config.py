"""`VortexBackendConfig`: the options of the ``vortex`` attention backend inside SGLang.

SGLang pickles its ``ServerArgs`` into the scheduler processes, and its fields are fixed when SGLang is
imported (a plugin cannot add one). The options therefore travel as one JSON object under the key
``"vortex"`` of the existing server argument ``--json-model-override-args``; the scheduler's
``ModelConfig`` keeps that dict (``model_config.model_override_args``), where the backend reads it::

    python -m sglang.launch_server --model-path Qwen/Qwen3-8B --attention-backend vortex --page-size 16 \\
        --json-model-override-args '{"vortex": {"flow": "block_sparse_attention", "budget_pages": 32}}'
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from vortex_rl.sparse import FLOWS, SparseConfig
from vortex_rl.sparse.backend import check_kernel_backend

OVERRIDE_KEY = "vortex"
# SGLang backends that can serve prefill and dense decode next to our sparse decode; "auto" picks fa3 on
# Hopper and triton elsewhere (both read the token-major NHD KV layout our paged view expects).
DENSE_BACKENDS = ("auto", "triton", "fa3", "flashinfer", "torch_native")
_SPARSE_FIELDS = tuple(f.name for f in dataclasses.fields(SparseConfig))


@dataclass(frozen=True)
class VortexBackendConfig:
    """How the ``vortex`` backend runs decode attention.

    Attributes
    ----------
    flow:
        A registered flow (``vortex_rl.sparse.list_flows()``); ``"dense"`` runs every decode through the
        dense backend.
    sparse:
        Page size, budget, sink/local pages, dense layers (``SparseConfig``). ``sparse.page_size`` must
        equal SGLang's ``--page-size``.
    dense_backend:
        SGLang backend for prefill/extend, for ``sparse.dense_layers`` and for layers our kernels do not
        cover (sliding window); one of ``DENSE_BACKENDS``.
    kernel_backend:
        Our kernels: ``"auto"`` (Triton on CUDA, the CPU kernels on CPU), ``"triton"``, ``"cpu"`` or ``"torch"``.
    """

    flow: str = "block_sparse_attention"
    sparse: SparseConfig = field(default_factory=SparseConfig)
    dense_backend: str = "auto"
    kernel_backend: str = "auto"

    def __post_init__(self) -> None:
        FLOWS.check_name(self.flow, "flow")
        if not isinstance(self.sparse, SparseConfig):
            raise TypeError(f"sparse must be a SparseConfig, got {type(self.sparse).__name__}")
        if self.dense_backend not in DENSE_BACKENDS:
            raise ValueError(f"dense_backend={self.dense_backend!r} is not one of {DENSE_BACKENDS}")
        check_kernel_backend(self.kernel_backend)

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "VortexBackendConfig":
        """From the flat JSON object: ``flow``, ``dense_backend``, ``kernel_backend`` and the
        ``SparseConfig`` fields (``page_size``, ``budget_pages``, ...)."""
        if not isinstance(options, Mapping):
            raise TypeError(f"vortex options must be a JSON object, got {type(options).__name__}: {options!r}")
        own = ("flow", "dense_backend", "kernel_backend")
        unknown = sorted(set(options) - set(own) - set(_SPARSE_FIELDS))
        if unknown:
            raise ValueError(f"unknown vortex option(s) {unknown}; accepted: {sorted(own + _SPARSE_FIELDS)}")
        sparse = SparseConfig(**{k: options[k] for k in _SPARSE_FIELDS if k in options})
        return cls(sparse=sparse, **{k: options[k] for k in own if k in options})

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object ``from_dict`` reads (tuples as lists)."""
        sparse = {k: _jsonable(v) for k, v in dataclasses.asdict(self.sparse).items()}
        return {"flow": self.flow, "dense_backend": self.dense_backend, "kernel_backend": self.kernel_backend, **sparse}

    @classmethod
    def from_override_args(cls, override_args: str | Mapping[str, Any] | None) -> "VortexBackendConfig":
        """From SGLang's ``json_model_override_args`` (string or parsed dict); defaults when absent."""
        if override_args is None:
            return cls()
        if isinstance(override_args, str):
            try:
                override_args = json.loads(override_args or "{}")
            except json.JSONDecodeError as exc:
                raise ValueError(f"--json-model-override-args is not valid JSON ({exc}): {override_args!r}") from None
        return cls.from_dict(override_args.get(OVERRIDE_KEY, {}))

    def merge_into_override_args(self, override_args: str | None = None) -> str:
        """``json_model_override_args`` carrying these options next to any existing overrides."""
        merged = json.loads(override_args) if override_args else {}
        merged[OVERRIDE_KEY] = self.to_dict()
        return json.dumps(merged)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value
