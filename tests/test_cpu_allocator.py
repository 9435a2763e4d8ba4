"""rggan.system.tune_cpu_allocator: freed training buffers stay in the process on CPU (glibc)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from rggan.system import tune_cpu_allocator

# one process per measurement: the setting is process-wide. 128 blocks of 1 MiB are allocated and freed
# twice; the minor page faults of the second round say whether the freed memory was kept.
_PROBE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from rggan.system import tune_cpu_allocator

    applied = tune_cpu_allocator(sys.argv[1], "cpu")

    def round_():
        blocks = [np.ones(2**18, np.float32) for _ in range(128)]  # 128 x 1 MiB, touched
        del blocks

    round_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    round_()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _second_round_faults(setting: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, setting], check=True, capture_output=True, text=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_tuned_allocator_keeps_freed_buffers():
    applied, tuned = _second_round_faults("auto")
    default_applied, default = _second_round_faults("false")
    assert applied and not default_applied
    # glibc's defaults return the 128 MiB to the kernel and fault it in again (~32k pages); tuned, it stays
    assert default > 16_000
    assert tuned < default / 10


def test_tune_cpu_allocator_settings():
    assert tune_cpu_allocator(False, "cpu") is False
    assert tune_cpu_allocator("false", "cpu") is False  # a command line's string
    assert tune_cpu_allocator("auto", torch.device("cuda", 0)) is False  # CUDA memory is PyTorch's own
