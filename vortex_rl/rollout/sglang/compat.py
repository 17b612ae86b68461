"""Which SGLang this integration works with, and the name it registers there.

The plugin, the backend, the engine and the option translations all need these; keeping them here (an
import of nothing but the standard library and ``packaging``) lets each of those modules import them
without importing one another.
"""

from __future__ import annotations

import importlib.metadata

BACKEND_NAME = "vortex"
# 0.5.13 replaced init_forward_metadata_capture/replay_cuda_graph by the out_graph/in_graph pair
# this backend implements.
MIN_SGLANG = "0.5.13"


def require_sglang() -> str:
    """SGLang's version, checked to be new enough for this backend; raises a clear error otherwise."""
    try:
        version = importlib.metadata.version("sglang")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            "rollout.engine=sglang needs SGLang: install the 'sglang' extra (pip install 'vortex-rl[sglang]')"
        ) from None
    from packaging.version import Version

    if Version(version) < Version(MIN_SGLANG):
        raise RuntimeError(
            f"the vortex attention backend needs SGLang >= {MIN_SGLANG} (its attention-backend API with "
            f"init_forward_metadata_out_graph / init_forward_metadata_in_graph); found sglang {version}. "
            f"Upgrade with: pip install -U 'sglang>={MIN_SGLANG}'"
        )
    return version
