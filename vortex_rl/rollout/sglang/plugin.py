"""SGLang plugin: registers the ``vortex`` attention backend and the hooks it needs.

Declared in ``pyproject.toml`` under SGLang's general-plugin entry point group::

    [project.entry-points."sglang.srt.plugins"]
    vortex = "vortex_rl.rollout.sglang.plugin:register"

Where it loads: SGLang's ``load_plugins()`` runs :func:`register` in the launcher, ``sglang.Engine``, and
each scheduler, data-parallel controller and detokenizer process it spawns, then applies the hooks
plugins registered: the weight-sum action (``weight_sums``) and the flow state's share of the KV cell
size (``memory``). Two gaps, closed here and in ``SGLangEngine``:

- ``load_plugins()`` logs a plugin's exception and carries on, so an unsupported SGLang would surface
  only as "Invalid attention backend: vortex". :func:`register` therefore exits the process
  (``SystemExit`` passes SGLang's ``except Exception``) when this process was asked for
  ``--attention-backend vortex``, and only logs otherwise (a server on another backend is not ours to
  stop). ``SGLangEngine`` checks the version itself before starting SGLang.
- SGLang's Ray launcher (``--use-ray``) builds scheduler actors that never call ``load_plugins()``; the
  backend refuses it (``server_checks``). ``SGLangEngine`` calls :func:`register` in its own process and
  checks that the entry point is installed, so the schedulers it spawns find it.

Options travel in ``--json-model-override-args`` (see ``vortex_rl.rollout.sglang.config``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys

from vortex_rl.rollout.sglang.compat import BACKEND_NAME, require_sglang

logger = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "sglang.srt.plugins"
ENTRY_POINT = f"{__name__}:register"
_hooked = False


def register() -> None:
    """Entry point: add ``vortex`` to SGLang's backend registry and ``--attention-backend`` choices, and
    the hooks (weight sums, cell size). Safe to call again."""
    global _hooked
    try:
        require_sglang()
    except (ImportError, RuntimeError) as exc:
        if vortex_requested(sys.argv):
            raise SystemExit(f"--attention-backend {BACKEND_NAME}: {exc}") from exc
        logger.error("vortex-rl's SGLang plugin is disabled: %s", exc)
        return
    from sglang.srt.arg_groups.choices import ATTENTION_BACKEND_CHOICES, add_attention_backend_choices
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS, register_attention_backend
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from vortex_rl.rollout.sglang.memory import CELL_SIZE_HOOK_TARGET, cell_size_hook
    from vortex_rl.rollout.sglang.weight_sums import HOOK_TARGET, param_sums_hook

    if BACKEND_NAME not in ATTENTION_BACKEND_CHOICES:
        add_attention_backend_choices([BACKEND_NAME])
    if ATTENTION_BACKENDS.get(BACKEND_NAME) is not create_vortex_backend:
        register_attention_backend(BACKEND_NAME)(create_vortex_backend)
    if not _hooked:
        # load_plugins() applies registered hooks right after running the plugins.
        HookRegistry.register(HOOK_TARGET, param_sums_hook, HookType.AROUND)
        HookRegistry.register(CELL_SIZE_HOOK_TARGET, cell_size_hook, HookType.AROUND)
        _hooked = True


def vortex_requested(argv: list[str]) -> bool:
    """Whether a command line asks for ``--attention-backend vortex`` (or the decode/prefill variants)."""
    flags = ("--attention-backend", "--decode-attention-backend", "--prefill-attention-backend")
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        if name in flags and (value or (argv[i + 1] if i + 1 < len(argv) else "")) == BACKEND_NAME:
            return True
    return False


def prepare_process() -> None:
    """Before ``sglang.Engine`` starts in this process (``SGLangEngine``, the Ray rollout actors): the
    version checked loudly, the backend registered here (argument parsing happens here), and the entry
    point installed (the scheduler processes SGLang spawns find the plugin only through it)."""
    require_sglang()
    installed = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.value == ENTRY_POINT]
    if not installed:
        raise RuntimeError(
            f"vortex-rl's SGLang plugin entry point ({ENTRY_POINT_GROUP}: vortex = {ENTRY_POINT}) is not "
            "installed in this environment, so SGLang's scheduler processes would not know "
            f"--attention-backend {BACKEND_NAME}: pip install -e . (or the wheel) where the rollout runs"
        )
    register()
    from sglang.srt.plugins.hook_registry import HookRegistry

    HookRegistry.apply_hooks()


def create_vortex_backend(model_runner):
    """SGLang's backend factory signature: build the backend for one ``ModelRunner``."""
    from vortex_rl.rollout.sglang.backend import VortexAttnBackend

    return VortexAttnBackend.from_model_runner(model_runner)
