"""Probe the trainer as a new user and an operator would: bad inputs (each must end in one clear line,
leave no run directory and change nothing), and injected faults (each must be survived with nothing lost).

    python scripts/probe_reliability.py [--out probe_reliability.json] [--skip-faults]

Prints a table per case and a summary (bad inputs tried / clear errors; faults injected / survived);
writes every case (command, exit code, seconds, last line) as JSON. Runs on a CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["recipe=tiny_cpu", "trainer.logger=[console]", "sft_warmup.steps=0", "data.train_batch_size=4",
        "actor.ppo_mini_batch_size=4", "rollout.n=2", "data.val_dataset=null", "reward.num_workers=0",
        "trainer.orchestrator=local", "trainer.save_freq=1"]
UNCACHED = "vortex-rl-probe/no-such-model"

# (name, extra overrides or a full command, expected words in the one-line error)
CONFIG_INPUTS = [
    ("unknown recipe", ["recipe=nope"], "unknown recipe 'nope'"),
    ("not key=value", ["tiny_cpu"], "is not key=value"),
    ("key typo", ["actor.optim.lrr=1"], "Did you mean 'actor.optim.lr'"),
    ("section typo", ["trainr.total_steps=1"], "unknown config key 'trainr'"),
    ("moved key", ["trainer.placement=colocated"], "moved to 'cluster.placement'"),
    ("new dict key without +", ["data.train_options.nope=1"], "+key=value"),
    ("lr not a number", ["actor.optim.lr=abc"], "actor.optim.lr='abc' must be a number"),
    ("lr negative", ["actor.optim.lr=-1"], "actor.optim.lr=-1.0 must be > 0"),
    ("group of one", ["rollout.n=1"], "rollout.n >= 2"),
    ("n fractional", ["rollout.n=2.5"], "rollout.n=2.5 must be an integer"),
    ("top_p 0", ["rollout.top_p=0"], "rollout.top_p=0.0 must be in (0, 1]"),
    ("top_p 1.5", ["rollout.top_p=1.5"], "rollout.top_p=1.5"),
    ("top_k -5", ["rollout.top_k=-5"], "rollout.top_k=-5"),
    ("temperature 0", ["rollout.temperature=0"], "rollout.temperature=0.0 must be > 0"),
    ("val top_p", ["rollout.val_kwargs.top_p=2"], "rollout.val_kwargs.top_p=2.0"),
    ("page size 3", ["rollout.sparse.page_size=3"], "rollout.sparse.page_size=3"),
    ("budget 0", ["rollout.sparse.budget_pages=0"], "rollout.sparse.budget_pages"),
    ("unknown flow", ["rollout.flow=nope"], "rollout.flow='nope'"),
    ("unknown engine", ["rollout.engine=vllm"], "rollout.engine='vllm'"),
    ("logprobs 50", ["rollout.logprobs=50"], "rollout.logprobs=50"),
    ("rollout.seed", ["rollout.seed=3"], "set trainer.seed instead"),
    ("unknown reward", ["reward.fn=nope"], "reward.fn='nope'"),
    ("reward timeout 0", ["reward.timeout_s=0"], "reward.timeout_s=0.0"),
    ("reward workers -1", ["reward.num_workers=-1"], "reward.num_workers=-1"),
    ("batch 0", ["data.train_batch_size=0"], "data.train_batch_size=0"),
    ("unknown val dataset", ["data.val_dataset=aime25"], "data.val_dataset='aime25'"),
    ("unknown train dataset", ["data.train_dataset=nope"], "data.train_dataset='nope'"),
    ("mini batch not dividing", ["actor.ppo_mini_batch_size=3"], "actor.ppo_mini_batch_size=3 must divide"),
    ("total steps 0", ["trainer.total_steps=0"], "trainer.total_steps=0"),
    ("unknown logger", ["trainer.logger=[tensorboard]"], "trainer.logger has unknown backends"),
    ("unknown orchestrator", ["trainer.orchestrator=slurm"], "trainer.orchestrator='slurm'"),
    ("unknown device", ["trainer.device=tpu"], "trainer.device='tpu'"),
    ("unknown dtype", ["model.dtype=float8"], "model.dtype"),
    ("clip ratio 1.5", ["actor.clip_ratio_low=1.5"], "actor.clip_ratio_low=1.5"),
    ("unknown placement", ["cluster.placement=sideways"], "cluster.placement='sideways'"),
    ("unknown estimator", ["algorithm.adv_estimator=ppo"], "algorithm.adv_estimator='ppo'"),
    ("keep 0 checkpoints", ["trainer.max_ckpt_to_keep=0"], "trainer.max_ckpt_to_keep=0"),
]


def run_inputs(tmp: Path) -> list[dict]:
    """Bad inputs after composition: pre-flight, data files, the run directory, ``generate``."""
    data = tmp / "data"
    data.mkdir()
    good = json.dumps({"problem": "1+1", "answer": "2"})
    (data / "latin1.jsonl").write_bytes((good + "\n").encode() + '{"problem": "café", "answer": "1"}\n'.encode("latin-1"))
    (data / "broken.jsonl").write_text(good + "\n" + good + "\n" + '{"problem": "2+2"\n')
    (data / "no_answer.jsonl").write_text(good + "\n" + json.dumps({"problem": "3+3"}) + "\n")
    (data / "table.csv").write_text("problem,answer\n1+1,2\n")
    (data / "floats.jsonl").write_text('{"prompt_token_ids": [1, 2]}\n{"prompt_token_ids": [1.7, 2.2]}\n')
    (data / "bad_json.jsonl").write_text('{"prompt": "a"}\n\n{"prompt": "b"\n')
    (data / "latin1_prompts.txt").write_bytes(b"hello\ncaf\xe9\n")
    (data / "ok.txt").write_text("hello\n")
    file_data = ["data.train_dataset=file"]
    train = [
        ("GPU asked for, none here", ["trainer.device=cuda"], "trainer.device='cuda' but this machine has"),
        ("model dir missing", ["model.path=./no/such/dir"], "model.path='./no/such/dir': no such file"),
        ("hub id offline, not cached", [f"model.path={UNCACHED}", "model.tokenizer_path=char"], f"model.path='{UNCACHED}'"),
        ("hub id, hub unreachable", [f"model.path={UNCACHED}", "model.tokenizer_path=char", "+env.HF_ENDPOINT"],
         "the hub is not reachable"),
        ("big recipe on a CPU machine", ["recipe=qwen3_4b_polaris"], "trainer.device='cuda'"),
        ("big recipe, cpu, no hub", ["recipe=qwen3_4b_polaris", "trainer.device=cpu", "+env.HF_ENDPOINT"],
         "model.path='Qwen/Qwen3-4B'"),
        ("package not installed", ["model.path=pkg:no_such_pkg/m.gguf"], "package 'no_such_pkg' is not installed"),
        ("unknown random arch", ["model.path=random:gpt2"], "random weights are model.path=random:qwen3"),
        ("random weights, no tokenizer", ["model.tokenizer_path=null"], "set model.tokenizer_path"),
        ("data file missing", file_data + [f"data.train_files={data / 'missing.jsonl'}"], "does not exist"),
        ("data not UTF-8", file_data + [f"data.train_files={data / 'latin1.jsonl'}"], "line 2 is not UTF-8"),
        ("data bad JSON", file_data + [f"data.train_files={data / 'broken.jsonl'}"], "line 3 is not valid JSON"),
        ("data row without answer", file_data + [f"data.train_files={data / 'no_answer.jsonl'}"], "answer"),
        ("data csv", file_data + [f"data.train_files={data / 'table.csv'}"], "suffix '.csv' not supported"),
        ("all prompts too long", ["data.max_prompt_length=1"], "exceed max_prompt_length=1"),
        ("fewer prompts than a batch", ["data.train_batch_size=1000"], "fewer than data.train_batch_size=1000"),
        ("resume from nowhere", [f"trainer.resume={tmp / 'nowhere'}"], "is neither a checkpoint nor a run directory"),
        ("reuse a finished run", ["@reuse"], "already holds a run"),
    ]
    results = []
    finished = tmp / "finished"
    _train(TINY + [f"trainer.output_dir={finished}", "trainer.total_steps=1"], tmp)
    for name, extra, expect in train:
        env = {"HF_HUB_OFFLINE": "1"}
        if "+env.HF_ENDPOINT" in extra:
            extra = [e for e in extra if e != "+env.HF_ENDPOINT"]
            env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": ""}
        out_dir = finished if extra == ["@reuse"] else tmp / "runs-probe" / "".join(c if c.isalnum() else "_" for c in name)
        extra = [] if extra == ["@reuse"] else extra
        before = _snapshot(finished)
        result = _train(TINY + ["trainer.total_steps=2"] + extra + [f"trainer.output_dir={out_dir}"], tmp, env)
        result.update(name=name, expect=expect, left_a_directory=out_dir != finished and out_dir.exists(),
                      changed_a_run=_snapshot(finished) != before)
        results.append(result)
    gen = [
        ("generate: bad JSON line", ["--prompts", str(data / "bad_json.jsonl")], "bad_json.jsonl:3: not valid JSON"),
        ("generate: float token ids", ["--prompts", str(data / "floats.jsonl")], "floats.jsonl:2: prompt_token_ids=[1.7, 2.2]"),
        ("generate: not UTF-8", ["--prompts", str(data / "latin1_prompts.txt")], "line 2 is not UTF-8"),
        ("generate: missing model", ["--prompts", str(data / "ok.txt")], "could not be loaded"),
    ]
    for name, extra, expect in gen:
        result = _run([sys.executable, "-m", "vortex_rl.generate", "--model", str(tmp / "no-model"), *extra], tmp)
        result.update(name=name, expect=expect, left_a_directory=False, changed_a_run=False)
        results.append(result)
    return results


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> dict:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v != ""}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    text = (done.stdout + done.stderr).strip()
    return {"command": " ".join(command[2:]), "rc": done.returncode, "seconds": round(time.perf_counter() - start, 1),
            "last_line": text.splitlines()[-1] if text else "", "traceback": "Traceback" in text}


def _train(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict:
    return _run([sys.executable, "-m", "vortex_rl.train", *args], cwd, env)


def clear(result: dict) -> bool:
    line = result["last_line"]
    return (result["rc"] != 0 and not result["traceback"] and line.startswith(("config error:", "error:"))
            and result["expect"] in line and not result["left_a_directory"] and not result["changed_a_run"])


def config_inputs(tmp: Path) -> list[dict]:
    results = []
    for index, (name, extra, expect) in enumerate(CONFIG_INPUTS):
        args = extra if extra[0].startswith("recipe=") or "=" not in extra[0] else TINY + extra
        out_dir = tmp / f"cfg-{index}"  # one per case: a directory left behind is charged to its case
        result = _train(args + [f"trainer.output_dir={out_dir}"], tmp)
        result.update(name=name, expect=expect, left_a_directory=out_dir.exists(), changed_a_run=False)
        results.append(result)
    return results


def faults(tmp: Path) -> list[dict]:
    """Injected faults; each reports whether the run survived with nothing lost."""
    from vortex_rl.trainers.run.manifest import verify_checkpoint

    out = []
    steps4 = TINY + ["trainer.total_steps=4"]
    straight = tmp / "f-straight"
    _train(steps4 + [f"trainer.output_dir={straight}"], tmp)
    reference = _metrics(straight)

    # 1. SIGINT once step 2 is checkpointed, then resume=auto: the same metrics as the uninterrupted run.
    run = tmp / "f-sigint"
    _, hit = _interrupt(steps4 + [f"trainer.output_dir={run}"], tmp, run / "checkpoints" / "global_step_2", signal.SIGINT)
    _train(steps4 + [f"trainer.output_dir={run}", "trainer.resume=auto"], tmp)
    out.append({"name": "SIGINT after step 2, resume=auto", "landed": hit, "survived": _same(_metrics(run), reference)})

    # 2. kill -9 while checkpointing: latest stays valid, the partial directory is removed at the next start.
    run = tmp / "f-kill9"
    pid, hit = _interrupt(steps4 + [f"trainer.output_dir={run}"], tmp, run / "checkpoints" / "global_step_1", signal.SIGKILL,
                     watch_tmp=True)
    partial = run / "checkpoints" / f".tmp-global_step_9-{pid}"  # what a kill mid-write leaves (made sure of)
    (partial / "model").mkdir(parents=True, exist_ok=True)
    (partial / "model" / "model.safetensors").write_bytes(b"\0" * 4096)
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text()
    verify_checkpoint(latest)
    _train(steps4 + [f"trainer.output_dir={run}", "trainer.resume=auto"], tmp)
    stale = list((run / "checkpoints").glob(".tmp-*"))
    out.append({"name": "kill -9 mid-checkpoint, resume=auto", "landed": hit, "survived": not stale and _same(_metrics(run), reference)})

    # 3. A flipped byte in the newest checkpoint's weights: skipped with a warning, resumed from the one before.
    run = tmp / "f-corrupt"
    _train(TINY + ["trainer.total_steps=2", f"trainer.output_dir={run}"], tmp)
    weights = run / "checkpoints" / "global_step_2" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    done = _run([sys.executable, "-m", "vortex_rl.train", *steps4, f"trainer.output_dir={run}", "trainer.resume=auto"], tmp)
    out.append({"name": "corrupt newest checkpoint, resume=auto", "survived": done["rc"] == 0 and _same(_metrics(run), reference)})

    # 4. The newest checkpoint's trainer_state.pt cut short (a full disk): the same.
    run = tmp / "f-truncated"
    _train(TINY + ["trainer.total_steps=2", f"trainer.output_dir={run}"], tmp)
    state = run / "checkpoints" / "global_step_2" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    done = _run([sys.executable, "-m", "vortex_rl.train", *steps4, f"trainer.output_dir={run}", "trainer.resume=auto"], tmp)
    out.append({"name": "truncated trainer_state.pt, resume=auto", "survived": done["rc"] == 0 and _same(_metrics(run), reference)})
    return out


def _interrupt(args: list[str], cwd: Path, wait_for: Path, sig: int, watch_tmp: bool = False) -> tuple[int, bool]:
    """Start a run, send ``sig`` once ``wait_for`` exists (and, with ``watch_tmp``, while a checkpoint is
    being written); returns the pid and whether the signal landed while the run was still going."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "vortex_rl.train", *args], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    root = wait_for.parent
    hit = False
    while time.monotonic() < deadline and process.poll() is None:
        if wait_for.exists() and (not watch_tmp or any(root.glob(".tmp-*"))):
            hit = True
            break
        time.sleep(0.002)
    process.send_signal(sig)
    process.wait()
    return process.pid, hit


