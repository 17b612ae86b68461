"""Weights from the actor to the rollout engine: buckets, checksums, a stale engine caught."""

import pytest
import torch

from tests.trainers.tiny_model import tiny_model_and_tokenizer
from vortex_rl.rollout import SamplingParams
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.rollout import per_prompt_params
from vortex_rl.trainers.rollout_worker import LocalRolloutWorker, check_weights_in_sync, weight_buckets
from vortex_rl.trainers.structured import from_dict

CPU = torch.device("cpu")


def test_weight_buckets_group_by_size():
    tensors = [(f"w{i}", torch.zeros(n)) for i, n in enumerate([10, 10, 30, 5, 5])]  # float32: 4 bytes each
    buckets = list(weight_buckets(tensors, bucket_bytes=80))
    assert [[name for name, _ in b] for b in buckets] == [["w0", "w1"], ["w2"], ["w3", "w4"]]
    assert [name for b in weight_buckets(tensors, 1) for name, _ in b] == [n for n, _ in tensors]


def test_update_weights_and_checksum():
    model, tokenizer = tiny_model_and_tokenizer()
    config = from_dict(GRPOConfig, {"model": {"path": "random:qwen3"}, "trainer": {"device": "cpu"},
                                    "data": {"max_prompt_length": 8, "max_response_length": 8},
                                    "rollout": {"update_weights_bucket_mb": 1, "sparse": {"page_size": 4, "budget_pages": 4}}})
    worker = LocalRolloutWorker(model, tokenizer, config, CPU)
    assert check_weights_in_sync(worker, model.named_parameters(), worker.dtype) == pytest.approx(0.0, abs=1e-9)
    params = SamplingParams(temperature=0.0, max_new_tokens=4)
    before = worker.generate([[1, 5, 6]], [params], n=1)[0][0].token_ids
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the actor changes; the engine still has the old weights
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.5)
    with pytest.raises(RuntimeError, match="rollout engine weights differ from the actor's"):
        check_weights_in_sync(worker, model.named_parameters(), worker.dtype)
    worker.update_weights((n, p.detach()) for n, p in model.named_parameters())
    assert check_weights_in_sync(worker, model.named_parameters(), worker.dtype) == pytest.approx(0.0, abs=1e-9)
    ids = [1, 5, 6]
    with torch.no_grad():  # greedy decoding with the updated actor, plain transformers
        for _ in range(4):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    after = worker.generate([[1, 5, 6]], [params], n=1)[0][0].token_ids
    assert after == ids[3:] and after != before


def test_per_prompt_seeds_differ():
    params = per_prompt_params(SamplingParams(seed=7), 3)
    assert len({p.seed for p in params}) == 3 and params[0].temperature == 1.0
    assert per_prompt_params(SamplingParams(), 2)[0].seed is None
