"""Fixtures of the trainer tests. Ray starts once per session (about 5 s), only for tests that ask for it."""

from __future__ import annotations

import shutil
import tempfile

import pytest

RAY_CPUS = 4  # fractional actors (cluster.num_cpus_per_worker=0.5) on this 2-core machine


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray without dashboard, shared by every Ray test of the session."""
    ray = pytest.importorskip("ray", reason="the Ray orchestrator tests need ray (pip install 'vortex-rl[train]')")
    temp_dir = None
    if not ray.is_initialized():
        temp_dir = tempfile.mkdtemp(prefix="vortex-ray-tests-")  # removed below: no /tmp/ray/session_* left
        ray.init(num_cpus=RAY_CPUS, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 _temp_dir=temp_dir)
    yield ray
    ray.shutdown()
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def make_tiny_actor(make_tiny_hf_model):
    """``make_tiny_actor(seed=0) -> (model, tokenizer)``: a tiny random Qwen3 (tied embeddings,
    transformers' initialisation) over the character tokenizer, a fresh model per call."""
    from tests.tiny_models import TRAINER_SIZES
    from vortex_rl.data import build_char_tokenizer

    def build(seed: int = 0):
        tokenizer = build_char_tokenizer()
        model = make_tiny_hf_model("qwen3", seed=seed, sizes=TRAINER_SIZES, tokenizer=tokenizer, spread_weights=False,
                                   tie_word_embeddings=True)
        return model.train(), tokenizer

    return build
