"""`VortexRolloutAdapter` as verl's trainer worker drives it (``engine_workers.update_weights``: resume
weights, ``update_weights(generator)``, resume kv_cache), against our server through a stand-in actor
handle; registration and the version guard."""

from __future__ import annotations

import asyncio
import importlib
import tomllib
import types
from pathlib import Path

import pytest
import torch

pytest.importorskip("verl")

from tests.integrations.verl.conftest import ActorHandle, make_server, rollout_config  # noqa: E402
from tests.tiny_models import tiny_hf_model  # noqa: E402
from vortex_rl.integrations.verl.adapter import VortexRolloutAdapter  # noqa: E402
from vortex_rl.rollout import SamplingParams, weight_checksum  # noqa: E402

GREEDY = dict(temperature=0.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)
PROMPT = [5, 17, 33, 2, 90, 41, 7]


def adapter_for(server, *, leader=True, tied=False):
    handle = ActorHandle(server)
    model_config = types.SimpleNamespace(hf_config=types.SimpleNamespace(tie_word_embeddings=tied))
    adapter = VortexRolloutAdapter(rollout_config(), model_config, None, replica_rank=0,
                                   server_lookup=lambda rank: handle)
    adapter.is_leader_rank = leader
    return adapter, handle


def trainer_generator(model):
    """What verl's engine.get_per_tensor_param() yields: (HF name, full tensor) per parameter."""
    return ((name, t.detach().clone()) for name, t in model.state_dict().items())


def sync_like_verl(adapter, weights, global_steps):
    async def main():
        await adapter.resume(tags=["weights"])
        await adapter.update_weights(weights, global_steps=global_steps)
        await adapter.resume(tags=["kv_cache"])

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["qwen3", "qwen2"])  # untied, tied embeddings
def test_weights_reach_the_engine_and_it_samples_like_a_fresh_one(kind):
    old, new = tiny_hf_model(kind, seed=0), tiny_hf_model(kind, seed=1)
    server = make_server(old)
    adapter, handle = adapter_for(server, tied=new.config.tie_word_embeddings)
    asyncio.run(server.release_kv_cache())  # verl sleeps the replicas before syncing
    sync_like_verl(adapter, trainer_generator(new), global_steps=3)
    loads = handle.calls[1:-2]
    assert handle.calls[0] == "begin_weight_update" and handle.calls[-2:] == ["commit_weight_update", "resume_kv_cache"]
    assert loads and set(loads) == {"load_weight_bucket"}
    assert server.num_weight_updates == 1 and server.global_steps == 3
    tied = ["lm_head.weight"] if new.config.tie_word_embeddings else []
    assert server.last_weight_checksum == pytest.approx(weight_checksum(new.named_parameters(), tied_names=tied),
                                                        rel=1e-9)
    out = asyncio.run(server.generate(PROMPT, dict(GREEDY), request_id="a"))
    fresh = make_server(new).engine.generate([PROMPT], SamplingParams(temperature=0, max_new_tokens=24),
                                             use_tqdm=False)[0][0]
    assert out.token_ids == fresh.token_ids and out.extra_fields["global_steps"] == 3
    torch.testing.assert_close(torch.tensor(out.log_probs), torch.tensor(fresh.logprobs), atol=1e-5, rtol=0)


def test_a_corrupted_bucket_is_refused_and_the_old_weights_stay(monkeypatch):
    from vortex_rl.integrations.verl import adapter as adapter_module

    old, new = tiny_hf_model("qwen3", seed=0), tiny_hf_model("qwen3", seed=1)
    server = make_server(old)
    before = server.engine.state_checksum()
    adapter, _ = adapter_for(server)
    real_pack = adapter_module.pack_bucket

    def lossy_pack(bucket, dtype):  # a transport that flips one value after the checksum was taken
        payload, checksum = real_pack(bucket, dtype)
        payload["named"][0][1].view(-1)[0] += 1.0
        return payload, checksum

    monkeypatch.setattr(adapter_module, "pack_bucket", lossy_pack)
    with pytest.raises(ValueError, match="corrupted in transport.*the old weights stay"):
        sync_like_verl(adapter, trainer_generator(new), global_steps=1)
    assert server.engine.state_checksum() == before and server.num_weight_updates == 0


def test_an_incomplete_update_is_reported():
    old, new = tiny_hf_model("qwen3", seed=0), tiny_hf_model("qwen3", seed=1)
    server = make_server(old)
    adapter, _ = adapter_for(server)
    partial = ((n, t) for n, t in trainer_generator(new) if "layers.1." not in n)
    with pytest.raises(ValueError, match="did not send every engine weight"):
        sync_like_verl(adapter, partial, global_steps=1)


