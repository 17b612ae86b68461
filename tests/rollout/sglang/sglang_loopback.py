"""SGLang's real weight-update path in this process, with a CPU model in place of the GPU model runner.

``LoopbackEngine`` has ``sglang.Engine``'s weight methods (same signatures, SGLang's own request
structs, the tokenizer manager's merged ``(success, message)`` answers) and hands each request straight
to SGLang's real ``SchedulerWeightUpdaterManager`` (the session logic), whose runner holds SGLang's real
``WeightUpdater`` (receive, load, disk reload, begin/end). Only the IPC hop (``sglang.Engine`` and its
tokenizer manager need fastapi/uvloop, which the CPU test environment does not install) and the model
runner are stand-ins; the model is a tiny ``nn.Module`` with an SGLang-style ``load_weights``.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file
from sglang.srt import runtime_context
from sglang.srt.configs.model_config import ModelConfig
from sglang.srt.managers.communicator import FanOutCommunicator
from sglang.srt.managers.io_struct import (
    BeginWeightUpdateReqInput,
    EndWeightUpdateReqInput,
    FlushCacheReqOutput,
    InitWeightsUpdateGroupReqInput,
    UpdateWeightFromDiskReqInput,
    UpdateWeightsFromDistributedReqInput,
    UpdateWeightsFromTensorReqInput,
)
from sglang.srt.managers.scheduler_components.weight_updater import SchedulerWeightUpdaterManager
from sglang.srt.model_executor.model_runner_components.weight_updater import WeightUpdater
from sglang.srt.server_args import ServerArgs
from sglang.srt.utils import MultiprocessingSerializer
from transformers import Qwen3Config


class TinyModel(torch.nn.Module):
    """Two parameters under Hugging Face names; ``load_weights`` as SGLang's models do it (copy in
    place by name; an unknown name or a wrong shape raises part-way through)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Parameter(torch.zeros(8, 4))
        self.head = torch.nn.Parameter(torch.zeros(4, 8))

    def load_weights(self, weights):
        params = dict(self.named_parameters())
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                params[name].copy_(tensor)  # KeyError / RuntimeError for a bad name / shape
                loaded.add(name)
        return loaded



class LoopbackEngine:
    """``sglang.Engine``'s weight-update surface over SGLang's real scheduler-side objects."""

    def __init__(self, model_dir: Path):
        self.model = TinyModel()
        model_config = ModelConfig(model_path=str(model_dir))
        self.flush_ok = True
        self.flushes = 0
        self.updater = WeightUpdater(
            tp_rank=0, device="cpu", gpu_id=0, model_config=model_config, custom_weight_loaders={},
            get_model=lambda: self.model, update_model_fields=lambda model, **kw: None,
            recapture_cuda_graph=lambda: None, get_model_runner=lambda: self.runner,
        )
        self.runner = SimpleNamespace(model=self.model, weight_updater=self.updater)
        worker = SimpleNamespace(
            model_runner=self.runner,
            weight_update_runners=lambda: [("target", self.runner)],
            # TpModelWorker.deserialize_own_rank: this rank's payload.
            deserialize_own_rank=lambda payloads: MultiprocessingSerializer.deserialize(
                payloads[runtime_context.get_parallel().tp_rank]),
            init_weights_update_group=lambda r: self.updater.init_weights_update_group(
                r.master_address, r.master_port, r.rank_offset, r.world_size, r.group_name, r.backend),
        )
        self.manager = SchedulerWeightUpdaterManager(
            tp_worker=worker, draft_worker=None, memory_saver_adapter=None, flush_cache=self._flush,
            is_fully_idle=lambda **kw: True,
            scheduler=SimpleNamespace(record_weight_version_change=lambda new_version: None),
        )

    def _flush(self, empty_cache: bool = False) -> bool:
        self.flushes += self.flush_ok
        return self.flush_ok

    def _call(self, method: str, request):
        return FanOutCommunicator.merge_results([getattr(self.manager, method)(request)])

    # sglang.Engine's methods, same signatures
    def begin_weight_update(self, selector: str = "all"):
        return self._call("begin_weight_update", BeginWeightUpdateReqInput(selector=selector))

    def end_weight_update(self):
        return self._call("end_weight_update", EndWeightUpdateReqInput())

    def update_weights_from_tensor(self, named_tensors, load_format=None, flush_cache=True):
        # One payload per TP rank, read back by SGLang's MultiprocessingSerializer.deserialize. A plain
        # pickle: SGLang's patched tensor reduction (CUDA IPC handles) does not handle CPU tensors.
        payloads = [pickle.dumps(named_tensors)]
        return self._call("update_weights_from_tensor", UpdateWeightsFromTensorReqInput(
            serialized_named_tensors=payloads, load_format=load_format, flush_cache=flush_cache))

    def update_weights_from_distributed(self, names, dtypes, shapes, group_name="weight_update_group",
                                        flush_cache=True, load_format=None):
        return self._call("update_weights_from_distributed", UpdateWeightsFromDistributedReqInput(
            names=names, dtypes=dtypes, shapes=shapes, group_name=group_name, flush_cache=flush_cache,
            load_format=load_format))

    def update_weights_from_disk(self, model_path, load_format=None):
        # The tokenizer manager fills an unset load_format from the server's (--load-format).
        load_format = load_format or runtime_context.get_server_args().load_format
        out = self.manager.update_weights_from_disk(UpdateWeightFromDiskReqInput(model_path=model_path,
                                                                                 load_format=load_format))
        return out.success, out.message, out.num_paused_requests

    def init_weights_update_group(self, master_address, master_port, rank_offset, world_size, group_name,
                                  backend="nccl"):
        return self._call("init_weights_update_group", InitWeightsUpdateGroupReqInput(
            master_address=master_address, master_port=master_port, rank_offset=rank_offset,
            world_size=world_size, group_name=group_name, backend=backend))

    def flush_cache(self):
        return FlushCacheReqOutput(success=self._flush())


