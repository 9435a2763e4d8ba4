"""What the machine offers the process: usable CPUs and the data-loading workers they can feed."""

from __future__ import annotations

import os

__all__ = ["available_cpus", "default_num_workers"]


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
