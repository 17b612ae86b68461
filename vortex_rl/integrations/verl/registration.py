"""Registers ``rollout.name=vortex`` with verl: the replica in ``RolloutReplicaRegistry`` (public) and the
trainer-side adapter in ``base._ROLLOUT_REGISTRY`` (a plain dict, verl 0.9.1 ``base.py`` ~89-106, with no
register function). Must run in every verl process: the ``verl.plugins`` entry point does it at
``import verl`` (verl swallows its errors; ``compat`` logs them at ERROR), ``VERL_USE_EXTERNAL_MODULES=
vortex_rl.integrations.verl`` does it with errors propagating."""

from __future__ import annotations

from vortex_rl.integrations.verl.compat import check_verl_version

NAME = "vortex"
ADAPTER = "vortex_rl.integrations.verl.adapter.VortexRolloutAdapter"


def _load_replica():
    check_verl_version()
    from vortex_rl.integrations.verl.replica import VortexReplica

    return VortexReplica


def register() -> None:
    """Idempotent; raises ``ImportError`` for a verl other than 0.9.x."""
    check_verl_version()
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(NAME, _load_replica)
    base._ROLLOUT_REGISTRY[(NAME, "async")] = ADAPTER


def is_registered() -> bool:
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    return NAME in RolloutReplicaRegistry._registry and base._ROLLOUT_REGISTRY.get((NAME, "async")) == ADAPTER
