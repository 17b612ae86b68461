"""Which SGLang this integration works with, and the name it registers there.

The plugin, the backend, the engine and the option translations all need these; keeping them here (an
import of nothing but the standard library and ``packaging``) lets each of those modules import them
without importing one another.

The floor is what the code needs: registration imports ``sglang.srt.arg_groups.choices`` (first in
0.5.20), the weight-sum action builds SGLang's ``overall_checksum`` and weight updates use the
``begin/end_weight_update`` session (both 0.5.21). The ceiling is the newest release the tests and
``scripts/check_sglang.py`` ran against; a newer SGLang is refused unless ``VORTEX_RL_UNTESTED_SGLANG=1``
(the backend reaches into SGLang internals that change between patch releases). ``pyproject.toml``'s
``sglang`` extra states the same range.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings

BACKEND_NAME = "vortex"
MIN_SGLANG = "0.5.21"
MAX_TESTED_SGLANG = "0.5.23"
UNTESTED_ENV = "VORTEX_RL_UNTESTED_SGLANG"


def sglang_version() -> str:
    """The installed SGLang's version; ``ImportError`` with the install command when absent."""
    try:
        return importlib.metadata.version("sglang")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            "rollout.engine=sglang needs SGLang: install the 'sglang' extra (pip install 'vortex-rl[sglang]')"
        ) from None


def check_sglang_version(version: str) -> None:
    """Raise ``RuntimeError`` for an SGLang outside ``[MIN_SGLANG, MAX_TESTED_SGLANG]`` (above it only a
    warning with ``VORTEX_RL_UNTESTED_SGLANG=1``)."""
    from packaging.version import Version

    found = Version(version)
    if found < Version(MIN_SGLANG):
        raise RuntimeError(
            f"the vortex attention backend needs SGLang >= {MIN_SGLANG} (arg_groups.choices, overall_checksum "
            f"and the begin/end_weight_update session); found sglang {version}. "
            f"Install a supported one: pip install 'sglang>={MIN_SGLANG},<={MAX_TESTED_SGLANG}'"
        )
    if found.release[:3] > Version(MAX_TESTED_SGLANG).release[:3]:
        message = (f"sglang {version} is newer than the newest SGLang the vortex backend was tested with "
                   f"({MAX_TESTED_SGLANG})")
        if os.environ.get(UNTESTED_ENV) == "1":
            warnings.warn(message + f"; {UNTESTED_ENV}=1 lets it run", RuntimeWarning, stacklevel=3)
            return
        raise RuntimeError(f"{message}: install sglang=={MAX_TESTED_SGLANG}, or set {UNTESTED_ENV}=1 to try it")


def require_sglang() -> str:
    """SGLang's version, checked to be in the supported range; raises a clear error otherwise."""
    version = sglang_version()
    check_sglang_version(version)
    return version
