"""Do sparse rollouts train as well as dense ones? The same recipe and seeds under three rollout arms.

Arms: ``dense`` (``rollout.flow=dense``), ``sparse`` (the recipe's block-sparse budget) and ``guard``
(the same, with ``rollout.sparse_guard.min_alpha_p5``). The recipe's supervised warm-up runs once and
every (arm, seed) starts RL from those weights (``--no-shared-warmup``: each run warms up itself); each
is one training run through ``vortex_rl.train`` in this process, under ``--out/<arm>/seed<k>/``. Writes one PNG
(training reward, validation accuracy, ``rollout_corr/alpha_p5`` and the rollout budget per arm, seed
mean with min-max band) and a JSON of final numbers with their seed spread, and prints a table last.

    python scripts/compare_rollouts.py --recipe tiny_retrieval --seeds 1 2 3
    python scripts/compare_rollouts.py --recipe tiny_retrieval --seeds 1 2 3 --out bench_results/compare_b3 \
        --no-shared-warmup -- rollout.sparse.budget_pages=3 model.path=<a warm_start dir> sft_warmup.steps=0
    python scripts/compare_rollouts.py --recipe tiny_cpu --seeds 1 2 3 4 5 --steps 80
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ARMS = ("dense", "sparse", "guard")
REWARD = "critic/rewards/mean"
ALPHA = "rollout_corr/alpha_p5"
BUDGET_PREFIX = "rollout/budget_pages/pos_"


def arm_overrides(arm: str, min_alpha_p5: float) -> list[str]:
    if arm == "dense":
        return ["rollout.flow=dense"]
    if arm == "guard":
        return [f"rollout.sparse_guard.min_alpha_p5={min_alpha_p5}"]
    return []


def read_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {int(row["step"]): row for row in rows}


def val_key(rows: dict[int, dict[str, float]]) -> str | None:
    """The validation accuracy (mean@n) metric of the run."""
    keys = sorted({k for row in rows.values() for k in row if k.startswith("val-core/") and "/acc/mean@" in k})
    return keys[0] if keys else None


def budget_of(row: dict[str, float], default: float) -> float:
    """Pages per decode step of the longest guarded bin; ``default`` (the arm's fixed budget) without a guard."""
    budgets = [v for k, v in row.items() if k.startswith(BUDGET_PREFIX)]
    return max(budgets) if budgets else float(default)


def fixed_budget(run_dir: Path) -> float:
    """The budget of a run without a guard: dense pages of the longest sequence for ``rollout.flow=dense``,
    else the largest budget of ``rollout.sparse``."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    sparse = config["rollout"]["sparse"]
    if config["rollout"]["flow"] == "dense":
        return float(-(-(config["data"]["max_prompt_length"] + config["data"]["max_response_length"])
                       // sparse["page_size"]))
    return float(max([sparse["budget_pages"]] + [b for _, b in sparse.get("budget_schedule") or ()]))


def warm_start(recipe: str, out: Path, extra: list[str]) -> list[str]:
    """Run the recipe's supervised warm-up once (``trainer.seed`` of the recipe) and save the model, so
    every arm and seed starts RL from the same weights; returns the overrides that load it."""
    from vortex_rl.train import compose_config
    from vortex_rl.trainers.local.model_loader import load_actor, load_tokenizer
    from vortex_rl.trainers.local.warmup import sft_warmup
    from vortex_rl.trainers.run.prompts import load_prompts

    config = compose_config(recipe, extra)
    if not config.sft_warmup.steps:
        return []
    target = out / "warm_start"
    if not (target / "config.json").is_file():
        import torch

        tokenizer = load_tokenizer(config.model)
        prompts, _, _ = load_prompts(config, tokenizer)
        device = torch.device("cpu")
        model = load_actor(config.model, tokenizer, device=device, seed=config.trainer.seed)
        metrics = sft_warmup(model, tokenizer, prompts, config.sft_warmup, device=device, seed=config.trainer.seed)
        model.save_pretrained(target)
        (target / "sft_metrics.json").write_text(json.dumps(metrics))
    return [f"model.path={target.resolve()}", "sft_warmup.steps=0"]


def run_arm(recipe: str, arm: str, seed: int, steps: int | None, out: Path, extra: list[str], min_alpha_p5: float
            ) -> Path:
    from vortex_rl.train import main

    run_dir = out / arm / f"seed{seed}"
    if (run_dir / "metrics.jsonl").is_file():
        import shutil

        shutil.rmtree(run_dir)  # a fresh run, not a resume or a refusal of a used directory
    args = [f"recipe={recipe}", f"trainer.seed={seed}", f"trainer.output_dir={run_dir}", "trainer.logger=[console]",
            "trainer.orchestrator=local", "trainer.save_freq=0", *arm_overrides(arm, min_alpha_p5), *extra]
    if steps is not None:
        args.append(f"trainer.total_steps={steps}")
    start = time.perf_counter()
    main(args)
    print(f"[compare_rollouts] {arm} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    return run_dir


def summarise(rows: dict[int, dict[str, float]], *, tail_frac: float, default_budget: float, val_evals: int = 3
              ) -> dict[str, float]:
    """Final numbers of one run: mean training reward over the last ``tail_frac`` of steps, the first and
    last validation accuracy and its mean over the last ``val_evals`` evaluations (one evaluation of a
    small held-out set moves by several points between neighbouring checkpoints), mean ``alpha_p5`` over
    the reward's steps and the final budget."""
    steps = sorted(s for s in rows if s > 0)
    tail = steps[-max(1, int(len(steps) * tail_frac)):]
    key = val_key(rows)
    vals = [rows[s][key] for s in sorted(rows) if key and key in rows[s]]
    out = {
        "reward_tail": statistics.fmean(rows[s][REWARD] for s in tail),
        "reward_first": statistics.fmean(rows[s][REWARD] for s in steps[: len(tail)]),
        "val_acc_start": vals[0] if vals else math.nan,
        "val_acc_final": vals[-1] if vals else math.nan,
        "val_acc_tail": statistics.fmean(vals[-val_evals:]) if vals else math.nan,
        "alpha_p5_tail": statistics.fmean(rows[s][ALPHA] for s in tail if ALPHA in rows[s]),
        "budget_final": budget_of(rows[steps[-1]], default_budget),
        "budget_mean": statistics.fmean(budget_of(rows[s], default_budget) for s in steps),
        "steps": float(len(steps)),
    }
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def plot(series: dict[str, list[dict[int, dict[str, float]]]], path: Path, *, budgets: dict[str, float], title: str
         ) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    panels = [("training reward (5-step mean)", REWARD, 5), ("validation accuracy (mean@n)", "val", 1),
              ("rollout_corr/alpha_p5", ALPHA, 1), ("budget (pages per decode step)", "budget", 1)]
    for ax, (label, key, window) in zip(axes, panels):
        for arm, runs in series.items():
            curves = []
            for rows in runs:
                vk = val_key(rows) if key == "val" else key
                points = {}
                for s in sorted(rows):
                    if key == "budget":
                        if s > 0:
                            points[s] = budget_of(rows[s], budgets[arm])
                    elif vk in rows[s]:
                        points[s] = rows[s][vk]
                xs = sorted(points)
                ys = [statistics.fmean(points[x] for x in xs[max(0, i - window + 1): i + 1]) for i in range(len(xs))]
                curves.append(dict(zip(xs, ys)))
            common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if not common:
                continue
            mean = [statistics.fmean(c[x] for c in curves) for x in common]
            ax.plot(common, mean, label=arm)
            ax.fill_between(common, [min(c[x] for c in curves) for x in common],
                            [max(c[x] for c in curves) for x in common], alpha=0.2)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="tiny_retrieval")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=None, help="trainer.total_steps (default: the recipe's)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--min-alpha-p5", type=float, default=0.9, help="the guard arm's floor")
    parser.add_argument("--tail-frac", type=float, default=0.25, help="share of last steps the reward is averaged over")
    parser.add_argument("--val-evals", type=int, default=3, help="last validation evaluations averaged (val_acc_tail)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench_results/compare_<recipe>")
    parser.add_argument("--summarise-only", action="store_true", help="read existing runs under --out")
    parser.add_argument("--no-shared-warmup", action="store_true",
                        help="warm up in every run (default: once, shared by all arms and seeds)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run (after --)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CPU may be shared)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = args.out or Path("bench_results") / f"compare_{args.recipe}"
    out.mkdir(parents=True, exist_ok=True)
    series: dict[str, list[dict[int, dict[str, float]]]] = {}
    extra = list(args.overrides)
    if not args.summarise_only and not args.no_shared_warmup:
        extra += warm_start(args.recipe, out, extra)
    for arm in args.arms:
        for seed in args.seeds:
            run_dir = out / arm / f"seed{seed}"
            if not args.summarise_only:
                run_arm(args.recipe, arm, seed, args.steps, out, extra, args.min_alpha_p5)
            series.setdefault(arm, []).append(read_metrics(run_dir))
    budgets = {arm: fixed_budget(out / arm / f"seed{args.seeds[0]}") for arm in args.arms}
    result = {"recipe": args.recipe, "seeds": args.seeds, "min_alpha_p5": args.min_alpha_p5,
              "overrides": args.overrides, "device": "cpu", "arms": {}}
    for arm, runs in series.items():
        finals = [summarise(rows, tail_frac=args.tail_frac, default_budget=budgets[arm], val_evals=args.val_evals)
                  for rows in runs]
        result["arms"][arm] = {name: spread([f[name] for f in finals]) for name in finals[0]}
    (out / "compare.json").write_text(json.dumps(result, indent=1))
    plot(series, out / "compare.png", budgets=budgets,
         title=f"{args.recipe}: dense vs block-sparse vs block-sparse + guard ({len(args.seeds)} seeds)")
    print(f"\n{args.recipe}, seeds {args.seeds} (mean ± std over seeds); {out / 'compare.json'}, {out / 'compare.png'}")
    print(f"{'arm':<8} {'reward first':>14} {'reward last':>14} {'val acc start':>14} {'val acc final':>14} "
          f"{'val acc tail':>14} {'alpha_p5':>14} {'budget mean':>12} {'budget end':>11}")
    for arm, numbers in result["arms"].items():
        cell = lambda n: f"{numbers[n]['mean']:.3f} ± {numbers[n]['std']:.3f}"  # noqa: E731
        print(f"{arm:<8} {cell('reward_first'):>14} {cell('reward_tail'):>14} {cell('val_acc_start'):>14} "
              f"{cell('val_acc_final'):>14} {cell('val_acc_tail'):>14} {cell('alpha_p5_tail'):>14} "
              f"{numbers['budget_mean']['mean']:>12.1f} "
              f"{numbers['budget_final']['mean']:>11.1f}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
