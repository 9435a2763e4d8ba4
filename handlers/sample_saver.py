"""Fixed-sample image grids of the (EMA) generator during training, as PNG and in TensorBoard."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.networks import eval_mode

__all__ = ["SampleSaver", "make_grid"]


def make_grid(rows: Sequence[Sequence[torch.Tensor]], pad: int = 2, min_tile: int = 96) -> np.ndarray:
    """(H', W') uint8 grid of 2-D tensors in [-1, 1]; ``rows[i][j]`` is the tile at row i, column j.

    Tiles smaller than ``min_tile`` pixels are enlarged by an integer factor (nearest neighbour), so small
    training crops stay readable.
    """
    tiles = [[t.detach().float().cpu().reshape(t.shape[-2:]) for t in row] for row in rows]
    factor = max(1, -(-min_tile // max(tiles[0][0].shape)))
    if factor > 1:
        tiles = [[t.repeat_interleave(factor, 0).repeat_interleave(factor, 1) for t in row] for row in tiles]
    h, w = tiles[0][0].shape
    n_rows, n_cols = len(tiles), max(len(r) for r in tiles)
    grid = torch.ones(n_rows * (h + pad) + pad, n_cols * (w + pad) + pad)
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = t.clamp(-1, 1)
    return ((grid + 1) * 127.5).round().to(torch.uint8).numpy()


class SampleSaver:
    """Every ``interval`` epochs (and at the end), synthesise fixed samples and save a grid.

    One row per sample, columns: background patch | generated image | generated mask | real image.
    The samples (patients, background patch 0, latents from ``seed``) are fixed for the whole run, so
    grids of different epochs are comparable.  The generator (normally the EMA copy,
    ``EMAHandler.ema_model``) runs in eval mode under ``torch.no_grad``; its mode is restored after.

    Args:
        generator: the network to sample from: ``generator(rna, z, base)`` -> object with ``.image``, ``.mask``.
        data: items with ``image``, ``mask``, ``rna`` and ``bases`` (K,S,S) or ``base`` (1,S,S) tensors,
            e.g. ``monai.data.Dataset(sample_datalist(...), load_transform())``.  Read once, at attach.
        output_dir: folder of the PNGs ``samples_epoch=<E>.png``.
        latent_size: length of z.
        interval: epochs between grids (0: only at the end).
        num_samples: rows of the grid (at most ``len(data)``).
        summary_writer: optional shared TensorBoard writer; the grid is logged as image ``tag``.
        seed: seed of the fixed latents.
        tag: TensorBoard tag.
        name: logger name (default: the engine's logger).
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        data: Sequence[dict],
        output_dir: str | os.PathLike,
        latent_size: int,
        interval: int = 1,
        num_samples: int = 8,
        summary_writer: Any | None = None,
        seed: int = 0,
        tag: str = "samples",
        name: str | None = None,
    ) -> None:
        self.generator = generator
        self.data = data
        self.output_dir = Path(output_dir)
        self.latent_size = int(latent_size)
        self.interval = int(interval)
        self.num_samples = int(num_samples)
        self.summary_writer = summary_writer
        self.seed = int(seed)
        self.tag = tag
        self.logger = logging.getLogger(name) if name else None
        self._batch: dict[str, torch.Tensor] | None = None
        self._last_epoch = -1

    def _fixed_batch(self) -> dict[str, torch.Tensor]:
        items = [self.data[i] for i in range(min(self.num_samples, len(self.data)))]
        if not items:
            raise ValueError("SampleSaver needs at least one sample.")
        bases = [d["base"] if "base" in d else d["bases"][:1] for d in items]
        g = torch.Generator().manual_seed(self.seed)
        return {
            "rna": torch.stack([torch.as_tensor(d["rna"]) for d in items]).float(),
            "base": torch.stack([torch.as_tensor(b) for b in bases]).float(),
            "image": torch.stack([torch.as_tensor(d["image"]) for d in items]).float(),
            "z": torch.randn(len(items), self.latent_size, generator=g),
        }

    def attach(self, engine: Engine) -> None:
        """Fix the samples now; save a grid every ``interval`` epochs and at ``COMPLETED``."""
        if self.logger is None:
            self.logger = engine.logger
        self._batch = self._fixed_batch()
        if self.interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Save the grid of the current epoch (once per epoch)."""
        epoch = engine.state.epoch
        if epoch == self._last_epoch:
            return
        self._last_epoch = epoch
        path = self.save(epoch)
        self.logger.debug("saved samples %s", path)  # every `interval` epochs: not worth a console line

    def save(self, epoch: int) -> Path:
        """Synthesise the fixed samples and write the grid for ``epoch``; returns the PNG path."""
        from PIL import Image

        if self._batch is None:
            self._batch = self._fixed_batch()
        net = self.generator
        device = next(net.parameters()).device
        b = {k: v.to(device) for k, v in self._batch.items()}
        with eval_mode(net), torch.no_grad():
            out = net(b["rna"], b["z"], b["base"])
        rows = [[b["base"][i], out.image[i], out.mask[i], b["image"][i]] for i in range(b["z"].shape[0])]
        grid = make_grid(rows)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"samples_epoch={epoch}.png"
        tmp = path.with_suffix(".tmp.png")
        Image.fromarray(grid).save(tmp)
        os.replace(tmp, path)
        if self.summary_writer is not None:
            self.summary_writer.add_image(self.tag, grid, global_step=epoch, dataformats="HW")
        return path
