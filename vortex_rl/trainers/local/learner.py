"""`LocalLearner`: the dense actor in this process: old log-probs, PPO updates, weights out.

The training loop talks to it through ``step.protocols.Learner``, so a Ray actor group with the
same methods can replace it (``trainer.orchestrator``).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Iterator

import torch

from vortex_rl.trainers.algos.acceptance import acceptance_alpha_bounds
from vortex_rl.trainers.batch import RolloutBatch, micro_batch_indices
from vortex_rl.trainers.config import GRPOConfig
from vortex_rl.trainers.local.logprobs import score_responses
from vortex_rl.trainers.local.loss import loss_mask, micro_batch_loss
from vortex_rl.trainers.local.model_loader import autocast


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Activation (gradient) checkpointing, non-reentrant; transformers 5 renamed the method."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers 4.x
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class LocalLearner:
    """Owns the actor model (and a frozen reference copy with the KL loss), AdamW and its schedule.

    Parameters
    ----------
    model: a ``transformers`` causal LM, already on ``device`` in its training dtype.
    config: the run's config (``actor``, ``rollout.temperature``, ``algorithm.mask_truncated_responses``).
    """

    def __init__(self, model: torch.nn.Module, config: GRPOConfig, device: torch.device) -> None:
        self.model, self.config, self.device = model, config, device
        if config.model.enable_gradient_checkpointing:
            enable_checkpointing(model)
        model.train()  # dropout is 0 in the supported models; train mode is what checkpointing needs
        optim = config.actor.optim
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                                           weight_decay=optim.weight_decay)
        warmup = optim.lr_warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
        self.ref_model = self._reference_model(model) if config.actor.use_kl_loss else None

    def _reference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """A frozen copy of the starting actor, for the KL loss."""
        return copy.deepcopy(model).eval().requires_grad_(False)

    def _micro_batches(self, batch: RolloutBatch) -> list[torch.Tensor]:
        actor = self.config.actor
        if actor.use_dynamic_bsz:
            return micro_batch_indices(batch.total_lens, max_tokens=actor.ppo_max_token_len_per_gpu)
        return micro_batch_indices(batch.total_lens, max_seqs=actor.ppo_micro_batch_size_per_gpu)

    @torch.no_grad()
    def compute_log_probs(self, batch: RolloutBatch) -> None:
        """Fill ``old_log_probs``, ``entropy`` (and ``ref_log_probs``): dense forward of the current weights,
        before the update (verl's ``old_log_prob``). With ``rollout.logprobs`` and the rollout's top-k on the
        batch, also ``alpha`` / ``alpha_upper`` / ``alpha_est``, made per micro-batch on the device (the ``[rows, len, k, k]``
        top-k match never reaches the host)."""
        size, k = batch.responses.shape, self.config.rollout.logprobs
        with_alpha = bool(k) and batch.rollout_topk_ids is not None
        batch.old_log_probs = torch.zeros(size)
        batch.entropy = torch.zeros(size)
        if with_alpha:
            batch.alpha, batch.alpha_upper, batch.alpha_est = torch.zeros(size), torch.zeros(size), torch.zeros(size)
        if self.ref_model is not None:
            batch.ref_log_probs = torch.zeros(size)
        temperature, chunk_tokens = self.config.rollout.temperature, self.config.actor.logits_chunk_tokens
        for index in self._micro_batches(batch):
            mb = batch.select(index).trimmed().to(self.device)
            width = mb.responses.shape[1]
            with autocast(self.config.model, self.device):
                scores = score_responses(self.model, mb, temperature=temperature, topk=k if with_alpha else 0,
                                         with_entropy=True, chunk_tokens=chunk_tokens)
            batch.old_log_probs[index, :width] = scores.log_probs.cpu()
            batch.entropy[index, :width] = scores.entropy.cpu()
            if with_alpha:
                bounds = acceptance_alpha_bounds(mb.rollout_topk_ids, mb.rollout_topk_log_probs,
                                                 scores.topk_ids, scores.topk_log_probs)
                batch.alpha[index, :width] = bounds.lower.cpu()
                batch.alpha_upper[index, :width] = bounds.upper.cpu()
                batch.alpha_est[index, :width] = bounds.estimate.cpu()
            if self.ref_model is not None:
                with autocast(self.config.model, self.device):
                    ref = score_responses(self.ref_model, mb, temperature=temperature, chunk_tokens=chunk_tokens)
                batch.ref_log_probs[index, :width] = ref.log_probs.cpu()

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """PPO epochs over mini-batches of whole groups; one optimizer step per mini-batch.

        ``batch`` must carry ``old_log_probs`` and ``advantages``. Returns ``actor/*`` metrics averaged
        over the optimizer steps. A batch whose advantages are all zero (every group uniform) takes no step:
        its policy gradient is zero, yet AdamW's momentum and weight decay would still move the weights.
        """
        if not bool(batch.advantages.ne(0).any()):
            return {"actor/skipped_zero_advantage": 1.0}
        rows_per_prompt = len(batch) // self.config.data.train_batch_size
        mini_rows = max(1, self.config.ppo_mini_batch_size * rows_per_prompt)
        mask = loss_mask(batch, mask_truncated=self.config.algorithm.mask_truncated_responses)
        totals: dict[str, float] = {}
        num_steps = 0
        for _ in range(self.config.actor.ppo_epochs):
            for mini in torch.arange(len(batch)).split(mini_rows):
                for key, value in self._optimizer_step(batch.select(mini), mask[mini]).items():
                    totals[key] = totals.get(key, 0.0) + value
                num_steps += 1
        return {key: value / num_steps for key, value in totals.items()}

    def _optimizer_step(self, mini: RolloutBatch, mask: torch.Tensor) -> dict[str, float]:
        num_tokens = float(mask.sum().clamp(min=1))
        self.optimizer.zero_grad(set_to_none=True)
        metrics: dict[str, float] = {}
        for index in self._micro_batches(mini):
            mb_metrics = self._backward(mini.select(index), mask[index], num_tokens=num_tokens,
                                        num_seqs=float(len(mini)))
            for key, value in mb_metrics.items():
                metrics[key] = metrics.get(key, 0.0) + value
        metrics.update(self._apply_gradients())
        return metrics

    def _backward(self, rows: RolloutBatch, mask: torch.Tensor, *, num_tokens: float, num_seqs: float,
                  scale: float = 1.0) -> dict[str, float]:
        """Back-propagate ``scale`` times the loss of micro-batch ``rows`` (normalised by the mini-batch's
        ``num_tokens`` / ``num_seqs``); returns its metrics."""
        mb = rows.trimmed().to(self.device)
        mb_mask = mask[:, : mb.responses.shape[1]].to(self.device)
        with autocast(self.config.model, self.device):
            loss, metrics = micro_batch_loss(
                self.model, mb, config=self.config.actor, temperature=self.config.rollout.temperature,
                mask=mb_mask, num_tokens=num_tokens, num_seqs=num_seqs)
        (loss * scale if scale != 1.0 else loss).backward()
        return metrics

    def _apply_gradients(self) -> dict[str, float]:
        """Clip, then step AdamW (skipped, and counted, on a non-finite gradient) and the LR schedule."""
        metrics: dict[str, float] = {}
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.actor.grad_clip))
        metrics["actor/grad_norm"] = grad_norm
        metrics["actor/lr"] = self.scheduler.get_last_lr()[0]
        finite = math.isfinite(grad_norm)
        metrics["actor/skipped_nonfinite_grad"] = float(not finite)
        if finite:  # a NaN/inf gradient would corrupt AdamW's moments: skip the step, and count it
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return metrics

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The actor's parameters under their Hugging Face names (what the rollout engine loads)."""
        for name, param in self.model.named_parameters():
            yield name, param.detach()

    def state_dict(self) -> dict:
        """Optimizer, learning-rate schedule and the KL reference's weights (the actor's weights are saved
        with ``save_model``)."""
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.ref_model is not None:
            state["ref_model"] = self.ref_model.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ref_model is not None:
            if "ref_model" not in state:
                raise ValueError("the checkpoint has no KL reference weights; it was saved with actor.use_kl_loss=false")
            self.ref_model.load_state_dict(state["ref_model"])

    def save_model(self, directory: Path, tokenizer) -> None:
        """``save_pretrained`` (safetensors) of the actor and its tokenizer: loadable by ``transformers``."""
        self.model.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)
