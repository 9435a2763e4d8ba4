"""Stop training when a loss becomes NaN/Inf, saying clearly what happened."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import TerminateOnNan as _IgniteTerminateOnNan

__all__ = ["TerminateOnNan"]


class TerminateOnNan(_IgniteTerminateOnNan):
    """Ignite's ``TerminateOnNan`` with ``attach`` (for MONAI handler lists) and an explicit error message.

    On a non-finite loss it logs an ERROR naming the losses, epoch and iteration and terminates the engine
    with ``engine.terminate(skip_completed=True)``: Ignite then fires ``Events.TERMINATE`` but neither
    ``EPOCH_COMPLETED`` nor ``COMPLETED``, so no checkpoint, sample grid or ``model.pt`` is written from the
    diverged weights (the last healthy checkpoint stays the latest).  Handlers attached to the same
    ``ITERATION_COMPLETED`` after this one still run: they can test ``engine.should_terminate`` (as
    :class:`rggan.handlers.ForeachEMAHandler` does, so the EMA never absorbs the diverged step).

    Args:
        output_transform: engine output -> the values to check, e.g. :func:`rggan.engine.loss_totals`
            (``{"g_loss": float, "d_loss": float}``).
        name: logger name (default ``rggan.train``).
    """

    def __init__(self, output_transform: Callable[[Any], Any] = lambda x: x, name: str | None = "rggan.train"):
        super().__init__(output_transform=output_transform)
        self.logger = logging.getLogger(name)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        values = self._output_transform(engine.state.output)
        items = (
            values.items()
            if isinstance(values, dict)
            else enumerate(values if isinstance(values, (list, tuple)) else [values])
        )
        bad = {}
        for key, v in items:
            if isinstance(v, numbers.Number):
                v = torch.tensor(v)
            if isinstance(v, torch.Tensor) and not bool(torch.isfinite(v).all()):
                bad[key] = v.tolist()
        if not bad:
            return
        self.logger.error(
            "training diverged at epoch %d, iteration %d: non-finite loss %s. Stopping; no checkpoint or model "
            "file is written from this step. Try a lower learning rate (--g_lr/--d_lr) or amp=false, then resume "
            "or restart.",
            engine.state.epoch,
            engine.state.iteration,
            bad,
        )
        engine.terminate(skip_completed=True)
