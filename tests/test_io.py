"""rggan.io and the files the project writes: atomic, and with the modes the umask asks for."""

from __future__ import annotations

import contextlib
import os
import stat

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from rggan.handlers import CheckpointSaver

from rggan.io import atomic_save_npy, atomic_write_json
from tests.conftest import modes


@contextlib.contextmanager
def umask(mask: int):
    """Set the process umask for the block (restored after)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, mask, expected):
    with umask(mask):
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_save_npy(tmp_path / "sub" / "b.npy", np.zeros(3))
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "sub" / "b.npy").stat().st_mode) == expected
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.npy", "sub"]  # no temporary left
    assert modes(tmp_path)["sub"] == 0o777 & ~mask


def test_umask_is_read_without_changing_it():
    from rggan.io import current_umask, file_mode

    with umask(0o027):
        assert current_umask() == 0o027 and current_umask() == 0o027 and file_mode() == 0o640


def test_checkpoints_honour_the_umask(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    CheckpointSaver(tmp_path, {"net": net, "trainer": engine}).attach(engine)
    with umask(0o027):
        engine.run([0, 1], max_epochs=1)
    (ckpt,) = tmp_path.iterdir()
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o640  # ignite's own DiskSaver gives 0o644 whatever the umask
