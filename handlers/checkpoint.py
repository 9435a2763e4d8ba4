"""Resumable training checkpoints: atomic periodic saving and finding the latest checkpoint.

MONAI's ``CheckpointSaver`` is not used for training checkpoints because it hard-codes
``DiskSaver(atomic=False)`` (a run killed while saving leaves a truncated file) and names its interval
and final files by different counters (epoch vs. iteration), so "the latest" cannot be read off the
names.  :class:`CheckpointSaver` here is a thin layer over Ignite's ``Checkpoint`` + ``DiskSaver(atomic=True)``
(temporary file, then ``os.replace``; files get the umask's mode: :class:`UmaskDiskSaver`) writing
``checkpoint_epoch=<E>_iteration=<I>.pt``;
:func:`find_latest_checkpoint` returns the one with the highest iteration, for ``CheckpointLoader``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from rggan.io import file_mode

__all__ = ["CheckpointSaver", "UmaskDiskSaver", "find_latest_checkpoint", "CHECKPOINT_PATTERN"]

#: file names written by :class:`CheckpointSaver`
CHECKPOINT_PATTERN = re.compile(r"^(?P<prefix>.+)_epoch=(?P<epoch>\d+)_iteration=(?P<iteration>\d+)\.pt$")


def find_latest_checkpoint(ckpt_dir: str | os.PathLike, prefix: str = "checkpoint") -> str | None:
    """Path of the checkpoint with the highest iteration in ``ckpt_dir`` (None if there is none)."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    best: tuple[int, str] | None = None
    for path in folder.iterdir():
        m = CHECKPOINT_PATTERN.match(path.name)
        if m and m["prefix"] == prefix and path.is_file():
            key = (int(m["iteration"]), str(path))
            best = key if best is None or key > best else best
    return None if best is None else best[1]


class UmaskDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` whose files get the mode ``open()`` would give (``0o644`` under umask ``022``).

    Ignite's atomic save keeps ``NamedTemporaryFile``'s ``0o600`` and adds group/other read, whatever the umask.
    """

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, filename, metadata)
        path = Path(self.dirname) / filename
        if path.is_file():
            os.chmod(path, file_mode())


class CheckpointSaver:
    """Save ``save_dict`` every ``save_interval`` epochs and when the run completes.

    Args:
        save_dir: output folder (created if needed).
        save_dict: objects with ``state_dict()``: the trainer (for resuming), networks, optimisers, ...
        save_interval: epochs between checkpoints; 0 saves only at the end.
        prefix: file name prefix.
        n_saved: how many interval checkpoints to keep (None: all).
        name: logger name (default: the engine's logger).

    A run stopped by :class:`rggan.handlers.TerminateOnNan` (``engine.state.diverged``) does not write
    its final checkpoint, so resuming starts again from the last healthy one.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        save_interval: int = 0,
        prefix: str = "checkpoint",
        n_saved: int | None = None,
        name: str | None = None,
    ) -> None:
        if save_interval < 0:
            raise ValueError(f"save_interval must be >= 0, got {save_interval}")
        self.save_dir = str(save_dir)
        self.save_interval = int(save_interval)
        self.logger = logging.getLogger(name) if name else None
        self.checkpoint = Checkpoint(
            dict(save_dict),
            UmaskDiskSaver(self.save_dir, require_empty=False, atomic=True, create_dir=True),
            filename_prefix=prefix,
            score_function=lambda engine: engine.state.iteration,
            score_name="iteration",
            global_step_transform=lambda engine, _: engine.state.epoch,
            filename_pattern="{filename_prefix}_epoch={global_step}_{score_name}={score}.{ext}",
            n_saved=n_saved,
        )

    def attach(self, engine: Engine) -> None:
        if self.logger is None:
            self.logger = engine.logger
        if self.save_interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine.state, "diverged", False):
            self.logger.warning("training diverged: no checkpoint written at iteration %d", engine.state.iteration)
            return
        before = self.checkpoint.last_checkpoint
        self.checkpoint(engine)
        if self.checkpoint.last_checkpoint != before:
            self.logger.info("saved checkpoint %s", self.checkpoint.last_checkpoint)
