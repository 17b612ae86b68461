"""Fixtures of the trainer tests. Ray starts once per session (about 5 s), only for tests that ask for it."""

from __future__ import annotations

import pytest

RAY_CPUS = 4  # fractional actors (cluster.num_cpus_per_worker=0.5) on this 2-core machine


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray without dashboard, shared by every Ray test of the session."""
    ray = pytest.importorskip("ray", reason="the Ray orchestrator tests need ray (pip install 'vortex-rl[train]')")
    if not ray.is_initialized():
        ray.init(num_cpus=RAY_CPUS, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()
