"""The weight checksum through SGLang: our action in SGLang's real weight checker, carried over SGLang's
wire types, equals ``vortex_rl.rollout.weight_checksum`` of the same weights (also under TP sharding)."""

from __future__ import annotations

import pytest
import torch

from tests.rollout.sglang.sglang_env import import_sglang

import_sglang()

import msgspec  # noqa: E402  (an SGLang dependency: installed with it by make test-sglang)

from sglang.srt.managers.io_struct import ChecksumInfo  # noqa: E402
from sglang.srt.managers.scheduler_components.weight_updater import _merge_checksum_payloads  # noqa: E402
from sglang.srt.plugins.hook_registry import HookRegistry  # noqa: E402
from sglang.srt.runtime_context import get_parallel  # noqa: E402
from sglang.srt.utils.msgspec_utils import msgspec_to_builtins  # noqa: E402
from sglang.srt.utils.weight_checker import WeightChecker  # noqa: E402

from vortex_rl.rollout import weight_checksum  # noqa: E402
from vortex_rl.rollout.sglang import plugin  # noqa: E402
from vortex_rl.rollout.sglang.weight_sums import PARAM_SUMS_ACTION, combine_param_sums, tensor_sum  # noqa: E402


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4)).to(torch.bfloat16)


def _answer(model: torch.nn.Module, *, tp_rank: int = 0, tp_size: int = 1, dp_rank: int = 0) -> dict:
    """One rank's answer as the tokenizer manager hands it back: SGLang's checker with our action,
    SGLang's role merge, its wire struct, then plain Python."""
    with get_parallel().override(tp_rank=tp_rank, tp_size=tp_size, dp_rank=dp_rank, attn_dp_size=1, pp_rank=0,
                                 pp_size=1):
        payload = WeightChecker(get_model=lambda: model).handle(PARAM_SUMS_ACTION, role="target")
    return msgspec_to_builtins(msgspec.convert(_merge_checksum_payloads([("target", payload)]), ChecksumInfo))


@pytest.fixture(scope="module", autouse=True)
def hooks_applied():
    plugin.register()
    HookRegistry.apply_hooks()  # what load_plugins() does after running the plugins


def test_single_rank_sum_is_weight_checksum():
    model = _model()
    expected = weight_checksum(model.named_parameters())
    assert combine_param_sums([_answer(model)]) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    changed = _model()
    with torch.no_grad():
        changed[0].weight[0, 0] += 1.0
    assert combine_param_sums([_answer(changed)]) != combine_param_sums([_answer(model)])


def test_other_actions_still_reach_sglangs_checker():
    with get_parallel().override(tp_rank=0, tp_size=1, dp_rank=0, attn_dp_size=1, pp_rank=0, pp_size=1):
        digest = WeightChecker(get_model=_model).handle("checksum", role="target")["per_gpu_checksum"]
    assert isinstance(digest, str) and len(digest) == 64


class _Shard(torch.nn.Module):
    """Rank ``r`` of a 2-way tensor-parallel copy of ``_model()``: linears split by rows, norm replicated."""

    def __init__(self, full: torch.nn.Module, rank: int):
        super().__init__()
        rows = lambda t: torch.nn.Parameter(t.detach().chunk(2, dim=0)[rank].clone())  # noqa: E731
        self.up_weight, self.up_bias = rows(full[0].weight), rows(full[0].bias)
        self.norm = full[1]
        self.down_weight, self.down_bias = rows(full[2].weight), rows(full[2].bias)


def test_tensor_parallel_shards_add_up_and_replicas_count_once():
    full = _model(seed=1)
    ranks = [_answer(_Shard(full, r), tp_rank=r, tp_size=2) for r in range(2)]
    replica = [_answer(_Shard(full, r), tp_rank=r, tp_size=2, dp_rank=1) for r in range(2)]
    expected = weight_checksum(full.named_parameters())
    assert combine_param_sums(ranks) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert combine_param_sums(replica + ranks) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError, match="no per-rank"):
        combine_param_sums([])


def test_tensor_sum_in_chunks():
    t = torch.randn(10, 100, dtype=torch.float32)
    assert tensor_sum(t, chunk=7) == pytest.approx(t.double().sum().item(), rel=1e-12)
