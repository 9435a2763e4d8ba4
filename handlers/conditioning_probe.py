"""Diagnosis instruments of the conditioning, logged during training (TensorBoard ``probe/*``).

Every ``interval`` epochs, on the prepared training and validation patients (one fixed background
patch and one fixed latent each, no gradients):

* ``probe/gene_effect_hu``: mean |G(rna_j, z, base) - G(rna_i, z, base)| in HU (the prepared dataset's
  ``hu_range``, :func:`rggan.intensity.hu_range_of`) over the pixels, where
  patient i's genes are swapped for another patient j's (z and background fixed): how much the output
  depends on the genes. ``probe/z_effect_hu``: the same for a second latent instead of other genes.
  ``probe/gene_effect_nodule_hu``: the gene effect inside the generated nodule (mask > 0) only.
* ``probe/isc_gap_train`` / ``probe/isc_gap_val``: D's ISC logit on real (image, mask, own genes) minus
  on the same image with another patient's genes: does D reward a matching condition, and on unseen
  patients too? ``probe/i_real_train`` / ``probe/i_real_val``: D's image-realism logit on real nodules
  (target 1): a large train-validation gap means D memorised the training nodules.

The generator measured is ``generator`` (normally the EMA copy) in eval mode; D runs in eval mode
(running BatchNorm statistics, no augmentation), so the probe never changes either network.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn

from rggan.intensity import DEFAULT_HU_RANGE, hu_per_unit, hu_range_of

__all__ = ["ConditioningProbe"]


def _stack(items: list[dict[str, Any]], key: str, index: slice | None = None) -> torch.Tensor:
    arrays = [np.load(it[key]) for it in items]
    return torch.from_numpy(np.stack([a[index] if index is not None else a for a in arrays])).float()


class ConditioningProbe:
    """Measure how much G uses its genes and noise, and how D judges the gene match (see module docstring).

    Args:
        generator: the generator to measure (``G(rna, z, base)``), normally the EMA copy.
        discriminator: the discriminator being trained.
        dataset_dir: prepared dataset folder.
        condition: what D's ISC head sees: ``"rna"`` or ``"embedding"`` (then ``encoder`` gives it).
        encoder: the training generator's gene encoder (for ``condition="embedding"``).
        interval: epochs between measurements.
        summary_writer: optional TensorBoard writer (tags ``<tag>/<name>``, step = epoch).
        seed: seed of the fixed latents and gene swaps.
        tag: TensorBoard tag prefix.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        dataset_dir: str,
        condition: str = "rna",
        encoder: nn.Module | None = None,
        interval: int = 50,
        summary_writer: Any | None = None,
        seed: int = 0,
        tag: str = "probe",
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if condition == "embedding" and encoder is None:
            raise ValueError("condition='embedding' needs the generator's gene encoder (encoder=...)")
        self.generator, self.discriminator, self.encoder = generator, discriminator, encoder
        self.dataset_dir, self.condition, self.interval = dataset_dir, condition, int(interval)
        self.summary_writer, self.seed, self.tag = summary_writer, int(seed), tag
        self.history: list[tuple[int, dict[str, float]]] = []
        self._data: dict[str, dict[str, torch.Tensor]] | None = None
        self.hu_per_unit = hu_per_unit(DEFAULT_HU_RANGE)  # HU per unit of [-1, 1]; set from the dataset when loaded

    def _load(self) -> dict[str, dict[str, torch.Tensor]]:
        from rggan.data.dataset import load_datalist

        # read with the data: the folder may be prepared after __init__
        self.hu_per_unit = hu_per_unit(hu_range_of(self.dataset_dir))
        out = {}
        for split in ("training", "validation"):
            items = load_datalist(self.dataset_dir, split, required=False)
            if len(items) < 2:
                continue
            out[split] = {
                "rna": _stack(items, "rna"),
                "image": _stack(items, "image"),
                "mask": _stack(items, "mask"),
                "base": _stack(items, "bases", slice(0, 1)),
            }
        return out

    def attach(self, engine: Engine) -> None:
        """Measure every ``interval`` epochs."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    @torch.no_grad()
    def measure(self) -> dict[str, float]:
        """One measurement (also usable outside training)."""
        if self._data is None:
            self._data = self._load()
        g, d = self.generator, self.discriminator
        device = next(g.parameters()).device
        modes = (g.training, d.training)
        g.eval(), d.eval()
        gen = torch.Generator().manual_seed(self.seed)
        result: dict[str, float] = {}
        try:
            for split, data in self._data.items():
                b = {k: v.to(device) for k, v in data.items()}
                n = b["rna"].shape[0]
                other = (torch.arange(n) + 1 + torch.randint(0, n - 1, (n,), generator=gen)) % n  # never itself
                z = torch.randn(n, g.latent_size, generator=gen).to(device)
                z2 = torch.randn(n, g.latent_size, generator=gen).to(device)
                if split == "training":
                    ref = g(b["rna"], z, b["base"])
                    swap = g(b["rna"][other], z, b["base"])
                    noise = g(b["rna"], z2, b["base"])
                    diff = (swap.image - ref.image).abs() * self.hu_per_unit
                    inside = (ref.mask > 0).float()
                    result["gene_effect_hu"] = float(diff.mean())
                    result["gene_effect_nodule_hu"] = float((diff * inside).sum() / inside.sum().clamp(min=1))
                    result["z_effect_hu"] = float(((noise.image - ref.image).abs() * self.hu_per_unit).mean())
                cond = b["rna"] if self.condition == "rna" else self.encoder(b["rna"])
                real = d(b["image"], b["mask"], cond)
                wrong = d(b["image"], b["mask"], cond[other])
                short = "train" if split == "training" else "val"
                result[f"isc_gap_{short}"] = float((real.isc - wrong.isc).mean())
                result[f"i_real_{short}"] = float(real.i.mean())
        finally:
            g.train(modes[0]), d.train(modes[1])
        return result

    def __call__(self, engine: Engine) -> dict[str, float]:
        """Measure, record, log and (with a writer) add to TensorBoard; returns the measurement."""
        result = self.measure()
        epoch = int(engine.state.epoch)
        self.history.append((epoch, result))
        logging.getLogger(engine.logger.name).info(
            "Epoch[%d] probe: %s", epoch, " ".join(f"{k}: {v:.3g}" for k, v in result.items())
        )
        if self.summary_writer is not None:
            for k, v in result.items():
                self.summary_writer.add_scalar(f"{self.tag}/{k}", v, epoch)
        return result
