"""Metrics as they happen: ``metrics.jsonl`` in the run directory, W&B (optional), and the console."""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

CONSOLE_KEYS = (
    ("critic/rewards/mean", "reward"), ("response_length/mean", "len"), ("actor/pg_loss", "pg_loss"),
    ("rollout_corr/k3_kl", "k3"), ("timing_s/step", "s"), ("data/train_prompts", "train prompts"),
    ("data/train_filtered_overlong", "filtered"), ("sft/loss_last", "sft loss"),
)


def wandb_mode() -> str | None:
    """``None`` (let W&B read ``WANDB_MODE``) when set, ``online`` with an API key, else ``offline``."""
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class Tracker:
    """Log ``{name: float}`` per step to every backend.

    Parameters
    ----------
    run_dir: the run directory (``metrics.jsonl`` is appended to; W&B files go to ``run_dir/wandb``).
    backends: any of ``console``, ``wandb``.
    config: the resolved config, stored with the W&B run.
    resume_step: when resuming, lines after this step (logged after the checkpoint) are dropped. A new
        run (``resume_step=0``) refuses a ``metrics.jsonl`` that already has rows rather than truncate it.

    The W&B run id is drawn once per run directory and kept in ``run_dir/wandb_run_id``, so a resumed run
    continues the same W&B run (offline too: ``wandb sync`` joins the pieces) and two runs that share an
    experiment name never write into each other.
    """

    def __init__(self, run_dir: Path, *, backends: list[str], config: dict[str, Any], project: str, name: str,
                 resume_step: int = 0) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        if not resume_step and self.path.is_file() and self.path.read_text().strip():
            raise FileExistsError(f"{self.path} already holds metrics of another run; a new run does not "
                                  "overwrite it (resume it with trainer.resume=auto, or use a new trainer.output_dir)")
        self.history = _read_history(self.path, up_to=resume_step) if resume_step else []
        self.path.write_text("".join(json.dumps(row) + "\n" for row in self.history))
        self.console = "console" in backends
        self.wandb = _init_wandb(run_dir, config, project, name) if "wandb" in backends else None

    def log(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": step, **{k: _finite(v) for k, v in metrics.items()}}
        self.history.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        if self.console:
            shown = " | ".join(f"{short} {metrics[key]:.4g}" for key, short in CONSOLE_KEYS if key in metrics)
            val = " | ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in metrics.items() if k.startswith("val-core/"))
            tqdm.write(f"step {step}: " + " | ".join(s for s in (shown, val) if s))

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None  # JSON has no NaN


def _read_history(path: Path, *, up_to: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row.get("step", 0) <= up_to]


def wandb_run_id(run_dir: Path) -> str:
    """This run directory's W&B run id: read from ``wandb_run_id``; else the id of a W&B run already in
    ``run_dir/wandb`` (a run started before the id was kept); else drawn. Written back to ``wandb_run_id``."""
    path = Path(run_dir) / "wandb_run_id"
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    earlier = sorted((Path(run_dir) / "wandb").glob("*run-*-*"))  # <mode>-run-<date>_<time>-<id>
    run_id = earlier[-1].name.split("-", 3)[-1] if earlier else uuid.uuid4().hex[:16]
    path.write_text(run_id + "\n")
    return run_id


def _init_wandb(run_dir: Path, config: dict[str, Any], project: str, name: str):
    try:
        import wandb
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("trainer.logger includes 'wandb' but wandb is not installed: pip install 'vortex-rl[train]' "
                          "or set trainer.logger=[console]") from e
    return wandb.init(project=project, name=name, dir=str(run_dir), config=config, mode=wandb_mode(),
                      id=wandb_run_id(run_dir), resume="allow")
