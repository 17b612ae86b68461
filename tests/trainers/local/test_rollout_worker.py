"""Weights from the actor to the in-process rollout engine: buckets, the checked sync, a stale engine caught."""

import pytest
import torch

from vortex_rl.rollout import SamplingParams, weight_buckets, weight_checksum
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.config.dataclass_dicts import from_dict
from vortex_rl.trainers.local.learner import LocalLearner
from vortex_rl.trainers.local.rollout_worker import LocalRolloutWorker
from vortex_rl.trainers.local.weight_sync import LocalWeightSync
from vortex_rl.trainers.step.weight_check import compare_checksums

CPU = torch.device("cpu")


def test_weight_buckets_group_by_size():
    tensors = [(f"w{i}", torch.zeros(n)) for i, n in enumerate([10, 10, 30, 5, 5])]  # float32: 4 bytes each
    buckets = list(weight_buckets(tensors, bucket_bytes=80))
    assert [[name for name, _ in b] for b in buckets] == [["w0", "w1"], ["w2"], ["w3", "w4"]]
    assert [name for b in weight_buckets(tensors, 1) for name, _ in b] == [n for n, _ in tensors]


def test_update_weights_and_checksum(make_tiny_actor):
    model, tokenizer = make_tiny_actor()
    config = from_dict(GRPOConfig, {"model": {"path": "random:qwen3"}, "trainer": {"device": "cpu"},
                                    "data": {"max_prompt_length": 8, "max_response_length": 8},
                                    "rollout": {"update_weights_bucket_mb": 1, "sparse": {"page_size": 4, "budget_pages": 4}}})
    worker = LocalRolloutWorker(model, tokenizer, config, CPU)
    sync = LocalWeightSync(LocalLearner(model, config, CPU), worker)
    assert sync()["rollout/weights_checksum_rel_diff"] == pytest.approx(0.0, abs=1e-9)
    params = SamplingParams(temperature=0.0, max_new_tokens=4)
    before = worker.generate([[1, 5, 6]], [params], n=1)[0][0].token_ids
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the actor changes; the engine still has the old weights
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.5)
    with pytest.raises(RuntimeError, match="rollout worker 0 holds weights with checksum"):
        compare_checksums([weight_checksum(model.named_parameters())], [worker.weights_checksum()])
    assert sync()["rollout/weights_checksum_rel_diff"] == pytest.approx(0.0, abs=1e-9)
    ids = [1, 5, 6]
    with torch.no_grad():  # greedy decoding with the updated actor, plain transformers
        for _ in range(4):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    after = worker.generate([[1, 5, 6]], [params], n=1)[0][0].token_ids
    assert after == ids[3:] and after != before


def test_sync_into_a_bfloat16_engine_checks_out(make_tiny_actor):
    """The GPU default: float32 master weights, a bfloat16 engine. The checksum of what was sent sums
    bfloat16 copies of the actor's weights; it used to skip copies that reused a freed copy's memory and
    fail the sync (RuntimeError, relative difference ~0.1) although every weight had arrived."""
    model, tokenizer = make_tiny_actor()
    config = from_dict(GRPOConfig, {"model": {"path": "random:qwen3"}, "trainer": {"device": "cpu"},
                                    "data": {"max_prompt_length": 8, "max_response_length": 8},
                                    "rollout": {"dtype": "bfloat16", "sparse": {"page_size": 4, "budget_pages": 4}}})
    worker = LocalRolloutWorker(model, tokenizer, config, CPU)
    assert worker.dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32
    sync = LocalWeightSync(LocalLearner(model, config, CPU), worker)
    assert sync()["rollout/weights_checksum_rel_diff"] == pytest.approx(0.0, abs=1e-9)
    by_hand = sum(p.detach().to(torch.bfloat16).double().sum().item() for p in model.parameters())
    assert worker.weights_checksum() == pytest.approx(by_hand, rel=1e-9)
