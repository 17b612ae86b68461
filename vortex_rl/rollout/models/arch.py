"""`ModelArch`: the decoder geometry and switches read from a Hugging Face config."""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED_MODEL_TYPES = ("qwen3", "qwen2", "llama")


def rope_parameters(hf_config) -> dict:
    """The rope settings as one flat dict with ``rope_theta`` and ``rope_type`` (transformers 4 and 5)."""
    params = getattr(hf_config, "rope_parameters", None)
    if params is None:
        params = dict(getattr(hf_config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    params = dict(params)
    if "rope_theta" not in params:
        raise NotImplementedError(f"per-layer-type rope parameters are not supported: {params}")
    params["rope_type"] = params.get("rope_type", params.get("type", "default"))
    return params


@dataclass(frozen=True)
class ModelArch:
    """Decoder-only transformer with RMSNorm, SwiGLU MLP, rotary GQA attention.

    Switches cover the supported families: Qwen3 (``qk_norm``), Qwen2 (``qkv_bias``), Llama
    (``attention_bias`` on q/k/v/o, ``mlp_bias``).
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    rope: dict
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool

    @classmethod
    def from_hf_config(cls, config) -> "ModelArch":
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise NotImplementedError(
                f"model_type={model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}"
            )
        act = getattr(config, "hidden_act", "silu")
        if act != "silu":
            raise NotImplementedError(f"hidden_act={act!r} is not supported; only 'silu' (SwiGLU)")
        layer_types = getattr(config, "layer_types", None) or ()
        if getattr(config, "use_sliding_window", False) or any(t != "full_attention" for t in layer_types):
            raise NotImplementedError(f"layer_types={sorted(set(layer_types))}: only full attention is supported")
        heads = config.num_attention_heads
        attention_bias = bool(getattr(config, "attention_bias", False))
        return cls(
            model_type=model_type,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            rms_norm_eps=config.rms_norm_eps,
            max_position_embeddings=config.max_position_embeddings,
            rope=rope_parameters(config),
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            o_bias=False if model_type == "qwen2" else attention_bias,
            mlp_bias=bool(getattr(config, "mlp_bias", False)),
            qk_norm=model_type == "qwen3",
        )
