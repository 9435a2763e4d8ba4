"""Inference output: the generated nodules of an evaluator run, written all or nothing."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from rggan.errors import OutputError
from rggan.features import FEATURE_NAMES, nodule_features, to_hu
from rggan.intensity import DEFAULT_HU_RANGE
from rggan.nodule_files import INDEX_NAME, preview_png, safe_name, write_index, write_nifti
from rggan.options import as_flag
from rggan.staging import commit_staging, make_staging

__all__ = ["GeneratedNoduleWriter"]


class GeneratedNoduleWriter:
    """Evaluator handler: NIfTI image + mask, PNG preview and ``index.csv`` per generated nodule.

    Layout of ``output_dir``::

        index.csv                                   one row per nodule (paths relative to output_dir)
        <patient>/<patient>_s<j>_image.nii.gz       HU (within ``hu_range``), float32, (col, row, 1),
                                                    affine diag(col mm, row mm, 1)
        <patient>/<patient>_s<j>_mask.nii.gz        uint8 {0, 1}, mask > 0 of the generator's mask channel
        <patient>/<patient>_s<j>_preview.png        background | generated | generated + mask outline

    The rows of ``index.csv`` also hold the nodule features (:mod:`rggan.features`).
    Files are written into a hidden staging folder beside ``output_dir`` (:mod:`rggan.staging`) and
    moved into place when the evaluator completes; if the run fails the staging folder is removed, so
    an error leaves no partial outputs (existing files in ``output_dir`` are only replaced by complete
    new ones).

    Args:
        output_dir: destination folder.
        previews: write the PNG previews (command-line strings such as ``"false"`` accepted).
        name: logger name.
        hu_range: the HU window of the prepared dataset (``rggan.intensity.hu_range_of(dataset_dir)``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        previews: bool = True,
        name: str | None = None,
        hu_range: Sequence[float] = DEFAULT_HU_RANGE,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.hu_range = tuple(float(v) for v in hu_range)
        self.previews = as_flag(previews)
        self.logger = logging.getLogger(name or "rggan.inference")
        self.rows: list[dict[str, Any]] = []
        self._staging: Path | None = None

    def attach(self, engine: Engine) -> None:
        """Stage at ``STARTED``, write each ``ITERATION_COMPLETED``, commit at ``COMPLETED``, abort on errors.

        Args:
            engine: the evaluator whose ``state.output["pred"]`` is the generator's output.
        """
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_batch)
        engine.add_event_handler(Events.COMPLETED, self.commit)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.abort)

    def start(self, engine: Engine | None = None) -> None:
        """Create the staging folder (beside ``output_dir``)."""
        self.cleanup()
        self._staging = make_staging(self.output_dir)
        self.rows = []

    def write_batch(self, engine: Engine) -> None:
        """Write the nodules of the current iteration into the staging folder."""
        batch, pred = engine.state.batch, engine.state.output["pred"]
        self.write(batch, pred.image, pred.mask)

    def _row(self, batch: Mapping[str, Any], i: int, stem: str, spacing: list[float]) -> dict[str, Any]:
        return {
            "id": batch["id"][i],
            "patient": str(batch["patient"][i]),
            "sample": int(batch["sample"][i]),
            "background": batch["background"][i],
            "spacing_row_mm": spacing[0],
            "spacing_col_mm": spacing[1],
            "image": f"{stem}_image.nii.gz",
            "mask": f"{stem}_mask.nii.gz",
        }

    def write(self, batch: Mapping[str, Any], image: torch.Tensor, mask: torch.Tensor) -> None:
        """Write one batch of generated nodules.

        Args:
            batch: a batch of :func:`rggan.generation.collate_inputs`.
            image, mask: the generator's (B, 1, S, S) outputs in [-1, 1].
        """
        from PIL import Image

        if self._staging is None:
            self.start()
        assert self._staging is not None
        image, mask = image.detach().float().cpu(), mask.detach().float().cpu()
        spacing = torch.as_tensor(batch["spacing"], dtype=torch.float64)
        feats = nodule_features(image, mask, spacing, hu_range=self.hu_range)
        hu = to_hu(image.clamp(-1.0, 1.0), self.hu_range).numpy()[:, 0]  # G's image is in [-1, 1]
        for i, rid in enumerate(batch["id"]):
            sub = safe_name(str(batch["patient"][i]))
            stem = f"{sub}/{safe_name(rid)}"
            (self._staging / sub).mkdir(exist_ok=True)
            sp = [float(v) for v in spacing[i]]
            write_nifti(self._staging / f"{stem}_image.nii.gz", hu[i], sp, np.float32)
            write_nifti(self._staging / f"{stem}_mask.nii.gz", (mask[i, 0].numpy() > 0), sp, np.uint8)
            row = self._row(batch, i, stem, sp)
            if self.previews:
                base = torch.as_tensor(batch["base"][i]).float().numpy()[0]
                png = preview_png(base, image[i, 0].numpy(), mask[i, 0].numpy())
                Image.fromarray(png).save(self._staging / f"{stem}_preview.png")
                row["preview"] = f"{stem}_preview.png"
            row.update({k: float(feats[k][i]) for k in FEATURE_NAMES})
            self.rows.append(row)

    def commit(self, engine: Engine | None = None) -> Path:
        """Write ``index.csv`` and move the staged files into ``output_dir``.

        Returns:
            The path of ``index.csv`` in ``output_dir``.
        """
        if self._staging is None:
            self.start()
        assert self._staging is not None
        write_index(self._staging / INDEX_NAME, self.rows)
        try:
            commit_staging(self._staging, self.output_dir)
        except OutputError:
            self.cleanup()
            raise
        self._staging = None
        path = self.output_dir / INDEX_NAME
        self.logger.info("wrote %d generated nodules to %s (index %s)", len(self.rows), self.output_dir, path)
        return path

    def cleanup(self) -> None:
        """Remove the staging folder, if any."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def abort(self, engine: Engine, exc: BaseException) -> None:
        """``EXCEPTION_RAISED``: drop everything staged and re-raise."""
        self.cleanup()
        raise exc
