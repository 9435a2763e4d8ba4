"""Labelled figures drawn with PIL: heatmaps of genes × features tables and grids of image tiles."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rggan.features import FEATURE_UNITS

__all__ = ["font", "diverging_colour", "heatmap_png", "tile_grid"]


def font(size: int) -> Any:
    """PIL's default font at ``size`` points (its fixed-size bitmap font before Pillow 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def diverging_colour(v: float) -> tuple[int, int, int]:
    """Diverging blue-white-red RGB for v in [-1, 1] (clipped); grey for NaN."""
    if not math.isfinite(v):
        return (200, 200, 200)
    v = max(-1.0, min(1.0, v))
    if v >= 0:
        return (255, int(255 * (1 - v)), int(255 * (1 - v)))
    return (int(255 * (1 + v)), int(255 * (1 + v)), 255)


def heatmap_png(
    table: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str,
    scale: str = "column",
    max_rows: int = 40,
    value_fmt: str = "{:+.3g}",
) -> Path:
    """Write a labelled heatmap of ``table`` (rows = genes, columns = features) as PNG.

    Args:
        table: the values; every cell shown is annotated with its value (``value_fmt``).
        path: the PNG file to write.
        title: the heading line.
        scale: ``"column"``: colour = value / max |value| of its column (features have different units);
            ``"none"``: the value itself, clipped to [-1, 1] (e.g. correlations).
        max_rows: the rows with the largest scaled |value| shown, largest first.

    Returns:
        ``path``.
    """
    from PIL import Image, ImageDraw

    t = table.astype(float)
    scaled = t / t.abs().max().replace(0, np.nan) if scale == "column" else t.clip(-1, 1)
    order = scaled.abs().max(axis=1).fillna(-1).sort_values(ascending=False).index[:max_rows]
    t, scaled = t.loc[order], scaled.loc[order]
    regular, small, big = font(13), font(11), font(15)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str, f: Any) -> int:
        box = probe.textbbox((0, 0), text, font=f)
        return box[2] - box[0]

    cell_w = max(72, max(width(value_fmt.format(v), small) for v in np.nan_to_num(t.to_numpy()).ravel()) + 10)
    cell_h = 20
    label_w = max(width(str(g), regular) for g in t.index) + 16
    col_labels = [f"{c} [{FEATURE_UNITS.get(str(c), '')}]" if str(c) in FEATURE_UNITS else str(c) for c in t.columns]
    head_h = max(width(c, regular) for c in col_labels) + 16
    top = 56
    w = label_w + cell_w * t.shape[1] + 20
    h = top + head_h + cell_h * t.shape[0] + 40
    img = Image.new("RGB", (max(w, 420, width(title, big) + 24), h), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill="black", font=big)
    note = "colour: value / max|value| per column" if scale == "column" else "colour: value in [-1, 1]"
    draw.text((10, 30), note + "; blue < 0 < red", fill=(80, 80, 80), font=small)
    for j, label in enumerate(col_labels):  # rotated column labels
        tw = width(label, regular) + 4
        lab = Image.new("RGB", (tw, 18), "white")
        ImageDraw.Draw(lab).text((2, 1), label, fill="black", font=regular)
        lab = lab.rotate(90, expand=True)
        img.paste(lab, (label_w + j * cell_w + (cell_w - lab.width) // 2, top + head_h - lab.height - 4))
    for i, gene in enumerate(t.index):
        y = top + head_h + i * cell_h
        draw.text((8, y + 3), str(gene), fill="black", font=regular)
        for j in range(t.shape[1]):
            x = label_w + j * cell_w
            sv = float(scaled.iloc[i, j])
            draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=diverging_colour(sv), outline=(235, 235, 235))
            v = float(t.iloc[i, j])
            text = value_fmt.format(v) if math.isfinite(v) else "nan"
            colour = "white" if math.isfinite(sv) and abs(sv) > 0.6 else "black"
            draw.text((x + 5, y + 4), text, fill=colour, font=small)
    path = Path(path)
    img.save(path)
    return path


def tile_grid(
    tiles: Sequence[Sequence[np.ndarray]], *, title: str, row_labels: Sequence[str], col_labels: Sequence[str]
) -> np.ndarray:
    """A labelled grid of equal square RGB tiles, on white.

    Args:
        tiles: rows of (side, side, 3) uint8 tiles, all rows the same length.
        title: the heading line.
        row_labels: one label per row (left of it); col_labels: one per column (above it).

    Returns:
        the grid, (H, W, 3) uint8.
    """
    from PIL import Image, ImageDraw

    p = len(tiles)
    v = len(tiles[0]) if p else len(col_labels)
    side = tiles[0][0].shape[0] if p and v else 0
    gap, label_w, top = 4, 90, 48
    regular, big = font(13), font(15)
    canvas = Image.new("RGB", (label_w + v * (side + gap) + gap, top + p * (side + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), title, fill="black", font=big)
    for j, label in enumerate(col_labels):
        draw.text((label_w + j * (side + gap) + side // 2 - 14, top - 18), label, fill="black", font=regular)
    for i in range(p):
        y = top + i * (side + gap)
        draw.text((6, y + side // 2 - 7), str(row_labels[i]), fill="black", font=regular)
        for j in range(v):
            canvas.paste(Image.fromarray(tiles[i][j]), (label_w + j * (side + gap), y))
    return np.asarray(canvas)
