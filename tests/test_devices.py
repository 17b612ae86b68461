"""Device and dtype names (``vortex_rl.devices``), shared by the engine, the SGLang adapter and the trainer."""

import pytest
import torch

from vortex_rl.devices import check_device_name, check_dtype_name, resolve_device, torch_dtype


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:7"])
def test_device_names_accepted(name):
    check_device_name(name, "trainer.device")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "", None, 0])
def test_device_names_refused_with_the_key(name):
    with pytest.raises(ValueError, match=r"trainer\.device=.* must be one of \('auto', 'cpu', 'cuda', 'cuda:N'\)"):
        check_device_name(name, "trainer.device")


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match=r"trainer\.device='cuda:1' but CUDA is not available"):
        resolve_device("cuda:1", "trainer.device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_dtypes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # only the type is read: no GPU needed
    assert torch_dtype("auto", cpu) is torch.float32
    assert torch_dtype("auto", cuda) is torch.float32 and torch_dtype("auto", cuda, auto="bfloat16") is torch.bfloat16
    assert [torch_dtype(n, cpu) for n in ("float32", "float16", "bfloat16")] == [torch.float32, torch.float16, torch.bfloat16]
    with pytest.raises(ValueError, match=r"model\.dtype='fp8' must be one of \('auto', 'float32', 'float16', 'bfloat16'\)"):
        check_dtype_name("fp8", "model.dtype")
