"""Gene traversal strips: what one gene does to the synthesised nodule, in pictures.

For a gene and a few patients, the generator synthesises the patient's nodule with that gene's
normalised (z-scored) value set to each of ``values`` (default -2, -1, 0, +1, +2 SD) while every other
gene, the latent code and the background patch stay the patient's own; with co-expression slopes
(:func:`rggan.radiogenomic.perturbation.coexpression_slopes`, the radiogenomic map's default) the
other genes move with the gene by their slopes on it, as in the map. One strip per gene: rows are
patients, columns the gene's values; each tile is the generated image with the generated mask's
outline in red. :func:`traversal_figures` makes the strips of each feature's top genes of a
radiogenomic map; :func:`rggan.radiogenomic.workflow.run_radiogenomic_map` writes them as PNG beside the
heatmaps and logs them to TensorBoard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rggan.visualize import tile_grid

__all__ = ["traversal_images", "traversal_strip", "traversal_figures", "DEFAULT_VALUES"]

DEFAULT_VALUES: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)


@torch.no_grad()
def traversal_images(
    network: torch.nn.Module,
    requests: Sequence[Mapping[str, Any]],
    gene_index: int,
    values: Sequence[float] = DEFAULT_VALUES,
    device: str | torch.device | None = None,
    slopes: Any = None,
) -> dict[str, torch.Tensor]:
    """Generate every (patient request, gene value) pair in one batch.

    Args:
        network: the generator ``G(rna, z, base)``; run in eval mode (its mode is restored).
        requests: dicts with ``rna`` (G,), ``z`` (L,), ``base`` (1, S, S), one per row of the strip.
        gene_index: column of the gene in the expression vectors.
        values: the gene's normalised values, one per column.
        slopes: None (the other genes stay) or (G,) the slopes of every gene on this one (1 at
            ``gene_index``): the row moves by ``(value - own value) * slopes``.

    Returns:
        ``{"image": (P, V, S, S), "mask": (P, V, S, S)}`` CPU tensors in [-1, 1].
    """
    device = device or next(network.parameters()).device
    p, v = len(requests), len(values)
    rna = torch.as_tensor(np.stack([np.asarray(r["rna"], np.float32) for r in requests])).to(device)
    z = torch.as_tensor(np.stack([np.asarray(r["z"], np.float32) for r in requests])).to(device)
    base = torch.as_tensor(np.stack([np.asarray(r["base"], np.float32) for r in requests])).to(device)
    rna = rna.repeat_interleave(v, 0)
    target = torch.tensor([float(x) for x in values], device=device).repeat(p)
    if slopes is None:
        rna[:, gene_index] = target
    else:
        row = torch.as_tensor(np.asarray(slopes, np.float32), device=device)
        rna = rna + (target - rna[:, gene_index])[:, None] * row[None]
        rna[:, gene_index] = target  # exact, whatever the round-off
    was_training = network.training
    network.eval()
    try:
        out = network(rna, z.repeat_interleave(v, 0), base.repeat_interleave(v, 0))
    finally:
        network.train(was_training)
    s = out.image.shape[-1]
    return {k: getattr(out, k).float().cpu().reshape(p, v, s, s) for k in ("image", "mask")}


def _tile(image: np.ndarray, mask: np.ndarray, scale: int) -> np.ndarray:
    """The image with the mask's outline in red (RGB uint8), upscaled ``scale`` times by repetition."""
    from rggan.inference import outlined

    return np.repeat(np.repeat(outlined(image, mask), scale, axis=0), scale, axis=1)


def traversal_strip(
    images: Mapping[str, torch.Tensor],
    *,
    title: str,
    row_labels: Sequence[str],
    values: Sequence[float] = DEFAULT_VALUES,
    min_tile: int = 96,
) -> np.ndarray:
    """A labelled strip of :func:`traversal_images`' output: rows are patients, columns the gene's values.

    Args:
        images: ``{"image", "mask"}`` (P, V, S, S) tensors in [-1, 1].
        title: the heading line; row_labels: one per patient.
        values: the gene values of the columns (labelled in SD).
        min_tile: tiles are upscaled by a whole factor to at least this many pixels a side.

    Returns:
        the strip, (H, W, 3) uint8; each tile is the image with the mask's outline in red.
    """
    img, msk = images["image"].numpy(), images["mask"].numpy()
    p, v, s = img.shape[0], img.shape[1], img.shape[-1]
    scale = max(1, -(-min_tile // s))
    tiles = [[_tile(img[i, j], msk[i, j], scale) for j in range(v)] for i in range(p)]
    return tile_grid(tiles, title=title, row_labels=row_labels, col_labels=[f"{val:+g} SD" for val in values])


def traversal_figures(
    network: torch.nn.Module,
    requests: Sequence[Mapping[str, Any]],
    gene_names: Sequence[str],
    effect: pd.DataFrame,
    output_dir: str | os.PathLike,
    *,
    features: Sequence[str] = ("equivalent_radius_mm", "mean_hu", "std_hu", "irregularity"),
    top_n: int = 2,
    num_patients: int = 4,
    values: Sequence[float] = DEFAULT_VALUES,
    summary_writer: Any | None = None,
    device: str | torch.device | None = None,
    coexpression: Any = None,
) -> list[Path]:
    """Strips of the ``top_n`` genes (largest |effect|) of each feature, written as PNG into ``output_dir``.

    Args:
        requests: one per patient (the first ``num_patients`` distinct patients are used).
        effect: genes x features map (e.g. the synthesis map); only genes in ``gene_names`` are used.
        summary_writer: optional TensorBoard writer; each strip is logged as ``traversal/<feature>/<gene>``.
        coexpression: None or (G, G) co-expression slopes: the gene's row moves the other genes with it.

    Returns:
        the PNG paths, named ``traversal_<feature>_<gene>.png``.
    """
    from PIL import Image

    from rggan.inference import _safe_name

    seen: dict[str, Mapping[str, Any]] = {}
    for r in requests:
        seen.setdefault(str(r.get("patient", len(seen))), r)
    rows = list(seen.items())[:num_patients]
    index = {g: i for i, g in enumerate(gene_names)}
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for feat in features:
        if feat not in effect.columns:
            continue
        col = effect[feat].dropna()
        col = col[[g in index for g in col.index]]
        for gene in col.abs().sort_values(ascending=False).index[:top_n]:
            slopes = None if coexpression is None else np.asarray(coexpression)[index[gene]]
            reqs = [r for _, r in rows]
            imgs = traversal_images(network, reqs, index[gene], values, device=device, slopes=slopes)
            title = f"{feat}: {gene} (effect {float(col[gene]):+.3g} per SD)"
            strip = traversal_strip(imgs, title=title, row_labels=[p for p, _ in rows], values=values)
            path = folder / f"traversal_{_safe_name(feat)}_{_safe_name(gene)}.png"
            Image.fromarray(strip).save(path)
            paths.append(path)
            if summary_writer is not None:
                summary_writer.add_image(f"traversal/{feat}/{gene}", strip, 0, dataformats="HWC")
    return paths
