"""Checks that run before anything loads: the device asked for is here, and the model and tokenizer can be
found (a local path that exists, an installed package file, or a hub id that is cached or reachable).

Each failure is a ``PreflightError`` of one line that names the config key to change. A hub id that is
neither cached nor reachable fails in one request (``PROBE_TIMEOUT_S`` at most), not after the minute of
retries ``from_pretrained`` spends before its traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vortex_rl.trainers.config import GRPOConfig, ModelConfig

PROBE_TIMEOUT_S = 10.0
TRUE = ("1", "true", "yes", "on")


class PreflightError(ValueError):
    """The run cannot start on this machine as configured; the message names the key to change."""


def preflight(config: GRPOConfig, *, resuming: bool = False) -> None:
    """Every check below; a resumed run loads its model and tokenizer from the checkpoint, so the model
    source is not checked then."""
    check_device(config)
    if not resuming:
        check_model_source(config.model)


def check_device(config: GRPOConfig) -> None:
    """``trainer.device=cuda[:N]`` needs that GPU here, for the local orchestrator and for a Ray started
    on this machine (a joined cluster's GPUs are the cluster's, checked by Ray's placement)."""
    device = config.trainer.device
    joins_cluster = config.trainer.orchestrator == "ray" and (config.cluster.ray_address or os.environ.get("RAY_ADDRESS"))
    if not device.startswith("cuda") or joins_cluster:
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= count:
        seen = f"{count} CUDA device(s)" if count else "no CUDA GPU"
        raise PreflightError(f"trainer.device={device!r} but this machine has {seen} (torch {torch.__version__}); "
                             "use trainer.device=cpu or auto, or run where the GPU is")


def check_model_source(model: ModelConfig) -> None:
    """``model.path`` and ``model.tokenizer_path`` point at something that can be loaded."""
    if not model.path:
        raise PreflightError("model.path is empty: set it to a model directory, hub id, .gguf file or random:<arch>")
    sources = [("model.path", model.path, "config.json")]
    if model.tokenizer_path is not None:
        sources.append(("model.tokenizer_path", model.tokenizer_path, "tokenizer_config.json"))
    for key, value, marker in sources:
        if value == "char":
            continue
        if value.startswith("random:"):
            from vortex_rl.trainers.local.model_loader import RANDOM_ARCHS

            if key != "model.path" or value[len("random:"):] not in RANDOM_ARCHS:
                raise PreflightError(f"{key}={value!r}: random weights are model.path="
                                     f"{' or '.join('random:' + a for a in RANDOM_ARCHS)}")
            if model.tokenizer_path is None:
                raise PreflightError(f"model.path={value!r} has random weights: set model.tokenizer_path (e.g. 'char')")
            continue
        if value.startswith("pkg:"):
            from vortex_rl.trainers.local.model_loader import resolve_path

            try:
                resolve_path(value)
            except FileNotFoundError as e:
                raise PreflightError(f"{e}".replace("model.path", key)) from None
            continue
        if Path(value).expanduser().exists():
            continue
        if not looks_like_hub_id(value):
            raise PreflightError(f"{key}={value!r}: no such file or directory (and not a hub id <owner>/<name>)")
        check_hub_id(key, value, marker)


def looks_like_hub_id(value: str) -> bool:
    parts = value.split("/")
    return (len(parts) == 2 and all(parts) and not value.startswith((".", "~"))
            and not value.endswith((".gguf", ".safetensors", ".bin")))


def hub_offline() -> bool:
    return any(os.environ.get(name, "").lower() in TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_id(key: str, repo_id: str, marker: str) -> None:
    """A hub id: fine when ``marker`` is in the local hub cache; else one request asks the hub (at
    ``HF_ENDPOINT``) whether the repository exists; offline, unreachable or unknown raise."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(repo_id, marker), str):
        return
    fix = (f"download it first (hf download {repo_id}) and set HF_HUB_OFFLINE=1, or set {key} to a local "
           "directory")
    if hub_offline():
        raise PreflightError(f"{key}={repo_id!r} is a hub id that is not in the local hub cache, and HF_HUB_OFFLINE "
                             f"is set: {fix}")
    try:
        HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise PreflightError(f"{key}={repo_id!r}: no such model on the hub (or it is private or gated: log in "
                             "with `hf auth login`)") from None
    except Exception as e:  # connection refused, DNS, time-out, proxy: the hub is not reachable from here
        raise PreflightError(f"{key}={repo_id!r} is not in the local hub cache and the hub is not reachable "
                             f"({type(e).__name__}): {fix}") from None