def _metrics(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: {k: v for k, v in row.items() if not k.startswith(("timing_s/", "perf/"))} for row in rows}


def _same(a: dict, b: dict, tol: float = 1e-6) -> bool:
    if sorted(a) != sorted(b):
        return False
    for step in a:
        if a[step].keys() != b[step].keys():
            return False
        for key, value in a[step].items():
            other = b[step][key]
            if (value is None) != (other is None) or (value is not None and abs(value - other) > tol * max(1.0, abs(other))):
                return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="probe_reliability.json")
    parser.add_argument("--skip-faults", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vortex-probe-") as tmp_name:
        tmp = Path(tmp_name)
        inputs = config_inputs(tmp) + run_inputs(tmp)
        fault_results = [] if args.skip_faults else faults(tmp)
    print(f"{'bad input':<34}{'clear':>6}{'s':>7}  last line")
    for r in inputs:
        print(f"{r['name']:<34}{'yes' if clear(r) else 'NO':>6}{r['seconds']:>7.1f}  {r['last_line'][:110]}")
    for f in fault_results:
        landed = "" if f.get("landed", True) else " (the signal came after the run ended)"
        print(f"fault: {f['name']:<44} survived, nothing lost: {'yes' if f['survived'] else 'NO'}{landed}")
    n_clear = sum(clear(r) for r in inputs)
    n_survived = sum(f["survived"] for f in fault_results)
    print(f"\nbad inputs tried {len(inputs)}, clear one-line errors {n_clear}; "
          f"faults injected {len(fault_results)}, survived with nothing lost {n_survived}")
    Path(args.out).write_text(json.dumps({"inputs": inputs, "faults": fault_results,
                                          "summary": {"inputs": len(inputs), "clear": n_clear,
                                                      "faults": len(fault_results), "survived": n_survived}}, indent=1))
    return 0 if n_clear == len(inputs) and n_survived == len(fault_results) else 1


if __name__ == "__main__":
    sys.exit(main())
