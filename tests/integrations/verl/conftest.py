"""verl's contract with a rollout backend, without Ray: verl's real ``RolloutConfig`` and ``TokenOutput``,
our server driven by asyncio, our adapter talking to it through a stand-in for a Ray actor handle.
Everything here skips when verl is not installed (``make test-verl`` installs it)."""

from __future__ import annotations

import importlib.util
import types

import pytest

if importlib.util.find_spec("verl") is None:  # `make test` without verl: these tests are not collected
    collect_ignore_glob = ["test_*.py"]

from tests.threads import one_torch_thread  # noqa: F401 (autouse fixture)


def rollout_config(**kw):
    from verl.workers.config import RolloutConfig

    engine = dict(device="cpu", num_pages=96, sparse=dict(page_size=8, budget_pages=3))
    engine.update(kw.pop("vortex", {}))
    defaults = dict(name="vortex", prompt_length=64, response_length=24, tensor_model_parallel_size=1,
                    max_num_seqs=16, max_num_batched_tokens=512, dtype="float32", engine_kwargs={"vortex": engine})
    return RolloutConfig(**{**defaults, **kw})


class ActorHandle:
    """What the adapter sees of a Ray actor handle: ``handle.method.remote(...)`` returns an awaitable."""

    def __init__(self, obj):
        self.obj = obj
        self.calls: list[str] = []

    def __getattr__(self, name):
        method = getattr(self.obj, name)

        def remote(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)

        return types.SimpleNamespace(remote=remote)


@pytest.fixture(scope="module")
def tiny_model(make_tiny_hf_model):
    return make_tiny_hf_model("qwen3")


def make_server(model, **config_kw):
    from vortex_rl.integrations.verl.options import engine_config
    from vortex_rl.integrations.verl.server import VortexServer
    from vortex_rl.rollout import Engine

    config = rollout_config(**config_kw)
    return VortexServer(config, types.SimpleNamespace(local_path=None), engine=Engine.from_pretrained(
        model, config=engine_config(config)))
