import pytest
import torch

from MultiModalSegLib.device import autocast, cpu_channels_last, grad_scaler, resolve_device, use_amp
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


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bfloat16_only_when_asked_and_native(monkeypatch, native):
    import MultiModalSegLib.device as device

    monkeypatch.setattr(device, "cpu_bfloat16_native", lambda: native)
    cpu = torch.device("cpu")
    with autocast(cpu, cpu_bfloat16=True):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == (torch.bfloat16 if native else torch.float32)
    with autocast(cpu):  # not asked: float32 whatever the processor
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast(cpu, amp=True, cpu_bfloat16=False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_cpu_bfloat16_native_reads_the_processor(monkeypatch):
    from MultiModalSegLib.device import cpu_bfloat16_native

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert cpu_bfloat16_native() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_bfloat16_native() is True
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert cpu_bfloat16_native() is False  # a PyTorch without the checks: float32


def test_a_run_begun_without_amp_resumes_with_it():
    """A checkpoint written on the CPU holds a disabled scaler's empty state; on a GPU with AMP the
    run resumes with a new scaler (torch's own load refuses the empty state)."""
    from MultiModalSegLib.device import load_scaler_state

    begun_on_cpu = grad_scaler(torch.device("cpu")).state_dict()
    assert begun_on_cpu == {}
    enabled = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**10)
    with pytest.raises(RuntimeError, match="empty"):
        enabled.load_state_dict(begun_on_cpu)
    assert load_scaler_state(enabled, begun_on_cpu) is False
    assert enabled.is_enabled() and enabled.get_scale() == 2.0**10

    saved = torch.amp.GradScaler("cpu", enabled=True, init_scale=128.0).state_dict()
    assert load_scaler_state(enabled, saved) is True
    assert enabled.get_scale() == 128.0
    disabled = grad_scaler(torch.device("cpu"))
    assert load_scaler_state(disabled, saved) is True and not disabled.is_enabled()


def test_channels_last_only_on_the_cpu_and_only_for_3d_kernels():
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3), torch.nn.Conv2d(3, 3, 1), torch.nn.Linear(3, 2))
    assert not cpu_channels_last(net, torch.device("cuda"))  # nothing measured there: nothing changes
    assert all(p.is_contiguous() for p in net.parameters())
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    assert cpu_channels_last(net, torch.device("cpu"))
    kernel = net[0].weight
    assert kernel.is_contiguous(memory_format=torch.channels_last_3d) and not kernel.is_contiguous()
    assert all(p.is_contiguous() for n, p in net.named_parameters() if n != "0.weight")
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())  # the values are unchanged
    assert isinstance(net[0].weight, torch.nn.Parameter)


def test_a_batch_normalised_network_stays_in_the_default_layout():
    """Trained channels-last on the CPU, a batch-normalised network was seen to store a negative running
    variance (its evaluation then NaN), so such networks keep the default layout."""
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3), torch.nn.BatchNorm3d(3))
    assert not cpu_channels_last(net, torch.device("cpu"))
    assert net[0].weight.is_contiguous()
