"""metrics.jsonl as it is written and resumed, W&B mode, plots."""

import json
import re

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


def test_a_new_run_never_truncates_metrics(tmp_path):
    Tracker(tmp_path, backends=[], config={}, project="p", name="n").log({"a": 1.0}, step=0)
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="already holds metrics of another run"):
        Tracker(tmp_path, backends=[], config={}, project="p", name="n")
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    ids = {}
    for run, resume_step in (("a", 0), ("a", 1), ("b", 0)):  # a; a resumed; b, a new run with the same name
        (tmp_path / run).mkdir(exist_ok=True)
        tracker = Tracker(tmp_path / run, backends=["wandb"], config={}, project="p", name="same-name",
                          resume_step=resume_step)
        tracker.log({"x": 1.0}, step=resume_step + 1)
        ids.setdefault(run, []).append(tracker.wandb.id)
        tracker.close()
    assert ids["a"][0] == ids["a"][1] and ids["b"][0] != ids["a"][0]
    assert (tmp_path / "a" / "wandb_run_id").read_text().strip() == ids["a"][0]
    offline = sorted(p.name for p in (tmp_path / "a" / "wandb").glob("offline-run-*"))
    # `wandb sync` joins them; two starts in the same second get wandb's "-1" suffix on the second folder
    pattern = re.compile(rf"offline-run-\d{{8}}_\d{{6}}-{ids['a'][0]}(-\d+)?")
    assert len(offline) == 2 and all(pattern.fullmatch(name) for name in offline), offline
