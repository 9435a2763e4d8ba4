"""Shared fixtures: the built-in demo download and its prepared dataset, made once per test session."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Run the suite on one intra-op thread per test process (``pytest -n 2`` already fills both cores).

    On a busy 2-core machine torch's default OpenMP threads spin on barriers while their sibling is
    descheduled: the small-tensor loops of these tests ran up to 17x slower (58 s vs 3.4 s for 40 steps).
    """
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_download(tmp_path_factory):
    """The default demo download (read-only for tests: copy it before changing anything)."""
    from rggan.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "download", seed=0)


@pytest.fixture(scope="session")
def prepared_demo(demo_download, tmp_path_factory):
    """``PrepareResult`` of the default demo download at 64x64 (read-only for tests)."""
    from rggan.data.prepare import PrepareConfig, prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "demo64"
    return prepare_dataset(demo_download.output, out, config=PrepareConfig(image_size=64), workers=1, progress=False)


@pytest.fixture(scope="session")
def small_download(tmp_path_factory):
    """A 4-patient demo download (plus the distractors) for tests that modify a copy of it."""
    from rggan.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("small") / "download", patients=4, seed=3)


@pytest.fixture
def small_copy(small_download, tmp_path):
    """A private, writable copy of :func:`small_download`; returns ``(download folder, DemoSummary)``."""
    dst = tmp_path / "download"
    shutil.copytree(small_download.output, dst)
    return dst, small_download


@pytest.fixture(scope="session")
def demo_samples(prepared_demo):
    """Eight fixed prepared demo samples as tensors: image, mask, base (first patch), rna; all (8, ...)."""
    import torch

    root = prepared_demo.output_dir
    datalist = json.loads((root / "datalist.json").read_text())
    items = (datalist["training"] + datalist["validation"])[:8]

    def stack(key: str, index=None) -> torch.Tensor:
        arrays = [np.load(root / item[key]) for item in items]
        return torch.from_numpy(np.stack([a[index] if index is not None else a for a in arrays]))

    return {
        "image": stack("image"),
        "mask": stack("mask"),
        "base": stack("bases", slice(0, 1)),
        "rna": stack("rna"),
        "patients": [item["patient"] for item in items],
    }


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of every file under ``root``."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def modes(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of every file and folder under ``root``."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}
