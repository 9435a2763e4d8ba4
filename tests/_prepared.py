"""Test helper: write a tiny prepared dataset folder in the documented format (docs/architecture.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_prepared(
    folder: str | Path,
    *,
    n_train: int = 6,
    n_val: int = 2,
    image_size: int = 32,
    num_genes: int = 12,
    num_bases: int = 3,
    seed: int = 0,
) -> Path:
    """A prepared folder with ``n_train`` + ``n_val`` random patients; returns its path.

    Each base patch k of patient i is filled with the constant ``i + k / 100`` (tests can identify it).
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.mgrid[:s, :s]
    splits: dict[str, list] = {"training": [], "validation": []}
    for i in range(n_train + n_val):
        pid = f"R01-{i:03d}"
        d = folder / "samples" / pid
        d.mkdir(parents=True, exist_ok=True)
        r = s / 6 + rng.random() * s / 6
        inside = (yy - s / 2) ** 2 + (xx - s / 2) ** 2 < r**2
        mask = np.where(inside, 1.0, -1.0).astype(np.float32)[None]
        image = np.clip(rng.normal(-0.6, 0.1, (1, s, s)) + 0.8 * (mask > 0), -1, 1).astype(np.float32)
        bases = np.stack([np.full((s, s), i + k / 100, np.float32) for k in range(num_bases)])
        rna = rng.normal(size=num_genes).astype(np.float32)
        for name, arr in (("image", image), ("mask", mask), ("bases", bases), ("rna", rna)):
            np.save(d / f"{name}.npy", arr)
        item = {
            "patient": pid,
            **{k: f"samples/{pid}/{k}.npy" for k in ("image", "mask", "bases", "rna")},
            "spacing": [0.7, 0.7],
            "slice_index": 3,
            "crop_box": [0, 0, s, s],
        }
        splits["training" if i < n_train else "validation"].append(item)
    datalist = {
        "image_size": s,
        "num_genes": num_genes,
        "num_bases": num_bases,
        "seed": seed,
        "gene_transform": "gene_transform.json",
        **splits,
    }
    (folder / "datalist.json").write_text(json.dumps(datalist, indent=1))
    return folder

