"""The patient-level training/validation split, fixed by the seed, and the ``datalist.json`` that records it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rggan import __version__
from rggan.data.prepare.config import PrepareConfig
from rggan.data.prepare.result import PatientRecord
from rggan.io import atomic_write_json

__all__ = ["split_patients", "write_datalist"]


def split_patients(included: list[str], config: PrepareConfig) -> set[str]:
    """Draw the validation patients: ``val_fraction`` of them, at least one and not all when there are two or more.

    Args:
        included: the included patients, sorted.
        config: ``seed`` and ``val_fraction``.

    Returns:
        The validation patients.
    """
    order = np.random.default_rng(config.seed).permutation(len(included))
    n_val = int(round(config.val_fraction * len(included)))
    if config.val_fraction > 0 and len(included) >= 2:
        n_val = min(max(n_val, 1), len(included) - 1)
    return {included[i] for i in order[:n_val]}


def write_datalist(
    output_dir: Path,
    records: dict[str, PatientRecord],
    included: list[str],
    validation: set[str],
    num_genes: int,
    config: PrepareConfig,
) -> None:
    """Write ``datalist.json``: the run's settings and one entry per training and validation sample.

    Args:
        output_dir: the prepared dataset folder.
        records: patient -> record (the details give spacing, slice and crop box).
        included: the included patients, sorted.
        validation: the validation patients.
        num_genes: length of the RNA vectors.
        config: the settings.
    """

    def entry(p: str) -> dict[str, Any]:
        d = records[p].details
        rel = f"samples/{p}"
        e = {
            "patient": p, "image": f"{rel}/image.npy", "mask": f"{rel}/mask.npy", "bases": f"{rel}/bases.npy",
            "rna": f"{rel}/rna.npy", "spacing": d["spacing"], "slice_index": d["slice_index"],
            "crop_box": d["crop_box"],
        }  # fmt: skip
        if "margin" in d:  # margin_mm/margin_slices: the slice-averaged margin irregularity (null: none measurable)
            e["margin"] = d["margin"]
        return e

    datalist = {
        "rggan_version": __version__,
        "image_size": config.image_size,
        "num_genes": num_genes,
        "num_bases": config.num_bases,
        "seed": config.seed,
        "permute_rna": config.permute_rna,
        "margin_slices": config.margin_slices,
        "margin_mm": config.margin_mm,
        "hu_range": [config.hu_min, config.hu_max],
        "gene_transform": "gene_transform.json",
        "training": [entry(p) for p in included if p not in validation],
        "validation": [entry(p) for p in included if p in validation],
    }
    atomic_write_json(output_dir / "datalist.json", datalist)
