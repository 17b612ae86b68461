"""Test-only: records every weight update the vortex server commits (its step and checksum) as a JSON
line in ``$VORTEX_TEST_WEIGHT_RECORD``, so the end-to-end run can check that weights reached the engine
at every step. Loaded in every verl process through ``VERL_USE_EXTERNAL_MODULES``."""

from __future__ import annotations

import json
import os
import time

from vortex_rl.integrations.verl.server import VortexServer

_commit = VortexServer.commit_weight_update


async def _recording_commit(self, expected_checksum, global_steps=None):
    result = await _commit(self, expected_checksum, global_steps)
    path = os.environ.get("VORTEX_TEST_WEIGHT_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(dict(global_steps=global_steps, trainer_checksum=expected_checksum,
                                    engine_checksum=result["checksum"], tensors=result["tensors"],
                                    time=time.time())) + "\n")
    return result


if getattr(VortexServer.commit_weight_update, "__name__", "") != "_recording_commit":
    VortexServer.commit_weight_update = _recording_commit
