import pytest
import torch

from MultiModalSegLib.device import autocast, grad_scaler, resolve_device, use_amp
from MultiModalSegLib.errors import InputError


def test_cpu_and_auto():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")


def test_amp_only_on_cuda():
    assert not use_amp(torch.device("cpu"))
    assert use_amp(torch.device("cuda"))
    assert not use_amp(torch.device("cuda"), amp=False)
    assert not grad_scaler(torch.device("cpu")).is_enabled()
    with autocast(torch.device("cpu")):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_refused():
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("gpu")
