"""EngineConfig validation and derived values."""

from __future__ import annotations

import pytest

from vortex_rl.rollout import EngineConfig
from vortex_rl.sparse import SparseConfig


@pytest.mark.parametrize("bad", [
    dict(flow="no_such_flow"), dict(max_num_seqs=0), dict(max_num_batched_tokens=-1), dict(max_model_len=0),
    dict(num_pages=0), dict(kv_cache_memory_gb=0), dict(swap_space_gb=-1),
    dict(swap_space_gb="4"), dict(gpu_memory_utilization=1.5), dict(dtype="int8"),
    dict(device="tpu"), dict(kernel_backend="cuda"), dict(cuda_graph_batch_sizes=(0, 4)), dict(seed=-1),
])
def test_bad_values_raise_naming_the_field(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        EngineConfig(**bad)


def test_sparse_must_be_a_sparse_config():
    with pytest.raises(TypeError, match="SparseConfig"):
        EngineConfig(sparse={"budget_pages": 32})


def test_defaults_follow_the_issue():
    config = EngineConfig()
    assert config.flow == "block_sparse_attention" and config.page_size == 16
    assert config.sparse == SparseConfig() and config.sparse.budget_pages == 32


def test_graph_batch_sizes_are_bucketed_and_capped():
    assert EngineConfig(max_num_seqs=40).graph_batch_sizes() == (1, 2, 4, 8, 16, 32, 40)
    assert EngineConfig(max_num_seqs=8, cuda_graph_batch_sizes=(16, 2, 8)).graph_batch_sizes() == (2, 8)
