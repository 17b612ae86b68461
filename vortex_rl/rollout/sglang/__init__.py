"""SGLang integration: our sparse decode attention as the SGLang attention backend ``vortex``, and an
SGLang-backed rollout engine with the interface of ``vortex_rl.rollout``.

- ``plugin``: the ``sglang.srt.plugins`` entry point that registers the backend and its hooks;
  ``compat``: the SGLang versions it accepts (``require_sglang``) and the backend's name.
- ``backend``: ``VortexAttnBackend`` (dense SGLang backend for extend, our flow for decode);
  ``server_checks``: the SGLang features and context lengths it refuses at start.
- ``page_state``: SGLang's KV pool as our paged cache, and the flow's per-page state; ``memory``: that
  state charged to SGLang's KV cell size and shared by every backend on a pool.
- ``config``: ``VortexBackendConfig``, passed through ``--json-model-override-args``.
- ``engine``: ``SGLangEngine`` and ``make_sglang_engine`` (``rollout.engine=sglang``); ``options``:
  ``SGLangOptions`` and the translations between our rollout types and SGLang's; ``weight_sync``: weight
  updates inside SGLang's weight-update session.

Importing this package does not import SGLang; the modules that need it import it where used.
"""

from vortex_rl.rollout.sglang.config import VortexBackendConfig
from vortex_rl.rollout.sglang.engine import SGLangEngine, make_sglang_engine
from vortex_rl.rollout.sglang.options import SGLangOptions

__all__ = ["SGLangEngine", "SGLangOptions", "VortexBackendConfig", "make_sglang_engine"]
