"""Weight updates into a running ``sglang.Engine``, inside SGLang's weight-update session.

Since SGLang 0.5.21 the scheduler answers ``update_weights_from_tensor`` and
``update_weights_from_distributed`` with ``success=False`` unless ``begin_weight_update()`` opened a
session (``managers/scheduler_components/weight_updater.py``); ``end_weight_update()`` closes it and
finalizes the weights (re-packing quantized layouts). A session left open makes the next
``begin_weight_update()`` fail, so every path here closes the session it opened, on success and on
failure, and checks every answer.

SGLang has no rollback for tensor or broadcast loads (a load that fails half-way leaves "partially
updated" weights, its own words). The failure policy is therefore:

- refused before anything was loaded (session refused, SGLang's pre-load checks, a failed receive):
  ``WeightUpdateError(weights_changed=False)``: the old weights still serve;
- anything loaded, or unknown: ``WeightUpdateError(weights_changed=True)``: the caller
  (``SGLangEngine``) refuses to generate until a complete update succeeds, so no rollout is ever sampled
  from a mix of two policies.

Nothing here imports SGLang: the functions drive an engine object with ``sglang.Engine``'s methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import torch

# Answers SGLang 0.5.21-0.5.23 gives when it refused before touching a weight (others: assume touched).
_REFUSED_BEFORE_LOADING = (
    "update_weights_from_tensor must run between",
    "update_weights_from_distributed must run between",
    "Failed to receive weights",
    "Online weight updates are not supported",
    "Failed to get model loader",
    "Failed to get weights iterator",
)


class WeightUpdateError(RuntimeError):
    """A weight update SGLang refused or that failed.

    weights_changed: ``False`` when the old weights are known to still serve; ``True`` when some were
    (or may have been) replaced, so the served weights are a mix until a complete update succeeds.
    """

    def __init__(self, message: str, *, weights_changed: bool):
        super().__init__(message)
        self.weights_changed = weights_changed


def result_status(result) -> tuple[bool, str]:
    """``(success, message)`` of an SGLang control answer: a tuple ``(success, message, ...)`` (the
    ``Engine`` methods) or an object with ``success`` / ``message`` (``FlushCacheReqOutput``)."""
    if isinstance(result, tuple):
        if not result or not isinstance(result[0], bool):
            raise TypeError(f"unexpected SGLang answer {result!r}: expected (success, message, ...)")
        return result[0], str(result[1]) if len(result) > 1 else ""
    if not hasattr(result, "success"):
        raise TypeError(f"unexpected SGLang answer {result!r}: expected (success, message) or .success")
    return bool(result.success), str(getattr(result, "message", ""))


def refused_before_loading(message: str) -> bool:
    """Whether SGLang's failure message says no weight was touched."""
    return any(message.startswith(prefix) for prefix in _REFUSED_BEFORE_LOADING)


def check_result(result, what: str) -> str:
    """The message of a successful answer; a plain ``RuntimeError`` naming ``what`` otherwise."""
    success, message = result_status(result)
    if not success:
        raise RuntimeError(f"SGLang {what} failed: {message}")
    return message


class WeightSession:
    """``with WeightSession(engine) as session:`` wraps loads in ``begin_weight_update`` /
    ``end_weight_update``; set ``session.loaded`` once SGLang has loaded anything.

    The session is closed however the block ends. A failed ``end_weight_update`` after a successful block
    raises ``WeightUpdateError``; after a failed block its message is added to the block's error.
    """

    def __init__(self, engine):
        self.engine = engine
        self.loaded = False

    def __enter__(self) -> "WeightSession":
        success, message = result_status(self.engine.begin_weight_update())
        if not success:
            raise WeightUpdateError(f"SGLang begin_weight_update refused: {message} (the old weights still serve)",
                                    weights_changed=False)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            success, message = result_status(self.engine.end_weight_update())
        except Exception as end_exc:
            if exc is None:
                raise
            success, message = False, repr(end_exc)  # keep the block's error, the first cause
        if success:
            return
        if exc is None:
            raise WeightUpdateError(f"SGLang end_weight_update failed: {message}", weights_changed=self.loaded)
        exc.add_note(f"closing the weight-update session also failed: {message}")


