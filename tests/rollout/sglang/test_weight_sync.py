"""Weight updates through SGLang's real session logic (``SchedulerWeightUpdaterManager``) and its real
``WeightUpdater``, driven through ``SGLangEngine``: loads happen inside ``begin/end_weight_update``, every
answer is checked, a refused update leaves the old weights serving, a half-done one blocks generation
until a complete update succeeds. The reference is the tensors themselves (exact equality)."""

from __future__ import annotations

import pytest
import torch

from tests.rollout.sglang.sglang_env import import_sglang

import_sglang()

from tests.rollout.sglang.sglang_loopback import (  # noqa: E402
    BroadcastTrainer,
    LoopbackEngine,
    start_runtime,
    write_checkpoint,
)
from vortex_rl.rollout.sglang import SGLangEngine, SGLangOptions  # noqa: E402
from vortex_rl.rollout.sglang.weight_sync import WeightUpdateError, checkpoint_shapes  # noqa: E402


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"embed": torch.randn(8, 4, generator=g), "head": torch.randn(4, 8, generator=g)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = write_checkpoint(tmp_path_factory.mktemp("ckpt"), _weights(0))
    stop = start_runtime(directory)
    yield directory
    stop()


@pytest.fixture
def served(model_dir):
    """An ``SGLangEngine`` over the loopback (no SGLang server started), serving ``_weights(0)``; buckets
    of 1 MiB hold one tiny tensor each once the bucket limit is forced to 0 bytes below."""
    loop = LoopbackEngine(model_dir)
    loop.model.load_weights(_weights(0).items())
    engine = SGLangEngine.__new__(SGLangEngine)
    engine.engine, engine.options, engine.sleeping = loop, SGLangOptions(weight_bucket_mb=1), False
    engine.weights_error, engine.weight_shapes = None, checkpoint_shapes(str(model_dir))
    return engine, loop


def _serving(loop: LoopbackEngine) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in loop.model.named_parameters()}


def _assert_serving(loop, weights):
    for name, tensor in _serving(loop).items():
        torch.testing.assert_close(tensor, weights[name], rtol=0, atol=0)


def test_update_weights_loads_inside_a_session_and_flushes_once(served):
    engine, loop = served
    assert engine.update_weights(_weights(1).items()) == 2
    _assert_serving(loop, _weights(1))
    assert loop.manager._session is None and loop.flushes == 1
    assert engine.update_weights(_weights(2).items()) == 2  # the session was closed: a second one opens
    _assert_serving(loop, _weights(2))


def test_refused_session_leaves_the_old_weights_serving(served):
    engine, loop = served
    assert loop.begin_weight_update()[0]  # someone else holds SGLang's one session
    with pytest.raises(WeightUpdateError, match="already open") as err:
        engine.update_weights(_weights(1).items())
    assert not err.value.weights_changed and engine.weights_error is None
    _assert_serving(loop, _weights(0))
    assert loop.end_weight_update()[0]


def test_bad_tensor_after_a_loaded_bucket_blocks_generation_until_a_full_update(served, monkeypatch):
    engine, loop = served
    monkeypatch.setattr("vortex_rl.rollout.sglang.engine.weight_buckets",
                        lambda tensors, limit: ([item] for item in tensors))  # one tensor per bucket
    bad = [("embed", _weights(1)["embed"]), ("head", torch.zeros(8, 4))]  # head is [4, 8]
    with pytest.raises(WeightUpdateError, match=r"'head' has shape \(8, 4\)") as err:
        engine.update_weights(bad)
    assert err.value.weights_changed
    assert loop.manager._session is None  # closed on failure: the next update can open one
    torch.testing.assert_close(_serving(loop)["embed"], _weights(1)["embed"], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="mix of old and new weights"):
        engine.generate([[1, 2, 3]])
    engine.update_weights(_weights(2).items())
    assert engine.weights_error is None
    _assert_serving(loop, _weights(2))


def test_bad_tensor_in_the_first_bucket_leaves_the_old_weights(served):
    engine, loop = served
    with pytest.raises(WeightUpdateError) as err:
        engine.update_weights([("head", torch.zeros(3, 3))])
    assert not err.value.weights_changed and engine.weights_error is None
    _assert_serving(loop, _weights(0))


def test_sglang_raising_in_a_load_counts_as_changed_weights(served):
    """SGLang's WeightUpdater does not catch a model's load_weights error (here an unknown name, which
    the checkpoint check lets through): the state is unknown, so generation is blocked."""
    engine, loop = served
    with pytest.raises(WeightUpdateError, match=r"bucket 0\) raised: KeyError") as err:
        engine.update_weights([("not_a_weight", torch.zeros(2))])
    assert err.value.weights_changed and engine.weights_error is not None


def test_iterator_failure_closes_the_session(served):
    engine, loop = served

    def tensors():
        yield "embed", _weights(1)["embed"]
        raise OSError("trainer shard gather failed")

    with pytest.raises(WeightUpdateError, match="trainer shard gather failed"):
        engine.update_weights(tensors())
    assert loop.manager._session is None


def test_refused_flush_is_an_error(served):
    engine, loop = served
    loop.flush_ok = False
    with pytest.raises(WeightUpdateError, match="refused to flush") as err:
        engine.update_weights(_weights(1).items())
    assert err.value.weights_changed and engine.weights_error is not None
    loop.flush_ok = True
    engine.update_weights(_weights(1).items())
    assert engine.weights_error is None


def test_distributed_update_runs_in_a_session_and_a_failed_receive_keeps_the_weights(served):
    engine, loop = served
    # SGLang's real receive fails (no update group joined) before loading anything.
    with pytest.raises(WeightUpdateError, match="Failed to receive weights") as err:
        engine.update_weights_from_distributed(["embed"], [torch.float32], [[8, 4]])
    assert not err.value.weights_changed and loop.manager._session is None
    _assert_serving(loop, _weights(0))
    engine.update_weights(_weights(1).items())  # SGLang's session is usable again
    _assert_serving(loop, _weights(1))


def test_distributed_update_loads_the_trainers_broadcast_in_a_session(served):
    """The trainer broadcasts over a real gloo group that SGLang's WeightUpdater joined."""
    engine, loop = served
    trainer = BroadcastTrainer("vortex_weight_sync")
    trainer.broadcast([_weights(4)["embed"], _weights(4)["head"]])  # waits for the engine in the background
    engine.init_weight_sync_group("127.0.0.1", trainer.port, rank_offset=1, world_size=2, backend="gloo")
    engine.update_weights_from_distributed(["embed", "head"], [torch.float32] * 2, [[8, 4], [4, 8]])
    trainer.join()
    _assert_serving(loop, _weights(4))
    assert loop.manager._session is None and loop.flushes == 1  # SGLang flushed in the same call


def test_update_from_disk_reloads_the_checkpoint(served, tmp_path):
    engine, loop = served
    engine.update_weights_from_disk(str(write_checkpoint(tmp_path / "step1", _weights(3))))
    _assert_serving(loop, _weights(3))
    with pytest.raises(WeightUpdateError, match="update_weights_from_disk"):
        engine.update_weights_from_disk(str(tmp_path / "missing"))
