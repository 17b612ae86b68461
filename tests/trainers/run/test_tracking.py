"""metrics.jsonl as it is written and resumed, W&B mode, plots."""

import json

import pytest

from vortex_rl.trainers.run.plots import save_plots
from vortex_rl.trainers.run.tracking import Tracker, wandb_mode


def test_jsonl_rows_resume_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    tracker = Tracker(tmp_path, backends=["console"], config={}, project="p", name="n")
    tracker.log({"critic/rewards/mean": 0.25, "val-core/x/acc/mean@4": 0.5}, step=0)
    tracker.log({"critic/rewards/mean": float("nan")}, step=1)
    tracker.log({"critic/rewards/mean": 0.75}, step=2)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 0, "critic/rewards/mean": 0.25, "val-core/x/acc/mean@4": 0.5},
                    {"step": 1, "critic/rewards/mean": None}, {"step": 2, "critic/rewards/mean": 0.75}]
    resumed = Tracker(tmp_path, backends=[], config={}, project="p", name="n", resume_step=1)
    assert [r["step"] for r in resumed.history] == [0, 1]  # the line after the checkpoint is dropped
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    written = save_plots(rows, tmp_path)
    assert sorted(p.name for p in written) == ["reward.png", "val_acc.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_wandb_mode(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() is None  # W&B reads WANDB_MODE itself
