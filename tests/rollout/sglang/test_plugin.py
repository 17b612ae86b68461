"""Contract with SGLang: the entry point registers ``vortex``, the CLI accepts it, the backend covers the
attention-backend API, and the options survive the server argument they travel in."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import sys

import pytest

from tests.rollout.sglang.sglang_env import import_sglang

import_sglang()

from sglang.srt.arg_groups.choices import ATTENTION_BACKEND_CHOICES  # noqa: E402
from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS  # noqa: E402
from sglang.srt.layers.attention.base_attn_backend import AttentionBackend  # noqa: E402
from sglang.srt.plugins import GENERAL_PLUGINS_GROUP, load_plugins_by_group  # noqa: E402
from sglang.srt.server_args import prepare_server_args  # noqa: E402

from vortex_rl.rollout.sglang import compat, plugin  # noqa: E402
from vortex_rl.rollout.sglang.backend import VortexAttnBackend  # noqa: E402
from vortex_rl.rollout.sglang.config import VortexBackendConfig  # noqa: E402
from vortex_rl.sparse import SparseConfig  # noqa: E402


def test_entry_point_registers_vortex_through_sglangs_loader():
    declared = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=GENERAL_PLUGINS_GROUP)}
    assert declared.get("vortex") == "vortex_rl.rollout.sglang.plugin:register", (
        f"entry point missing from the installed metadata ({declared}); reinstall: pip install -e ."
    )
    loaded = load_plugins_by_group(GENERAL_PLUGINS_GROUP)
    register, dist = loaded["vortex"]
    assert dist == "vortex-rl"
    register()
    register()  # SGLang loads plugins in every process, possibly twice: registering again is harmless
    assert ATTENTION_BACKENDS["vortex"] is plugin.create_vortex_backend
    assert ATTENTION_BACKEND_CHOICES.count("vortex") == 1


def test_cli_accepts_vortex_and_carries_the_options():
    plugin.register()
    options = VortexBackendConfig(flow="quest", sparse=SparseConfig(budget_pages=8, dense_layers=(0, 3)),
                                  dense_backend="triton")
    overrides = options.merge_into_override_args(json.dumps({"rope_theta": 1e6}))
    args = prepare_server_args([
        "--model-path", "dummy", "--attention-backend", "vortex", "--page-size", "16",
        "--json-model-override-args", overrides,
    ])
    assert args.attention_backend == "vortex"
    assert args.page_size == 16
    assert json.loads(args.json_model_override_args)["rope_theta"] == 1e6
    assert VortexBackendConfig.from_override_args(args.json_model_override_args) == options
    with pytest.raises(SystemExit):  # argparse still validates the choice list
        prepare_server_args(["--model-path", "dummy", "--attention-backend", "not-a-backend"])


def _base_methods_left_to_subclasses() -> set[str]:
    """Methods of SGLang's ``AttentionBackend`` that only raise ``NotImplementedError``, plus any declared
    ``@abstractmethod`` (0.5.23 declares none: its ABC marks them by raising)."""
    names = set(getattr(AttentionBackend, "__abstractmethods__", ()))
    for name, member in vars(AttentionBackend).items():
        if inspect.isfunction(member) and "raise NotImplementedError" in inspect.getsource(member):
            names.add(name)
    return names


def test_backend_implements_every_abstract_method():
    required = _base_methods_left_to_subclasses()
    assert {"forward_decode", "forward_extend", "init_cuda_graph_state",
            "get_cuda_graph_seq_len_fill_value"} <= required
    missing = sorted(n for n in required if getattr(VortexAttnBackend, n) is getattr(AttentionBackend, n))
    assert not missing, f"VortexAttnBackend leaves {missing} to AttentionBackend"
    assert not getattr(VortexAttnBackend, "__abstractmethods__", frozenset())
    for name in sorted(required | {"init_forward_metadata_out_graph", "init_forward_metadata_in_graph"}):
        ours = inspect.signature(getattr(VortexAttnBackend, name)).parameters
        theirs = inspect.signature(getattr(AttentionBackend, name)).parameters
        assert _positional(ours)[: len(_positional(theirs))] == _positional(theirs), name
        assert _keyword_only(theirs) <= _keyword_only(ours), name


def _positional(params) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [n for n, p in params.items() if p.kind in kinds]


def _keyword_only(params) -> set[str]:
    return {n for n, p in params.items() if p.kind == inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize("version, error", [
    ("0.5.20", r"SGLang >= 0\.5\.21.*found sglang 0\.5\.20"),  # arg_groups.choices yes, overall_checksum no
    ("0.5.24", r"newer than .* tested with \(0\.5\.23\)"),
    ("0.5.21", None), ("0.5.23", None), ("0.5.23.post1", None),
])
def test_sglang_outside_the_tested_range_is_refused(monkeypatch, version, error):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version)
    monkeypatch.delenv(compat.UNTESTED_ENV, raising=False)
    if error is None:
        assert compat.require_sglang() == version
        return
    with pytest.raises(RuntimeError, match=error):
        compat.require_sglang()


def test_untested_newer_sglang_runs_with_the_opt_in(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.6.0")
    monkeypatch.setenv(compat.UNTESTED_ENV, "1")
    with pytest.warns(RuntimeWarning, match="newer than"):
        assert compat.require_sglang() == "0.6.0"


def test_floor_matches_what_the_code_imports():
    """What registration and the weight-sum hook import exists in the installed SGLang (the floor's
    reason), and pyproject states the same range as the code."""
    from sglang.srt.arg_groups.choices import add_attention_backend_choices  # noqa: F401  (0.5.20)
    from sglang.srt.utils.weight_checker import overall_checksum  # noqa: F401  (0.5.21)
    from sglang.srt.managers.io_struct import BeginWeightUpdateReqInput  # noqa: F401  (0.5.21)
    import tomllib
    from pathlib import Path

    extra = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["sglang"]
    assert extra == [f"sglang>={compat.MIN_SGLANG},<0.5.{int(compat.MAX_TESTED_SGLANG.split('.')[-1]) + 1}"]


def test_unsupported_sglang_exits_through_sglangs_load_plugins(monkeypatch):
    """SGLang's load_plugins() swallows a plugin's exceptions; when this process was asked for
    --attention-backend vortex the plugin's refusal still stops it, with the reason."""
    import sglang.srt.plugins as sglang_plugins

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.5.19" if name == "sglang" else "1")
    monkeypatch.setattr(sglang_plugins, "_plugins_loaded", False)
    monkeypatch.setattr(sys, "argv", ["launch_server", "--model-path", "m", "--attention-backend", "vortex"])
    with pytest.raises(SystemExit, match=r"--attention-backend vortex: .*SGLang >= 0\.5\.21"):
        sglang_plugins.load_plugins()
    monkeypatch.setattr(sglang_plugins, "_plugins_loaded", False)
    monkeypatch.setattr(sys, "argv", ["launch_server", "--attention-backend=triton"])
    sglang_plugins.load_plugins()  # another backend: only logged


