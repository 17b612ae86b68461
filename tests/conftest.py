"""Session set-up shared by every test: Triton's interpreter when there is no GPU, few CPU threads.

``TRITON_INTERPRET`` must be set before anything imports Triton, so it happens here, at collection.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(2)


# Builders shared by the test folders, as factory fixtures (the plain functions live in their modules).
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def make_paged_batch():
    """``tests.paged_batch.make_paged_batch``: random paged decode batches (kernels, sparse)."""
    from tests.paged_batch import make_paged_batch

    return make_paged_batch


@pytest.fixture(scope="session")
def make_tiny_hf_model():
    """``tests.tiny_models.tiny_hf_model``: tiny random Hugging Face causal LMs (rollout, trainers)."""
    from tests.tiny_models import tiny_hf_model

    return tiny_hf_model
