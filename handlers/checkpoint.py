"""Resumable training checkpoints: atomic periodic saving, and the final model weights.

MONAI's ``CheckpointSaver`` is not used for training checkpoints because it hard-codes
``DiskSaver(atomic=False)`` (a run killed while saving leaves a truncated file) and names its interval
and final files by different counters (epoch vs. iteration), so "the latest" cannot be read off the
names.  :class:`CheckpointSaver` here is a thin layer over Ignite's ``Checkpoint`` + ``DiskSaver(atomic=True)``
(temporary file, then ``os.replace``; files get the umask's mode: :class:`UmaskDiskSaver`) writing
``checkpoint_epoch=<E>_iteration=<I>.pt``;
:func:`rggan.checkpoint.find_latest_checkpoint` (also importable from here and from ``rggan.handlers``)
returns the one with the highest iteration, for ``CheckpointLoader``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from rggan.checkpoint import CHECKPOINT_PATTERN, find_latest_checkpoint
from rggan.io import file_mode

__all__ = ["CheckpointSaver", "FinalModelSaver", "UmaskDiskSaver", "find_latest_checkpoint", "CHECKPOINT_PATTERN"]


class UmaskDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` whose files get the mode ``open()`` would give (``0o644`` under umask ``022``).

    Ignite's atomic save keeps ``NamedTemporaryFile``'s ``0o600`` and adds group/other read, whatever the umask.
    """

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        """Save as Ignite does, then give the file the umask's mode."""
        super().__call__(checkpoint, filename, metadata)
        path = Path(self.dirname) / filename
        if path.is_file():
            os.chmod(path, file_mode())


class CheckpointSaver:
    """Save ``save_dict`` every ``save_interval`` epochs and when the run completes; keep the last few.

    Two Ignite ``Checkpoint`` objects share one :class:`UmaskDiskSaver`: ``interval`` keeps the newest
    ``n_saved`` interval checkpoints (older ones are deleted) and ``final`` writes the end-of-run checkpoint,
    kept in addition (when the run ends on an interval save, that file is the final one and is not written
    twice).  Files are named ``<prefix>_epoch=<E>_iteration=<I>.pt`` (see :func:`find_latest_checkpoint`).
    Checkpoints already in ``save_dir`` from the run being resumed (iteration up to the one it starts from)
    count towards ``n_saved``, so a resumed run prunes them too; files of another prefix (e.g. a "best"
    checkpoint saved beside these by another ``Checkpoint`` sharing ``save_handler``) are never touched.

    Args:
        save_dir: output folder (created if needed).
        save_dict: objects with ``state_dict()``: the trainer (for resuming), networks, optimisers, ...
        save_interval: epochs between checkpoints; 0 saves only at the end.
        prefix: file name prefix.
        n_saved: how many interval checkpoints to keep besides the final one (None: all).
        name: logger name (default: the engine's logger).

    A run stopped by :class:`rggan.handlers.TerminateOnNan` fires no ``EPOCH_COMPLETED``/``COMPLETED`` after
    the diverged step, so no checkpoint is written from it and resuming starts again from the last healthy one.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        save_interval: int = 0,
        prefix: str = "checkpoint",
        n_saved: int | None = 3,
        name: str | None = None,
    ) -> None:
        if save_interval < 0:
            raise ValueError(f"save_interval must be >= 0, got {save_interval}")
        if n_saved is not None and n_saved < 1:
            raise ValueError(f"n_saved must be >= 1 or None, got {n_saved}")
        self.save_dir = str(save_dir)
        self.save_interval = int(save_interval)
        self.prefix = prefix
        self.logger = logging.getLogger(name) if name else None
        self.save_handler = UmaskDiskSaver(self.save_dir, require_empty=False, atomic=True, create_dir=True)
        common = {
            "filename_prefix": prefix,
            "score_function": lambda engine: engine.state.iteration,
            "score_name": "iteration",
            "global_step_transform": lambda engine, _: engine.state.epoch,
            "filename_pattern": "{filename_prefix}_epoch={global_step}_{score_name}={score}.{ext}",
        }
        self.interval = Checkpoint(dict(save_dict), self.save_handler, n_saved=n_saved, **common)
        self.final = Checkpoint(dict(save_dict), self.save_handler, n_saved=1, **common)
        self._saved_iteration: int | None = None
        self._adopted = False

    @property
    def checkpoint(self) -> Checkpoint:
        """The interval ``Checkpoint`` (its ``last_checkpoint``, ``save_handler``, ...)."""
        return self.interval

    def attach(self, engine: Engine) -> None:
        """Count resumed checkpoints at the first epoch, save every ``save_interval`` epochs and at ``COMPLETED``."""
        if self.logger is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.EPOCH_STARTED, self._adopt_existing)
        if self.save_interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)
        engine.add_event_handler(Events.COMPLETED, self.save_final)

    def _adopt_existing(self, engine: Engine) -> None:
        """At the run's first epoch (after a resume has loaded), count the checkpoints it continues from."""
        # (a flag, not remove_event_handler: removing a handler while Ignite fires its event skips the next one)
        if self._adopted:
            return
        self._adopted = True
        folder = Path(self.save_dir)
        if not folder.is_dir():
            return
        found = []
        for path in folder.iterdir():
            m = CHECKPOINT_PATTERN.match(path.name)
            if m and m["prefix"] == self.prefix and path.is_file() and int(m["iteration"]) <= engine.state.iteration:
                found.append((int(m["iteration"]), path.name))
        self.interval.load_state_dict({"_saved": sorted(found)})

    def _save(self, checkpoint: Checkpoint, engine: Engine) -> None:
        before = checkpoint.last_checkpoint
        checkpoint(engine)
        if checkpoint.last_checkpoint != before:
            self._saved_iteration = engine.state.iteration
            self.logger.info("saved checkpoint %s", checkpoint.last_checkpoint)

    def __call__(self, engine: Engine) -> None:
        """Interval save (the oldest interval checkpoint beyond ``n_saved`` is deleted)."""
        self._save(self.interval, engine)

    def save_final(self, engine: Engine) -> None:
        """End-of-run save, kept beside the last ``n_saved`` interval checkpoints."""
        if self._saved_iteration != engine.state.iteration:
            self._save(self.final, engine)


class FinalModelSaver:
    """Write a network's weights (e.g. the EMA generator) to ``path`` when the run completes.

    The bundle's ``models/model.pt`` (Model-Zoo convention), written atomically by
    :func:`rggan.export.save_generator_weights`.  Attached to ``Events.COMPLETED``, which Ignite does not fire
    after ``engine.terminate(skip_completed=True)`` (:class:`rggan.handlers.TerminateOnNan`): a diverged run
    leaves the previous ``model.pt`` as it was.

    Args:
        model: the network whose ``state_dict`` is saved.
        path: destination file.
        name: logger name (default: the engine's logger).
    """

    def __init__(self, model: torch.nn.Module, path: str | os.PathLike, name: str | None = None) -> None:
        self.model = model
        self.path = Path(path)
        self.logger = logging.getLogger(name) if name else None

    def attach(self, engine: Engine) -> None:
        """Save at ``COMPLETED``."""
        if self.logger is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Write the weights (atomically) and log the path."""
        from rggan.export import save_generator_weights

        self.logger.info("saved model weights %s", save_generator_weights(self.model, self.path))