def test_vortex_requested_reads_the_command_line():
    assert plugin.vortex_requested(["x", "--attention-backend", "vortex"])
    assert plugin.vortex_requested(["x", "--decode-attention-backend=vortex"])
    assert not plugin.vortex_requested(["x", "--attention-backend", "fa3", "vortex"])
    assert not plugin.vortex_requested(["x", "--attention-backend"])


def test_options_are_validated():
    with pytest.raises(ValueError, match=r"unknown vortex option\(s\) \['budget'\]"):
        VortexBackendConfig.from_dict({"budget": 8})
    with pytest.raises(ValueError, match="dense_backend='flashmla'"):
        VortexBackendConfig.from_dict({"dense_backend": "flashmla"})
    with pytest.raises(ValueError, match="budget 2 < sink_pages"):
        VortexBackendConfig.from_dict({"budget_pages": 2})
    with pytest.raises(ValueError, match="not valid JSON"):
        VortexBackendConfig.from_override_args("{vortex")
    assert VortexBackendConfig.from_override_args("{}") == VortexBackendConfig()
    schedule = VortexBackendConfig(sparse=SparseConfig(budget_schedule=((1024, 8), (4096, 16))))
    assert VortexBackendConfig.from_dict(json.loads(json.dumps(schedule.to_dict()))) == schedule


def test_prepare_process_needs_the_installed_entry_point(monkeypatch):
    """SGLang's scheduler processes find the plugin only through its entry point: without it the engine
    refuses to start, naming the fix; with it the backend is registered in this process too."""
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [])
    with pytest.raises(RuntimeError, match=r"entry point .* is not installed .*pip install -e \."):
        plugin.prepare_process()
    monkeypatch.setattr(importlib.metadata, "entry_points", real)
    plugin.prepare_process()
    assert ATTENTION_BACKENDS["vortex"] is plugin.create_vortex_backend


def test_ray_rollout_actor_prepares_sglang_before_loading_the_model(monkeypatch):
    pytest.importorskip("ray")
    import dataclasses

    from vortex_rl.trainers.config import GRPOConfig
    from vortex_rl.trainers.ray.rollout_actor import RolloutActor

    calls = []

    def prepare():
        calls.append("prepare")
        raise RuntimeError("stop after prepare")

    monkeypatch.setattr(plugin, "prepare_process", prepare)
    config = GRPOConfig()
    config = dataclasses.replace(config, rollout=dataclasses.replace(config.rollout, engine="sglang"))
    actor = RolloutActor.__new__(RolloutActor)  # the class Ray wraps, without a Ray worker
    with pytest.raises(RuntimeError, match="stop after prepare"):
        actor.__init__(config, 0, use_gpu=False, num_threads=1, checkpoint_dir=None)
    assert calls == ["prepare"]
