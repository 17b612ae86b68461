"""RolloutBatch layout, micro-batching, and the dense scoring against plain per-sequence HF forwards."""

import pytest
import torch

from vortex_rl.trainers.algos.core_algos import entropy_from_logits
from vortex_rl.trainers.batch import build_batch, micro_batch_indices
from vortex_rl.trainers.config import ActorConfig
from vortex_rl.trainers.local.logprobs import score_responses
from vortex_rl.trainers.local.loss import loss_mask, micro_batch_loss

PROMPTS = [[1, 5, 6], [1, 7], [1, 8, 9, 10, 11], [1, 12, 13]]
RESPONSES = [[20, 21, 2], [22], [23, 24, 25, 26, 2], [27, 28]]


def make_batch(topk=0):
    top = [[{r: -0.1, r + 1: -2.5} for r in resp] for resp in RESPONSES] if topk else None
    return build_batch(PROMPTS, RESPONSES, [[-0.5] * len(r) for r in RESPONSES], [1.0, 0.0, 0.5, 0.0],
                       [0, 0, 1, 1], [False, True, False, False], pad_id=0, top_logprobs=top, topk=topk)


def test_build_batch_layout():
    b = make_batch(topk=3)
    assert b.input_ids.shape == (4, 10) and b.responses.shape == (4, 5)
    assert b.input_ids[2].tolist() == [1, 8, 9, 10, 11, 23, 24, 25, 26, 2]
    assert b.input_ids[1].tolist() == [1, 7, 22] + [0] * 7
    assert b.response_mask.tolist()[3] == [1, 1, 0, 0, 0]
    assert b.rollout_log_probs[1].tolist() == [-0.5, 0, 0, 0, 0]
    assert b.rollout_topk_ids[0, 0].tolist() == [20, 21, -1]
    assert b.rollout_topk_log_probs[0, 0, :2].tolist() == pytest.approx([-0.1, -2.5])
    assert loss_mask(b, mask_truncated=True)[1].sum() == 0 and loss_mask(b, mask_truncated=False)[1].sum() == 1
    sub = b.select([3, 1]).trimmed()
    assert sub.input_ids.shape == (2, 5) and sub.responses.shape == (2, 2) and sub.group_ids.tolist() == [1, 0]
    with pytest.raises(ValueError, match="3 response tokens but 2 log-probs"):
        build_batch([[1]], [[2, 3, 4]], [[0.0, 0.0]], [0.0], [0], [False], pad_id=0)


def test_micro_batches():
    lengths = torch.tensor([6, 3, 10, 5, 2, 9])
    assert [t.tolist() for t in micro_batch_indices(lengths, max_seqs=4)] == [[0, 1, 2, 3], [4, 5]]
    parts = micro_batch_indices(lengths, max_tokens=20)
    assert sorted(i for p in parts for i in p.tolist()) == list(range(6))
    assert all(len(p) * int(lengths[p].max()) <= 20 for p in parts)
    with pytest.raises(ValueError, match="a 10-token sequence exceeds the micro-batch token budget 8"):
        micro_batch_indices(lengths, max_tokens=8)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_scores_match_unpadded_forwards(temperature, make_tiny_actor):
    model, _ = make_tiny_actor()
    b = make_batch()
    out = score_responses(model, b, temperature=temperature, topk=4, with_entropy=True)
    with torch.no_grad():
        for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
            logits = model(input_ids=torch.tensor([p + r])).logits[0, len(p) - 1 : len(p) + len(r) - 1] / temperature
            logp = torch.log_softmax(logits.float(), -1)
            torch.testing.assert_close(out.log_probs[i, : len(r)], logp.gather(-1, torch.tensor(r)[:, None])[:, 0],
                                       atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.entropy[i, : len(r)], entropy_from_logits(logits), atol=1e-5, rtol=1e-5)
            values, ids = logp.topk(4, dim=-1)
            assert torch.equal(out.topk_ids[i, : len(r)], ids)
            torch.testing.assert_close(out.topk_log_probs[i, : len(r)], values, atol=1e-5, rtol=1e-5)


def test_micro_batch_gradients_add_up_to_the_full_batch_gradient(make_tiny_actor):
    model, _ = make_tiny_actor()
    b = make_batch()
    b.old_log_probs = torch.full_like(b.rollout_log_probs, -3.0)
    b.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    config = ActorConfig()
    mask = b.response_mask
    num_tokens = float(mask.sum())

    def grads(parts):
        model.zero_grad()
        for index in parts:
            mb = b.select(index).trimmed()
            loss, _ = micro_batch_loss(model, mb, config=config, temperature=1.0, mask=mask[index, : mb.responses.shape[1]],
                                       num_tokens=num_tokens, num_seqs=4.0)
            loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    full = grads([torch.arange(4)])
    split = grads([torch.tensor([0, 2]), torch.tensor([3]), torch.tensor([1])])
    for a, c in zip(full, split):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-4)