def checkpoint_shapes(model_path: str) -> dict[str, tuple[int, ...]] | None:
    """``{hf_name: shape}`` of a local checkpoint's safetensors files (headers only), or ``None`` when
    ``model_path`` is not a local directory with safetensors."""
    files = sorted(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    if not files:
        return None
    from safetensors import safe_open

    shapes = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            shapes.update({name: tuple(f.get_slice(name).get_shape()) for name in f.keys()})
    return shapes


def check_bucket(bucket: list[tuple[str, torch.Tensor]], shapes: Mapping[str, tuple[int, ...]] | None) -> None:
    """Refuse a tensor whose shape differs from the checkpoint's before SGLang sees it: SGLang's
    ``load_weights`` would raise inside the scheduler, half-way through, and take the server down.
    Names the checkpoint lacks pass (e.g. a tied ``lm_head.weight``: the model's loader decides)."""
    if shapes is None:
        return
    for name, tensor in bucket:
        expected = shapes.get(name)
        if expected is not None and tuple(tensor.shape) != expected:
            raise ValueError(f"weight {name!r} has shape {tuple(tensor.shape)}, the served checkpoint's is "
                             f"{expected}")


def update_from_tensors(engine, buckets: Iterable[list[tuple[str, torch.Tensor]]],
                        shapes: Mapping[str, tuple[int, ...]] | None = None) -> int:
    """Send ``buckets`` of ``(hf_name, tensor)`` through ``update_weights_from_tensor`` in one session,
    then flush the radix cache (its KV came from the old weights). Returns how many tensors were sent.

    shapes: the checkpoint's ``{hf_name: shape}`` (``checkpoint_shapes``); each bucket is checked
    against it before it is sent. Raises ``WeightUpdateError`` (with ``weights_changed``) for a refused
    or mis-shaped bucket, an error of the bucket iterator itself (e.g. the trainer failing to gather a
    shard) and a refused flush.
    """
    count = 0
    with WeightSession(engine) as session:
        for index, bucket in _checked(buckets, shapes, session, lambda: count):
            success, message = _load(engine.update_weights_from_tensor, f"update_weights_from_tensor (bucket {index})",
                                     named_tensors=bucket, flush_cache=False)
            if not success:
                changed = session.loaded or not refused_before_loading(message)
                raise WeightUpdateError(
                    f"SGLang update_weights_from_tensor failed on bucket {index} ({len(bucket)} tensors from "
                    f"{bucket[0][0]!r}) after {count} tensors were loaded: {message}", weights_changed=changed)
            session.loaded = True
            count += len(bucket)
    flush_after_update(engine, "update_weights_from_tensor")
    return count


def _checked(buckets, shapes, session: WeightSession, sent):
    """``(index, bucket)`` of ``buckets``, each shape-checked; an error of the iterator (e.g. the trainer
    failing to gather a shard) or of the check becomes a ``WeightUpdateError``."""
    iterator = iter(buckets)
    index = 0
    while True:
        try:
            bucket = next(iterator)
            check_bucket(bucket, shapes)
        except StopIteration:
            return
        except Exception as exc:
            raise WeightUpdateError(f"the weight update stopped after {sent()} tensors: {exc!r}",
                                    weights_changed=session.loaded) from exc
        yield index, bucket
        index += 1


def update_from_distributed(engine, names: list[str], dtypes: list[torch.dtype | str], shapes: list[list[int]],
                            group_name: str) -> None:
    """Receive one broadcast from the trainer (``update_weights_from_distributed``) in its own session;
    SGLang flushes the radix cache in the same call."""
    if not (len(names) == len(dtypes) == len(shapes)) or not names:
        raise ValueError(f"names, dtypes and shapes must be non-empty and of one length, got "
                         f"{len(names)}, {len(dtypes)}, {len(shapes)}")
    dtype_names = [d if isinstance(d, str) else str(d).removeprefix("torch.") for d in dtypes]
    with WeightSession(engine) as session:
        success, message = _load(engine.update_weights_from_distributed, "update_weights_from_distributed",
                                 names=list(names), dtypes=dtype_names, shapes=[list(s) for s in shapes],
                                 group_name=group_name, flush_cache=True)
        if not success:
            raise WeightUpdateError(f"SGLang update_weights_from_distributed failed ({len(names)} tensors from "
                                    f"{names[0]!r}): {message}", weights_changed=not refused_before_loading(message))
        session.loaded = True


def update_from_disk(engine, model_path: str, load_format: str | None = None) -> None:
    """Reload every weight from a checkpoint directory (``update_weights_from_disk``; needs no session).
    SGLang flushes the cache itself."""
    success, message = _load(engine.update_weights_from_disk, "update_weights_from_disk", model_path=model_path,
                             load_format=load_format)
    if not success:
        # SGLang's "Rolling back to original weights" reloads from the path that just failed: not trusted.
        raise WeightUpdateError(f"SGLang update_weights_from_disk({model_path!r}) failed: {message}",
                                weights_changed=not refused_before_loading(message))


def _load(method, what: str, **kwargs) -> tuple[bool, str]:
    """``(success, message)`` of one SGLang load call; if the call itself raises, what it loaded is
    unknown: ``WeightUpdateError(weights_changed=True)``."""
    try:
        return result_status(method(**kwargs))
    except Exception as exc:
        raise WeightUpdateError(f"SGLang {what} raised: {exc!r}", weights_changed=True) from exc


def flush_after_update(engine, what: str) -> None:
    """Flush the radix cache after new weights; a refusal (requests still running) is an error."""
    success, message = result_status(engine.flush_cache())
    if not success:
        raise WeightUpdateError(f"SGLang loaded the weights of {what} but refused to flush the radix cache "
                                f"({message or 'requests still running'}): cached prefixes hold KV of the old "
                                "weights", weights_changed=True)
