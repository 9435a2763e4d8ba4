"""What the machine offers the process: usable CPUs, the data-loading workers they can feed, fast bfloat16."""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["available_cpus", "default_num_workers", "cpu_has_fast_bf16", "resolve_amp"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``), >= 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def default_num_workers(max_workers: int = 4, cpus: int | None = None) -> int:
    """DataLoader workers for a training process: one CPU is left to the training itself, at most ``max_workers``.

    The training data are cached in memory, so a batch costs the workers ~2 ms to assemble: they need little
    CPU, and more workers than CPUs only compete with the training's own threads (PyTorch then warns at
    every run).  1 CPU: 0 workers (batches made in the training process); 2 CPUs: 1; 5 or more: ``max_workers``.

    Args:
        max_workers: upper bound (the bundle's former fixed default, 4).
        cpus: CPUs to size for (default: :func:`available_cpus`).
    """
    cpus = available_cpus() if cpus is None else max(1, int(cpus))
    return max(0, min(int(max_workers), cpus - 1))


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware tiles (Intel AMX), where oneDNN runs bfloat16
    convolutions and matmuls several times faster than float32.  Without AMX (e.g. AVX512-BF16 only)
    bfloat16 autocast mostly adds casts.
    """
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x; absent: assume no AMX
    try:
        return bool(probe()) if callable(probe) else False
    except RuntimeError:
        return False


def resolve_amp(amp: Any, device: str | torch.device) -> bool:
    """The trainer's ``amp`` setting as a bool.

    Args:
        amp: True/False (or their strings, as a command line gives them), or ``"auto"``: bfloat16
            autocast on a CPU with AMX (:func:`cpu_has_fast_bf16`), full precision everywhere else
            (float16 on CUDA is opt-in: ``amp: true``).
        device: the device training runs on.

    Returns:
        Whether to train under autocast.
    """
    if isinstance(amp, str):
        if amp.strip().lower() == "auto":
            return torch.device(device).type == "cpu" and cpu_has_fast_bf16()
        from monai.utils import str2bool

        return str2bool(amp)
    return bool(amp)
