"""Device and numeric-precision decisions, made in one place.

- fp32: no autocast.
- bf16: `torch.autocast` to bfloat16 (CPU where the processor has bf16 instructions, CUDA where
  the GPU supports it); weights and optimizer state stay fp32, so no loss scaling is needed.
- fp16: CUDA only, autocast to float16 with a `GradScaler` (fp16's narrow range underflows
  small gradients without it).
- auto: bf16 where it is supported in hardware, else fp32.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_device(device: str) -> None:
    """`auto`, `cpu`, `cuda` or `cuda:N`; availability is checked by `resolve_device`."""
    if device == "auto":
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


def resolve_device(device: str = "auto") -> torch.device:
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device is available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA devices")
    return dev


def cpu_has_bf16() -> bool:
    # AVX512-BF16 or AMX: without them bf16 autocast on CPU is emulated and slower than fp32.
    # Not `torch.ops.mkldnn._is_mkldnn_bf16_supported()`: that is true on any AVX512BW/VL/DQ
    # CPU (Skylake-SP, Cascade Lake), where oneDNN only emulates bf16, so `--precision auto`
    # trained there in slow emulated bf16 while inference (`infer.native_bf16`, which asks
    # this) left bf16 out as emulated. One test for both.
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return "bf16" if bf16_ok else "fp16"
        if precision == "bf16" and not bf16_ok:
            warnings.warn("this GPU has no bf16; using fp16 with loss scaling", stacklevel=2)
            return "fp16"
        return precision
    if precision == "fp16":
        raise ValueError("fp16 training needs a CUDA GPU; on CPU use --precision bf16 or fp32")
    if precision in ("auto", "bf16"):
        if cpu_has_bf16():
            return "bf16"
        if precision == "bf16":
            warnings.warn("this CPU has no bf16 instructions; training in fp32", stacklevel=2)
        return "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """Context manager for the forward pass under `precision` (already resolved)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Enabled only for fp16; a disabled scaler is a pass-through, so the loop has one shape."""
    return torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
