#!/usr/bin/env bash
# Qwen3-4B on Polaris-53K with verl 0.9.x's trainer and our engine as its rollout (rollout.name=vortex):
# the settings of recipes/qwen3_4b_polaris.yaml in verl's keys. 128 prompts x 8 samples per step, 8K-token
# responses, block-sparse decode over 32 pages of 16 tokens (sink 1, local 2), dense training, verl's
# token-level truncated importance sampling (algorithm.rollout_correction) against the sparse/dense gap.
#
# Needs: verl 0.9.x and vortex-rl in one environment (`make test-verl` shows the install), one node of
# 8 GPUs (one engine per GPU: rollout TP/DP/PP = 1), and Polaris / AIME24 as verl parquet files with
# columns data_source, prompt (chat messages), reward_model.ground_truth (verl's examples/data_preprocess
# layout), given as POLARIS_TRAIN / AIME_VAL. The reward is vortex-rl's math-verify reward
# (polaris_reward.py beside this file).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
: "${POLARIS_TRAIN:?set POLARIS_TRAIN to the Polaris-53K train parquet}"
: "${AIME_VAL:?set AIME_VAL to the AIME24 parquet}"
MODEL="${MODEL:-Qwen/Qwen3-4B}"
AR=actor_rollout_ref
VX=+actor_rollout_ref.rollout.engine_kwargs.vortex

# Registration in every verl process: the verl.plugins entry point does it when vortex-rl is installed;
# VERL_USE_EXTERNAL_MODULES also does it, and fails loudly (a wrong verl version raises).
export VERL_USE_EXTERNAL_MODULES="${VERL_USE_EXTERNAL_MODULES:-vortex_rl.integrations.verl}"

python -m verl.trainer.main_ppo \
  algorithm.adv_estimator=grpo algorithm.use_kl_in_reward=False \
  algorithm.rollout_correction.rollout_is=token algorithm.rollout_correction.rollout_is_threshold=2.0 \
  data.train_files="$POLARIS_TRAIN" data.val_files="$AIME_VAL" \
  data.train_batch_size=128 data.max_prompt_length=1024 data.max_response_length=8192 \
  data.filter_overlong_prompts=True data.truncation=error \
  $AR.model.path="$MODEL" $AR.model.enable_gradient_checkpointing=True $AR.model.use_remove_padding=True \
  $AR.actor.strategy=fsdp2 $AR.actor.optim.lr=1e-6 $AR.actor.optim.weight_decay=0.01 \
  $AR.actor.clip_ratio_low=0.2 $AR.actor.clip_ratio_high=0.28 $AR.actor.use_kl_loss=False \
  $AR.actor.loss_agg_mode=token-mean $AR.actor.ppo_mini_batch_size=32 \
  $AR.actor.use_dynamic_bsz=True $AR.actor.ppo_max_token_len_per_gpu=18432 \
  $AR.rollout.name=vortex $AR.rollout.n=8 $AR.rollout.temperature=1.4 $AR.rollout.top_p=1.0 \
  $AR.rollout.tensor_model_parallel_size=1 $AR.rollout.dtype=bfloat16 $AR.rollout.gpu_memory_utilization=0.4 \
  $AR.rollout.max_num_seqs=256 $AR.rollout.max_num_batched_tokens=8192 $AR.rollout.calculate_log_probs=True \
  $AR.rollout.log_prob_use_dynamic_bsz=True $AR.rollout.log_prob_max_token_len_per_gpu=18432 \
  $AR.rollout.val_kwargs.n=8 $AR.rollout.val_kwargs.temperature=1.4 $AR.rollout.val_kwargs.do_sample=True \
  $VX.flow=block_sparse_attention $VX.sparse.page_size=16 $VX.sparse.budget_pages=32 \
  $VX.sparse.sink_pages=1 $VX.sparse.local_pages=2 \
  reward.custom_reward_function.path="$HERE/polaris_reward.py" reward.custom_reward_function.name=compute_score \
  trainer.n_gpus_per_node=8 trainer.nnodes=1 trainer.total_training_steps=500 \
  trainer.test_freq=20 trainer.save_freq=50 trainer.max_actor_ckpt_to_keep=3 \
  trainer.project_name=vortex-rl trainer.experiment_name=qwen3_4b_polaris_vortex \
  trainer.logger='[console,wandb]' "$@"