def write_checkpoint(directory: Path, weights: dict[str, torch.Tensor]) -> Path:
    """A Hugging Face directory SGLang's ModelConfig and DefaultModelLoader read: config + safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    Qwen3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, vocab_size=128, architectures=["Qwen3ForCausalLM"]
                ).save_pretrained(directory)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / "model.safetensors"))
    return directory


def start_runtime(model_dir: Path):
    """What a scheduler process has before weight updates: SGLang's published config and a CPU group
    (the manager barriers on the TP group's CPU group). Returns the teardown."""
    import torch.distributed as dist

    runtime_context.publish(ServerArgs(model_path=str(model_dir), device="cpu"), role="scheduler")
    store = tempfile.NamedTemporaryFile(delete=False)
    dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
    tp = runtime_context.get_parallel().override(tp_group=SimpleNamespace(cpu_group=dist.group.WORLD), tp_rank=0,
                                                 tp_size=1)
    tp.__enter__()

    def stop():
        tp.__exit__(None, None, None)
        dist.destroy_process_group()
        runtime_context.reset_context()
        Path(store.name).unlink(missing_ok=True)

    return stop


class BroadcastTrainer:
    """The trainer's rank 0 of an SGLang weight-update group, in a thread of this process.

    SGLang's engine side joins with ``init_custom_process_group`` (a TCP rendezvous at
    ``127.0.0.1:port``, its store under ``PrefixStore(group_name)``, then torch's ``{group_name}/`` and
    ``cpu/`` prefixes for a gloo group); a trainer in its own process would call the same function.
    In one process the name is taken by the engine's group, so this side builds the gloo group on the
    same store layout directly.
    """

    def __init__(self, group_name: str, timeout_s: float = 60.0):
        import datetime
        import socket
        import threading

        import torch.distributed as dist

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._timeout = datetime.timedelta(seconds=timeout_s)
        self._store = dist.TCPStore("127.0.0.1", self.port, 2, is_master=True, timeout=self._timeout,
                                    wait_for_workers=False)
        self._group_name, self._threading, self._dist = group_name, threading, dist
        self._thread = None
        self.error: BaseException | None = None

    def broadcast(self, tensors: list[torch.Tensor]) -> None:
        """Join the group (once the engine joins) and broadcast ``tensors`` in order, in the background."""
        dist = self._dist

        def run():
            try:
                store = dist.PrefixStore("cpu/", dist.PrefixStore(f"{self._group_name}/",
                                                                 dist.PrefixStore(self._group_name, self._store)))
                group = dist.ProcessGroupGloo(store, 0, 2, self._timeout)
                for tensor in tensors:
                    options = dist.BroadcastOptions()
                    options.rootRank = 0
                    group.broadcast([tensor], options).wait()
            except BaseException as exc:  # reported by join()
                self.error = exc

        self._thread = self._threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(self._timeout.total_seconds())
        if self.error is not None:
            raise self.error
