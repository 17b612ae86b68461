"""SGLang plugin: registers the ``vortex`` attention backend.

Declared in ``pyproject.toml`` under SGLang's general-plugin entry point group::

    [project.entry-points."sglang.srt.plugins"]
    vortex = "vortex_rl.rollout.sglang.plugin:register"

SGLang's ``load_plugins()`` runs :func:`register` early in every process it starts (launcher, engine,
scheduler, detokenizer), so ``--attention-backend vortex`` parses in the launcher and the scheduler's
model runner finds the backend factory; then it applies the hooks plugins registered (ours adds the
weight-sum action of ``weight_sums``). Options travel in ``--json-model-override-args`` (see
``vortex_rl.rollout.sglang.config``).
"""

from __future__ import annotations

from vortex_rl.rollout.sglang.compat import BACKEND_NAME, require_sglang

_hooked = False


def register() -> None:
    """Entry point: add ``vortex`` to SGLang's backend registry and ``--attention-backend`` choices,
    and the weight-sum action to its weight checker (``weight_sums``). Safe to call again."""
    global _hooked
    require_sglang()
    from sglang.srt.arg_groups.choices import ATTENTION_BACKEND_CHOICES, add_attention_backend_choices
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS, register_attention_backend
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from vortex_rl.rollout.sglang.weight_sums import HOOK_TARGET, param_sums_hook

    if BACKEND_NAME not in ATTENTION_BACKEND_CHOICES:
        add_attention_backend_choices([BACKEND_NAME])
    if ATTENTION_BACKENDS.get(BACKEND_NAME) is not create_vortex_backend:
        register_attention_backend(BACKEND_NAME)(create_vortex_backend)
    if not _hooked:
        # load_plugins() applies registered hooks right after running the plugins.
        HookRegistry.register(HOOK_TARGET, param_sums_hook, HookType.AROUND)
        _hooked = True


def create_vortex_backend(model_runner):
    """SGLang's backend factory signature: build the backend for one ``ModelRunner``."""
    from vortex_rl.rollout.sglang.backend import VortexAttnBackend

    return VortexAttnBackend.from_model_runner(model_runner)
