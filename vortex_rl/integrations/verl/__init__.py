"""verl rollout backend ``actor_rollout_ref.rollout.name=vortex``: our engine behind verl's trainer.

Importing this package registers the backend (``registration.register``): verl does it through our
``verl.plugins`` entry point at ``import verl``, or through ``VERL_USE_EXTERNAL_MODULES=
vortex_rl.integrations.verl``. The pieces: ``server`` (the Ray actor behind ``generate``, continuous
batching by ``engine_loop``), ``replica`` (verl's ``RolloutReplica``), ``adapter`` (the trainer-side
``BaseRollout``), ``weight_sync`` (atomic, checksummed updates), ``options`` (verl keys -> our configs).
This is the only code of vortex-rl that imports verl.
"""

from vortex_rl.integrations.verl.registration import register

register()