def test_every_rank_drains_the_generator_but_only_the_leader_talks_to_the_server():
    server = make_server(tiny_hf_model("qwen3", seed=0))
    adapter, handle = adapter_for(server, leader=False)
    drained = []

    def generator():
        for name, t in trainer_generator(tiny_hf_model("qwen3", seed=1)):
            drained.append(name)  # an FSDP all-gather runs here on every rank
            yield name, t

    sync_like_verl(adapter, generator(), global_steps=1)
    assert len(drained) == len(tiny_hf_model("qwen3").state_dict()) and handle.calls == []


def test_other_wire_formats_and_lora_are_refused():
    adapter, _ = adapter_for(make_server(tiny_hf_model("qwen3")))
    with pytest.raises(NotImplementedError, match="wire_format='delta_flush'"):
        asyncio.run(adapter.update_weights(iter(()), wire_format="delta_flush"))
    with pytest.raises(NotImplementedError, match="lora.merge=True"):
        asyncio.run(adapter.update_weights(iter(()), peft_config={"r": 8}))


def test_replica_rank_and_leader_come_from_verls_rollout_mesh():
    class Mesh:  # verl's (dp, infer_tp, infer_pp) mesh, as seen from rank (dp=2, tp=1)
        def get_coordinate(self):
            return [2, 1, 0]

    model_config = types.SimpleNamespace(hf_config=None)
    a = VortexRolloutAdapter(rollout_config(), model_config, Mesh(), server_lookup=lambda r: None)
    assert (a.replica_rank, a.is_leader_rank) == (2, False)


def test_registration_through_the_entry_point_and_the_version_guard():
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    from vortex_rl.integrations.verl.compat import check_verl_version

    pyproject = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    target = pyproject["project"]["entry-points"]["verl.plugins"]["vortex"]
    importlib.import_module(target)  # what verl's entry-point loader does at `import verl`
    assert get_rollout_class("vortex") is VortexRolloutAdapter
    assert get_rollout_replica_class("vortex").__name__ == "VortexReplica"
    assert check_verl_version("0.9.1") == "0.9.1"
    with pytest.raises(ImportError, match=r"needs verl 0.9.x .* found verl 0.10.0"):
        check_verl_version("0.10.0")


def test_engine_options_come_from_verl_keys():
    from vortex_rl.integrations.verl.options import engine_config

    cfg = engine_config(rollout_config(max_num_seqs=8, vortex=dict(flow="dense", sparse=dict(page_size=16,
                                                                                              budget_pages=32))))
    assert (cfg.flow, cfg.sparse.page_size, cfg.sparse.budget_pages, cfg.max_num_seqs, cfg.max_model_len,
            cfg.dtype) == ("dense", 16, 32, 8, 64 + 24, "float32")
    with pytest.raises(ValueError, match=r"unknown keys \['budget'\]; accepted: \['flow', 'sparse'"):
        engine_config(rollout_config(vortex=dict(budget=32)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_bucket_travels_as_one_ipc_buffer_and_arrives_intact():
    from vortex_rl.integrations.verl.weight_sync import pack_bucket, unpack_bucket

    bucket = [("a.weight", torch.randn(3, 5, device="cuda")), ("b.bias", torch.randn(7, device="cuda"))]
    payload, checksum = pack_bucket(bucket, torch.bfloat16)
    assert set(payload) == {"specs", "cuda", "buffer"} and payload["buffer"].numel() == 22
    got = unpack_bucket({k: v for k, v in payload.items() if k != "buffer"})
    assert [n for n, _ in got] == ["a.weight", "b.bias"]
    for (_, want), (_, t) in zip(bucket, got):
        torch.testing.assert_close(t, want.to(torch.bfloat16), atol=0, rtol=0)
    assert checksum == pytest.approx(weight_checksum(got), rel=1e-12)


def test_the_entry_point_registers_vortex_at_import_verl(tmp_path):
    """verl's own entry-point discovery (``verl/__init__.py`` ~55-76) in a fresh interpreter, with our
    pyproject's ``verl.plugins`` entry installed as package metadata on a temporary path."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    target = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]["verl.plugins"]["vortex"]
    dist = tmp_path / "vortex_rl_ep-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vortex-rl-ep\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[verl.plugins]\nvortex = {target}\n")
    code = ("import verl\nfrom verl.workers.rollout.base import _ROLLOUT_REGISTRY\n"
            "from verl.workers.rollout.replica import RolloutReplicaRegistry\n"
            "print(('vortex', 'async') in _ROLLOUT_REGISTRY, 'vortex' in RolloutReplicaRegistry._registry)")
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_MODULES"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(root), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "True"], out.stdout
