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


@pytest.mark.parametrize("temperature,chunk_tokens", [(1.0, 1024), (0.7, 1024), (0.7, 1), (1.0, 7)])
def test_scores_match_unpadded_forwards(temperature, chunk_tokens, make_tiny_actor):
    model, _ = make_tiny_actor()
    b = make_batch()
    out = score_responses(model, b, temperature=temperature, topk=4, with_entropy=True, chunk_tokens=chunk_tokens)
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


def _full_logits_log_probs(model, b, temperature):
    """The reference: the model's own full ``[batch, seq, vocab]`` logits, log-softmax, gather."""
    logits = model(input_ids=b.input_ids).logits.float() / temperature
    steps = torch.arange(b.responses.shape[1])
    positions = (b.prompt_lens[:, None] - 1 + steps).clamp(max=b.input_ids.shape[1] - 1)
    picked = logits[torch.arange(len(b))[:, None], positions]
    return torch.log_softmax(picked, -1).gather(-1, b.responses[..., None])[..., 0]


@pytest.mark.parametrize("chunk_tokens", [1, 4, 1024])
def test_chunked_scoring_gradients_equal_the_full_logits_gradients(chunk_tokens, make_tiny_actor):
    """With gradients on, the chunks' logits are recomputed in the backward pass (activation checkpointing):
    the gradient of every parameter (the tied embedding / output head included) equals the one through the
    model's own full logits, within 1e-5 relative."""
    model, _ = make_tiny_actor()
    b = make_batch()
    weights = torch.randn(b.responses.shape, generator=torch.Generator().manual_seed(1)) * b.response_mask

    def grads(log_probs_fn):
        model.zero_grad()
        (log_probs_fn() * weights).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    reference = grads(lambda: _full_logits_log_probs(model, b, 0.7))
    chunked = grads(lambda: score_responses(model, b, temperature=0.7, chunk_tokens=chunk_tokens).log_probs)
    assert reference.keys() == chunked.keys()
    for name in reference:
        torch.testing.assert_close(chunked[name], reference[name], atol=1e-6, rtol=1e-5, msg=name)


def test_scoring_puts_the_output_head_back_and_refuses_heads_it_cannot_chunk(make_tiny_actor):
    model, _ = make_tiny_actor()
    b = make_batch()
    head = model.get_output_embeddings()
    score_responses(model, b, temperature=1.0)
    assert "forward" not in vars(head)  # the class's forward again: the full logits come back
    assert model(input_ids=b.input_ids).logits.shape[-1] == model.config.vocab_size
    bad = make_batch()
    bad.responses = bad.responses + 10**6  # an id past the vocabulary fails inside the scorer
    with pytest.raises(RuntimeError):
        score_responses(model, bad, temperature=1.0)
    assert "forward" not in vars(head)
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        score_responses(model, b, temperature=1.0)


def test_entropy_bonus_gradient_matches_the_full_logits_reference(make_tiny_actor):
    """actor.entropy_coeff (verl's): loss = policy loss - coeff * agg(entropy). Its gradient, through the
    chunked and checkpointed scorer, equals the gradient of the same loss written on the model's full
    logits with plain torch (token-mean over the mask), within 1e-5 relative."""
    model, _ = make_tiny_actor()
    b = make_batch()
    b.old_log_probs = torch.full_like(b.rollout_log_probs, -3.0)
    b.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    mask = b.response_mask
    config = ActorConfig(entropy_coeff=0.3, logits_chunk_tokens=3)
    base = ActorConfig(logits_chunk_tokens=3)

    def grads(loss_fn):
        model.zero_grad()
        loss_fn().backward()
        return [p.grad.clone() for p in model.parameters()]

    def ours(cfg):
        return micro_batch_loss(model, b, config=cfg, temperature=0.7, mask=mask, num_tokens=float(mask.sum()),
                                num_seqs=4.0)

    def reference():
        logits = model(input_ids=b.input_ids).logits.float() / 0.7
        steps = torch.arange(b.responses.shape[1])
        positions = (b.prompt_lens[:, None] - 1 + steps).clamp(max=b.input_ids.shape[1] - 1)
        entropy = entropy_from_logits(logits[torch.arange(len(b))[:, None], positions])
        return ours(base)[0] - 0.3 * (entropy * mask).sum() / mask.sum()

    loss, metrics = ours(config)
    assert metrics["actor/entropy_loss"] > 0 and float(loss.detach()) < float(ours(base)[0].detach())
    for a, c in zip(grads(lambda: ours(config)[0]), grads(reference)):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="actor.entropy_coeff=-0.1"):
        ActorConfig(entropy_coeff=-0.1)
