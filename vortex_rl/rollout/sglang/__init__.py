"""SGLang integration: our sparse decode attention as the SGLang attention backend ``vortex``, and an
SGLang-backed rollout engine with the interface of ``vortex_rl.rollout``.

- ``plugin``: the ``sglang.srt.plugins`` entry point that registers the backend; ``compat``: the SGLang
  versions it accepts (``require_sglang``) and the backend's name.
- ``backend``: ``VortexAttnBackend`` (dense SGLang backend for extend, our flow for decode).
- ``page_state``: SGLang's KV pool as our paged cache, and the flow's per-page state.
- ``config``: ``VortexBackendConfig``, passed through ``--json-model-override-args``.
- ``engine``: ``SGLangEngine`` and ``make_sglang_engine`` (``rollout.engine=sglang``); ``options``:
  ``SGLangOptions`` and the translations between our rollout types and SGLang's.

Importing this package does not import SGLang; the modules that need it import it where used.
"""

from vortex_rl.rollout.sglang.config import VortexBackendConfig
from vortex_rl.rollout.sglang.engine import SGLangEngine, make_sglang_engine
from vortex_rl.rollout.sglang.options import SGLangOptions

__all__ = ["SGLangEngine", "SGLangOptions", "VortexBackendConfig", "make_sglang_engine"]
