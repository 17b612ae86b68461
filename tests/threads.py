"""Shared fixture: tiny shapes run faster on one torch thread, and the test machine's cores are shared."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread for every test of the module that imports this fixture (into its conftest)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
