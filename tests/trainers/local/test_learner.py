"""LocalLearner: old log-probs equal a direct dense scoring; the update's loss at ratio 1 is -mean(A)."""

import pytest
import torch

from vortex_rl.trainers.batch import build_batch
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.local.learner import LocalLearner
from vortex_rl.trainers.algos.acceptance import acceptance_alpha_bounds
from vortex_rl.trainers.local.logprobs import score_responses
from vortex_rl.trainers.config.dataclass_dicts import from_dict

CPU = torch.device("cpu")


def config(**actor):
    return from_dict(GRPOConfig, {
        "model": {"path": "random:qwen3"}, "data": {"train_batch_size": 2},
        "rollout": {"n": 2, "temperature": 0.8, "logprobs": 3},
        "actor": {"optim": {"lr": 1e-3, "weight_decay": 0.0}, "ppo_micro_batch_size_per_gpu": 3, **actor},
    })


def batch():
    prompts = [[1, 5, 6], [1, 5, 6], [1, 7], [1, 7]]
    responses = [[20, 21, 2], [22, 2], [23, 24, 25, 2], [26]]
    return build_batch(prompts, responses, [[0.0] * len(r) for r in responses], [1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1],
                       [False, False, False, True], pad_id=0)


def test_old_log_probs_match_direct_scoring(make_tiny_actor):
    model, _ = make_tiny_actor()
    learner = LocalLearner(model, config(use_kl_loss=True), CPU)
    b = batch()
    g = torch.Generator().manual_seed(0)
    rollout_lp, b.rollout_topk_ids = torch.log_softmax(torch.randn(*b.responses.shape, 40, generator=g), -1).topk(3)
    b.rollout_topk_log_probs = rollout_lp
    learner.compute_log_probs(b)
    with torch.no_grad():
        direct = score_responses(model, b, temperature=0.8, topk=3, with_entropy=True)
    mask = b.response_mask.bool()
    torch.testing.assert_close(b.old_log_probs[mask], direct.log_probs[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.entropy[mask], direct.entropy[mask], atol=1e-5, rtol=1e-5)
    # alpha per micro-batch equals alpha from whole-batch top-k tensors
    lower, estimate, upper = acceptance_alpha_bounds(b.rollout_topk_ids, b.rollout_topk_log_probs,
                                                     direct.topk_ids, direct.topk_log_probs)
    torch.testing.assert_close(b.alpha[mask], lower[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.alpha_upper[mask], upper[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.alpha_est[mask], estimate[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.ref_log_probs, b.old_log_probs)  # the reference is the initial policy


def test_update_loss_at_ratio_one_and_direction(make_tiny_actor):
    model, _ = make_tiny_actor()
    learner = LocalLearner(model, config(), CPU)
    b = batch()
    learner.compute_log_probs(b)
    b.advantages = torch.tensor([1.0, -1.0, -1.0, 1.0])
    before = b.old_log_probs.clone()
    metrics = learner.update(b)
    mask = b.response_mask
    expected = -(b.advantages[:, None] * mask).sum() / mask.sum()  # -A * ratio with ratio 1, token mean
    assert metrics["actor/pg_loss"] == pytest.approx(expected.item(), abs=1e-6)
    assert metrics["actor/pg_clipfrac"] == 0.0 and metrics["actor/ppo_kl"] == pytest.approx(0.0, abs=1e-7)
    assert metrics["actor/grad_norm"] > 0 and metrics["actor/lr"] == pytest.approx(1e-3)
    learner.compute_log_probs(b)
    change = ((b.old_log_probs - before) * mask).sum(1)
    assert (change * b.advantages > 0).all()  # positive advantages up, negative down


def test_state_round_trip(make_tiny_actor):
    model, _ = make_tiny_actor()
    learner = LocalLearner(model, config(use_kl_loss=True), CPU)
    b = batch()
    learner.compute_log_probs(b)
    b.advantages = torch.tensor([1.0, -1.0, -1.0, 1.0])
    learner.update(b)
    state = learner.state_dict()
    other = LocalLearner(make_tiny_actor()[0], config(use_kl_loss=True), CPU)
    other.load_state_dict(state)
    assert other.scheduler.state_dict() == learner.scheduler.state_dict()
    for key, value in learner.ref_model.state_dict().items():
        assert torch.equal(other.ref_model.state_dict()[key], value)
    without_ref = LocalLearner(make_tiny_actor()[0], config(), CPU).state_dict()
    with pytest.raises(ValueError, match="no KL reference weights"):
        other.load_state_dict(without_ref)


def test_mixed_precision_follows_the_full_precision_scores(make_tiny_actor):
    from vortex_rl.trainers.local.model_loader import autocast

    model, _ = make_tiny_actor()
    full, mixed = batch(), batch()
    LocalLearner(model, config(), CPU).compute_log_probs(full)
    mixed_config = config()
    mixed_config.model.compute_dtype = "bfloat16"
    LocalLearner(model, mixed_config, CPU).compute_log_probs(mixed)
    assert next(model.parameters()).dtype == torch.float32  # master weights stay float32
    mask = full.response_mask.bool()
    assert not torch.equal(mixed.old_log_probs[mask], full.old_log_probs[mask])  # bf16 did run
    torch.testing.assert_close(mixed.old_log_probs[mask], full.old_log_probs[mask], atol=0.05, rtol=0.02)
    assert isinstance(autocast(config().model, CPU), type(__import__("contextlib").nullcontext()))


def test_gradient_checkpointing_gives_the_same_update(make_tiny_actor):
    results = []
    for checkpointing in (False, True):
        model, _ = make_tiny_actor()
        cfg = config()
        cfg.model.enable_gradient_checkpointing = checkpointing
        learner = LocalLearner(model, cfg, CPU)
        b = batch()
        learner.compute_log_probs(b)
        b.advantages = torch.tensor([1.0, -1.0, -1.0, 1.0])
        results.append((learner.update(b), [p.detach().clone() for p in model.parameters()]))
    (m0, p0), (m1, p1) = results
    assert m1["actor/grad_norm"] == pytest.approx(m0["actor/grad_norm"], rel=1e-5)
    for a, c in zip(p0, p1):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-5)


def test_all_zero_advantages_leave_the_weights_bitwise_unchanged(make_tiny_actor):
    """After a real update AdamW holds momentum; an all-uniform batch (advantages 0) must not move the
    weights through it (nor through weight decay)."""
    model, _ = make_tiny_actor()
    cfg = config()
    cfg.actor.optim.weight_decay = 0.1
    learner = LocalLearner(model, cfg, CPU)
    b = batch()
    learner.compute_log_probs(b)
    b.advantages = torch.tensor([1.0, -1.0, -1.0, 1.0])
    learner.update(b)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    b.advantages = torch.zeros(4)
    metrics = learner.update(b)
    assert metrics == {"actor/skipped_zero_advantage": 1.0}
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
