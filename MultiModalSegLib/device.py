"""Device choice, mixed precision and memory layout. AMP (float16) is used on CUDA only; the CPU runs
float32, except where a caller asks for bfloat16 (``--quality fast``) and the processor computes it
natively. Training on the CPU keeps 3D convolution kernels channels-last (:func:`cpu_channels_last`).

PyTorch is imported only by the functions that need it, so :func:`check_device_name` can refuse a
misspelt ``--device`` before the command line pays for importing it.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "gpu", "mps")
DEVICE_HELP = (
    "auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N (gpu means cuda), "
    "or mps: Apple's GPU on macOS, used only when asked for"
)
_CUDA_INDEX = re.compile(r"cuda:\d+")


def check_device_name(name: str) -> str:
    """``name`` if it is a device choice (see :data:`DEVICE_CHOICES`, or ``cuda:N``); checks no hardware."""
    key = str(name).lower()
    if key in DEVICE_CHOICES or _CUDA_INDEX.fullmatch(key):
        return name
    raise InputError(f"unknown device {name!r}; choose one of {DEVICE_CHOICES} (or cuda:N).")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def mps_available() -> bool:
    """Apple's Metal GPU (macOS on Apple silicon)."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU when there is one, else the CPU. ``gpu`` means ``cuda``; ``mps``
    is Apple's GPU (macOS), used only when asked for.

    Asking for CUDA on a machine without it is an error that says so, rather than a silent CPU run.
    """
    import torch

    if isinstance(name, torch.device):
        return name
    key = str(name).lower()
    if key == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")  # MPS only when asked: not every 3D op runs there
    if key == "mps":
        if not mps_available():
            raise InputError("device 'mps' was asked for but PyTorch sees no Apple GPU (MPS) here; use --device cpu or auto.")
        return torch.device("mps")
    if key in ("cuda", "gpu") or key.startswith("cuda:"):
        if not cuda_available():
            raise InputError(f"device {name!r} was asked for but PyTorch sees no CUDA GPU here; use --device cpu or auto.")
        return torch.device("cuda" if key == "gpu" else key)
    if key == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {name!r}; choose one of {DEVICE_CHOICES}.")


def use_amp(device: torch.device, amp: bool = True) -> bool:
    """Mixed precision only where it helps and is safe: CUDA devices."""
    return bool(amp) and device.type == "cuda"


def cpu_bfloat16_native() -> bool:
    """Whether this processor computes bfloat16 in hardware (x86 AVX512-BF16 or AMX). Elsewhere
    PyTorch emulates it, more slowly than float32, so it is not worth asking for."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if callable(check))


def autocast(device: torch.device, amp: bool = True, cpu_bfloat16: bool = False) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in float16 on CUDA when ``amp``; in bfloat16 on the CPU when ``cpu_bfloat16``
    and the processor computes it natively (:func:`cpu_bfloat16_native`); a no-op context elsewhere."""
    if use_amp(device, amp):
        import torch

        return torch.autocast(device_type="cuda", dtype=torch.float16)
    if cpu_bfloat16 and device.type == "cpu" and cpu_bfloat16_native():
        import torch

        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, amp: bool = True) -> torch.amp.GradScaler:
    """A gradient scaler that is active only when AMP is (disabled scalers pass gradients through)."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=use_amp(device, amp))


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict) -> bool:
    """Load a checkpoint's gradient-scaler ``state`` into ``scaler``; return False when the scaler
    starts afresh instead: the checkpoint was written where AMP was off (a run begun on the CPU,
    whose disabled scaler saved nothing) and the run now resumes with AMP on (on a GPU)."""
    if scaler.is_enabled() and not state:
        return False
    scaler.load_state_dict(state)
    return True


def cpu_channels_last(module: torch.nn.Module, device: torch.device) -> bool:
    """Store ``module``'s 5-D parameters and buffers (3D convolution kernels) channels-last when
    ``device`` is the CPU and ``module`` holds no batch normalisation, and say whether it did.

    oneDNN then computes the 3D convolutions, and above all their backward passes, on channels-last
    activations, which is markedly faster per training step than on the default layout for the small
    channel counts of the shipped networks (``benchmarks/training_memory_format.py``). The arithmetic is
    float32 either way; only the order of its sums differs, as between thread counts. Batch normalisation
    is left out: trained channels-last on the CPU, a batch-normalised network was seen to store a negative
    running variance, which turns its evaluation into NaN. Elsewhere (CUDA, MPS) nothing changes, since
    nothing has been measured there.
    """
    import torch

    if device.type != "cpu" or any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return False
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.dim() == 5:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)
    return True
