"""The planted truth of the demo data (``demo_truth.json``, written by ``rggan demo-data``).

Finding and reading the file, and what follows from it: the planted gene -> phenotype effects, the
associations they imply through co-expression, and each phenotype's scale. :data:`PHENOTYPE_FEATURES`
pairs each planted phenotype with the nodule features that measure it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rggan.errors import InputError

__all__ = [
    "PHENOTYPE_FEATURES",
    "find_truth",
    "resolve_truth",
    "load_truth",
    "planted_effects",
    "expected_associations",
    "phenotype_scales",
]

#: demo phenotype -> features that measure it (the first one is the main pairing)
PHENOTYPE_FEATURES: dict[str, tuple[str, ...]] = {
    "radius_mm": ("equivalent_radius_mm", "area_mm2"),
    "mean_hu": ("mean_hu",),
    "texture_hu": ("std_hu",),
    "irregularity": ("irregularity",),
}


def find_truth(dataset_dir: str | os.PathLike | None) -> Path | None:
    """Find ``demo_truth.json`` for a prepared folder.

    Args:
        dataset_dir: the prepared folder; its ``report.json`` names the raw demo download it was made from.

    Returns:
        the first file found in the raw download, the prepared folder or its parent; None if none.
    """
    if dataset_dir is None:
        return None
    folder = Path(dataset_dir)
    candidates = [folder / "demo_truth.json", folder.parent / "demo_truth.json"]
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        if report.get("input"):
            candidates.insert(0, Path(report["input"]) / "demo_truth.json")
    except (OSError, ValueError, AttributeError):
        pass
    return next((c for c in candidates if c.is_file()), None)


def resolve_truth(truth_file: Any, dataset_dir: str | os.PathLike | None) -> Path | None:
    """The demo truth file a run asks for.

    Args:
        truth_file: ``"auto"`` (:func:`find_truth`), None / "none" / "null" / "false" / "" (no truth), or a path.
        dataset_dir: the prepared folder, for ``"auto"``.

    Returns:
        the path (a given one must exist), or None.
    """
    if truth_file is None or str(truth_file).strip().lower() in ("", "none", "null", "false"):
        return None
    if str(truth_file) == "auto":
        return find_truth(dataset_dir)
    path = Path(truth_file)
    if not path.is_file():
        raise InputError(f"demo truth file {path} not found (pass --truth_file auto, a path, or null)")
    return path


def load_truth(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``demo_truth.json``.

    Returns:
        the truth dict (format ``rggan-demo-truth``, with ``phenotypes``); a clear error for another file.
    """
    try:
        truth = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the demo truth {path}: {exc}") from exc
    if not isinstance(truth, dict) or truth.get("format") != "rggan-demo-truth" or "phenotypes" not in truth:
        raise InputError(f"{path} is not a demo truth file (rggan demo-data writes demo_truth.json)")
    return truth


def planted_effects(truth: Mapping[str, Any], genes: Sequence[str]) -> pd.DataFrame:
    """The planted effects as a table.

    Args:
        truth: the demo truth; genes: the rows.

    Returns:
        genes × phenotypes, in phenotype units per SD of log2 expression (0 for non-drivers).
    """
    phen = list(truth["phenotypes"])
    out = pd.DataFrame(0.0, index=pd.Index(list(genes), name="gene"), columns=phen)
    for name, spec in truth["phenotypes"].items():
        for d in spec.get("drivers", []):
            if d["gene"] in out.index:
                out.loc[d["gene"], name] = float(d["effect"])
    return out


def expected_associations(truth: Mapping[str, Any], expression: pd.DataFrame) -> pd.DataFrame:
    """genes × phenotypes association implied by the planted drivers and the genes' co-expression.

    ``expected[g, p] = sum_d effect(d, p) * corr(g, d)`` over the drivers d of phenotype p, with the
    Pearson correlation of the (normalised) expression across the patients of ``expression``. It is the
    change of p expected per +1 SD of gene g when g carries its co-expressed drivers with it, so it is
    non-zero for the drivers' module partners too, and has no ties (unlike the sparse planted vector).

    Args:
        truth: the demo truth; expression: patients × genes (the genes are the rows of the result).

    Returns:
        genes × phenotypes.
    """
    genes = list(expression.columns)
    x = expression.to_numpy(np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    corr = x.T @ x / max(1, x.shape[0])
    index = {g: i for i, g in enumerate(genes)}
    out = pd.DataFrame(0.0, index=pd.Index(genes, name="gene"), columns=list(truth["phenotypes"]))
    for name, spec in truth["phenotypes"].items():
        for d in spec.get("drivers", []):
            if d["gene"] in index:
                out[name] += float(d["effect"]) * corr[:, index[d["gene"]]]
    return out


def phenotype_scales(truth: Mapping[str, Any]) -> dict[str, float]:
    """The scale of each planted phenotype.

    Returns:
        ``{phenotype: SD over the truth's patients}`` (fallback: a quarter of its range, or 1).
    """
    out = {}
    for name, spec in truth["phenotypes"].items():
        vals = [
            float(p["phenotypes"][name])
            for p in (truth.get("patients") or {}).values()
            if isinstance(p, Mapping) and name in (p.get("phenotypes") or {})
        ]
        sd = float(np.std(vals)) if len(vals) > 2 else 0.0
        if not sd > 0:
            rng = spec.get("range")
            sd = (float(rng[1]) - float(rng[0])) / 4.0 if rng else 1.0
        out[name] = sd
    return out
