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
    """Ignite's ``TerminateOnNan`` with ``attach`` (for MONAI handler lists), an explicit error message and a
    device-side check that synchronises with the host only every ``interval`` iterations.

    Every iteration, the finiteness of each loss is OR-ed into a small flag tensor on the losses' device (no
    host transfer: the step keeps running ahead on a GPU).  The flags are read on the host every ``interval``
    iterations and on the last iteration of every epoch, so no non-finite step escapes the check, however
    short: the check reports every loss that was non-finite at any iteration since the previous check.
    Python numbers (losses already on the host) are checked at once, every iteration.

    On a non-finite loss it logs an ERROR naming the losses, epoch and iterations and terminates the engine
    with ``engine.terminate(skip_completed=True)``: Ignite then fires ``Events.TERMINATE`` but neither
    ``EPOCH_COMPLETED`` nor ``COMPLETED``, so no checkpoint, sample grid or ``model.pt`` is written from the
    diverged weights (epoch-end handlers run only after the check of the epoch's last iteration, so the last
    healthy checkpoint stays the latest).  Handlers attached to the same ``ITERATION_COMPLETED`` after this
    one still run: they can test ``engine.should_terminate`` (as :class:`rggan.handlers.ForeachEMAHandler`
    does).  With ``interval > 1`` up to ``interval - 1`` diverged steps run before the check; give the EMA
    handler the same ``output_transform`` and it skips them on the device; nothing from them is saved.

    Args:
        output_transform: engine output -> the values to check, e.g. :func:`rggan.engine.loss_totals`
            (``{"g_loss": tensor, "d_loss": tensor}``).
        name: logger name (default ``rggan.train``).
        interval: read the flags on the host every ``interval`` iterations (and at each epoch's end);
            1 checks every iteration (Ignite's behaviour). ``train.yaml`` uses its ``log_interval``.
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda x: x,
        name: str | None = "rggan.train",
        interval: int = 1,
    ) -> None:
        super().__init__(output_transform=output_transform)
        self.logger = logging.getLogger(name)
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = int(interval)
        self._flags: torch.Tensor | None = None  # per key: non-finite since the last check (on the device)
        self._keys: list[Any] = []
        self._since: int | None = None  # first iteration since the last check

    def attach(self, engine: Engine) -> None:
        """Check after every iteration."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _due(self, engine: Engine) -> bool:
        it, length = engine.state.iteration, engine.state.epoch_length
        return it % self.interval == 0 or (length is not None and it % length == 0)

    def __call__(self, engine: Engine) -> None:
        """Record this iteration's finiteness; on a due check, terminate if any loss was non-finite."""
        values = self._output_transform(engine.state.output)
        items = list(
            values.items()
            if isinstance(values, dict)
            else enumerate(values if isinstance(values, (list, tuple)) else [values])
        )
        if self._since is None:
            self._since = engine.state.iteration
        bad: dict[Any, Any] = {}
        keys, flags = [], []
        for key, v in items:
            if isinstance(v, numbers.Number):  # already on the host: checked now
                if not torch.isfinite(torch.tensor(float(v))):
                    bad[key] = float(v)
            elif isinstance(v, torch.Tensor):
                keys.append(key)
                flags.append(~torch.isfinite(v.detach()).all())
        if flags:
            now = torch.stack([f.to(flags[0].device) for f in flags])
            same = self._flags is not None and self._keys == keys and self._flags.device == now.device
            self._flags = self._flags | now if same else now
            self._keys = keys
        if not bad and not self._due(engine):
            return
        first, self._since = self._since, None
        if self._flags is not None:
            seen = self._flags.tolist()  # the one host transfer of this check
            self._flags = None
            current = {k: v for k, v in items if isinstance(v, torch.Tensor)}
            for key, was_bad in zip(self._keys, seen):
                if was_bad:
                    bad[key] = current[key].detach().cpu().tolist() if key in current else "non-finite"
        if not bad:
            return
        it = engine.state.iteration
        where = f"iteration {it}" if first >= it else f"iterations {first}-{it}"
        self.logger.error(
            "training diverged at epoch %d, %s: non-finite loss %s. Stopping; no checkpoint or model "
            "file is written from this step. Try a lower learning rate (--g_lr/--d_lr) or amp=false, then resume "
            "or restart.",
            engine.state.epoch,
            where,
            bad,
        )
        engine.terminate(skip_completed=True)
