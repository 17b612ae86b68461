"""The embedded rollout engine: paged KV cache, continuous batching, sparse decode attention.

>>> from vortex_rl.rollout import Engine, EngineConfig, SamplingParams
>>> engine = Engine.from_pretrained("path/to/model", config=EngineConfig(flow="block_sparse_attention"))
>>> engine.generate(["1 + 1 ="], SamplingParams(temperature=0.6, max_new_tokens=64), n=8)
"""

from vortex_rl.rollout.config import EngineConfig
from vortex_rl.rollout.engine import Engine
from vortex_rl.rollout.sampling_params import SamplingParams
from vortex_rl.rollout.sequence import Completion
from vortex_rl.rollout.stats import EngineStats
from vortex_rl.rollout.weights import weight_buckets, weight_checksum

__all__ = ["Completion", "Engine", "EngineConfig", "EngineStats", "SamplingParams", "weight_buckets", "weight_checksum"]
