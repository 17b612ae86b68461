"""Supported model families (``ModelArch.from_hf_config`` names them)."""

from vortex_rl.rollout.models.arch import SUPPORTED_MODEL_TYPES, ModelArch, rope_parameters
from vortex_rl.rollout.models.decoder import DecoderForCausalLM

__all__ = ["DecoderForCausalLM", "ModelArch", "SUPPORTED_MODEL_TYPES", "rope_parameters"]
