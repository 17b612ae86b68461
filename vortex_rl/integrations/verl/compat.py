"""The verl versions this integration was written against, checked before anything of verl is used."""

from __future__ import annotations

import logging

SUPPORTED = "0.9"  # verl 0.9.x: RolloutReplicaRegistry, base._ROLLOUT_REGISTRY, TokenOutput as of 0.9.1

logger = logging.getLogger(__name__)


def check_verl_version(version: str | None = None) -> str:
    """Raise ``ImportError`` unless verl ``0.9.x`` is installed; returns the version.

    verl swallows the errors of ``verl.plugins`` entry points (logged at DEBUG), so the message is also
    logged at ERROR: a wrong verl must not just leave ``rollout.name=vortex`` unknown.
    """
    if version is None:
        import verl

        version = getattr(verl, "__version__", None)
    parts = str(version).split(".")
    if parts[:2] != SUPPORTED.split("."):
        message = (f"vortex_rl.integrations.verl needs verl {SUPPORTED}.x (written against 0.9.1), found verl "
                   f"{version}: install verl=={SUPPORTED}.1 (see `make test-verl`) or use vortex-rl's own trainer")
        logger.error(message)
        raise ImportError(message)
    return str(version)
