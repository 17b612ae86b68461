"""verl's real ``python -m verl.trainer.main_ppo``, GRPO on CPU with ``rollout.name=vortex``: a tiny random
Qwen3 with a character tokenizer, block-sparse rollouts (4-token pages, 3-page budget over up to 9 pages),
a synthetic arithmetic data set and a reward that varies across samples (so every step changes the
weights). Writes ``result.json`` in ``--workdir``: the weight updates the engine received (step, checksum),
verl's per-step metrics, the wall time.

    python tests/integrations/verl/run_grpo_cpu.py --workdir /tmp/verl_cpu --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
REWARD = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """Fraction of digits in the response: varies across samples of a random model, so GRPO has signal."""
    return sum(c.isdigit() for c in solution_str) / max(1, len(solution_str))
'''
METRIC = re.compile(r"([\w/@.\-]+):([-+0-9.eE]+|nan)")


def build_inputs(workdir: Path) -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from tests.tiny_models import TRAINER_SIZES, tiny_hf_model
    from vortex_rl.data.char_tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    # verl picks its continuation-token builder by model_type; the Qwen one needs Qwen's turn token
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    model = tiny_hf_model("qwen3", sizes={**TRAINER_SIZES, "max_position_embeddings": 256}, tokenizer=tokenizer,
                          spread_weights=False, tie_word_embeddings=True, seed=0)
    model_dir = workdir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = [dict(data_source="vortex_cpu", prompt=[{"role": "user", "content": f"{a}+{b}"}], ability="math",
                 reward_model={"style": "rule", "ground_truth": str(a + b)}, extra_info={"index": i})
            for i, (a, b) in enumerate((a, b) for a in range(10, 20) for b in range(3, 7))]
    pd.DataFrame(rows[:32]).to_parquet(workdir / "train.parquet")
    pd.DataFrame(rows[32:]).to_parquet(workdir / "val.parquet")
    (workdir / "reward.py").write_text(REWARD)
    return dict(model=str(model_dir), train=str(workdir / "train.parquet"), val=str(workdir / "val.parquet"),
                reward=str(workdir / "reward.py"))


def overrides(paths: dict[str, str], steps: int, flow: str = "block_sparse_attention") -> list[str]:
    ar = "actor_rollout_ref"
    vortex = f"+{ar}.rollout.engine_kwargs.vortex"
    return [
        "algorithm.adv_estimator=grpo", "algorithm.use_kl_in_reward=False",
        f"data.train_files={paths['train']}", f"data.val_files={paths['val']}",
        "data.train_batch_size=4", "data.max_prompt_length=16", "data.max_response_length=20",
        "data.dataloader_num_workers=0", "data.shuffle=False",
        f"{ar}.model.path={paths['model']}", f"+{ar}.model.override_config.attn_implementation=sdpa",
        f"{ar}.model.use_remove_padding=False",
        f"{ar}.actor.strategy=fsdp2", f"{ar}.actor.optim.lr=1e-2", f"{ar}.actor.ppo_mini_batch_size=4",
        f"{ar}.actor.ppo_micro_batch_size_per_gpu=16", f"{ar}.actor.use_kl_loss=False",
        f"{ar}.actor.fsdp_config.param_offload=False", f"{ar}.actor.fsdp_config.optimizer_offload=False",
        f"{ar}.rollout.name=vortex", f"{ar}.rollout.n=4", f"{ar}.rollout.tensor_model_parallel_size=1",
        f"{ar}.rollout.dtype=float32", f"{ar}.rollout.max_num_seqs=16", f"{ar}.rollout.max_num_batched_tokens=512",
        f"{ar}.rollout.log_prob_micro_batch_size_per_gpu=16", f"{ar}.rollout.calculate_log_probs=True",
        f"{ar}.rollout.agent.num_workers=1",
        f"{vortex}.device=cpu", f"{vortex}.num_pages=256", f"{vortex}.flow={flow}",
        f"{vortex}.sparse.page_size=4", f"{vortex}.sparse.budget_pages=3", f"{vortex}.sparse.sink_pages=1",
        f"{vortex}.sparse.local_pages=1",
        f"reward.custom_reward_function.path={paths['reward']}", "reward.custom_reward_function.name=compute_score",
        "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.device=cpu", "trainer.logger=[console]",
        f"trainer.total_training_steps={steps}", "trainer.val_before_train=False", "trainer.test_freq=-1",
        "trainer.save_freq=-1", "trainer.project_name=vortex_cpu", "trainer.experiment_name=grpo",
        # few actors: each of verl's storage units, agent-loop and reward workers holds a (logical) CPU
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1", "reward.num_workers=1",
        "+ray_kwargs.ray_init.num_gpus=1", "ray_kwargs.ray_init.num_cpus=16",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--flow", default="block_sparse_attention", help="the rollout's decode flow (dense: the baseline)")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = build_inputs(args.workdir)
    record = args.workdir / "weight_updates.jsonl"
    record.unlink(missing_ok=True)
    env = dict({k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}, VERL_PLATFORM="cpu",
               VERL_USE_EXTERNAL_MODULES="tests.integrations.verl.cpu_platform,vortex_rl.integrations.verl,"
                                         "tests.integrations.verl.record_updates",
               VORTEX_TEST_WEIGHT_RECORD=str(record), PYTHONPATH=os.pathsep.join(
                   [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0", HYDRA_FULL_ERROR="1",
               WANDB_MODE="disabled")
    log_path = args.workdir / "main_ppo.log"
    start = time.perf_counter()
    with open(log_path, "w") as log_file:  # streamed, so a slow run can be watched
        proc = subprocess.Popen([sys.executable, "-m", "verl.trainer.main_ppo", *overrides(paths, args.steps, args.flow)],
                                cwd=args.workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
            returncode = proc.wait()
    wall = time.perf_counter() - start
    log = log_path.read_text()
    steps = {}
    for line in log.splitlines():
        if "step:" in line and "training/" in line:
            metrics = {k: float(v) for k, v in METRIC.findall(line)}
            if "step" in metrics:
                steps[int(metrics["step"])] = metrics
    updates = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    result = dict(returncode=returncode, wall_s=round(wall, 1), steps=steps, weight_updates=updates)
    (args.workdir / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=1))
    if returncode:
        print(log[-6000:])
    return returncode


if __name__ == "__main__":
    sys.exit(main())
