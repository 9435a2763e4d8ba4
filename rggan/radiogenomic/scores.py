"""Scores of radiogenomic maps: against the planted demo truth, and of maps against each other."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rggan.errors import InputError
from rggan.radiogenomic.correlation import spearman
from rggan.radiogenomic.truth import PHENOTYPE_FEATURES, expected_associations, phenotype_scales, planted_effects

__all__ = ["main_driver_agreement", "score_against_truth", "map_agreement", "summarise_scores"]


def main_driver_agreement(
    measured: pd.DataFrame, truth: Mapping[str, Any], *, feature_scale: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Spearman over the planted (driver, phenotype) pairs of standardised planted vs measured effects.

    For every driver d of every phenotype p (main feature f = ``PHENOTYPE_FEATURES[p][0]``): planted
    = effect(d, p) / SD(p) over the truth's patients; measured = map[d, f] / ``feature_scale[f]``
    (e.g. the real feature's SD; default 1, right for correlation maps). One correlation over all pairs:
    it rewards the right sign and the right relative strength of the main drivers, and has no tie ceiling.

    Args:
        measured: genes × features map; truth: the demo truth.
        feature_scale: ``{feature: scale}`` the map's values are divided by (default 1).

    Returns:
        ``{"spearman", "sign_accuracy", "n_pairs", "pairs": [{phenotype, feature, gene, planted_std,
        measured_std}]}``.
    """
    scales = phenotype_scales(truth)
    rows = []
    for phen, feats in PHENOTYPE_FEATURES.items():
        spec = truth["phenotypes"].get(phen)
        if spec is None:
            continue
        f = feats[0]
        fs = float((feature_scale or {}).get(f, 1.0)) or 1.0
        for d in spec.get("drivers", []):
            if d["gene"] in measured.index:
                rows.append(
                    {
                        "phenotype": phen,
                        "feature": f,
                        "gene": d["gene"],
                        "planted_std": float(d["effect"]) / scales[phen],
                        "measured_std": float(measured.loc[d["gene"], f]) / fs,
                    }
                )
    a = np.array([r["planted_std"] for r in rows])
    b = np.array([r["measured_std"] for r in rows])
    return {
        "spearman": spearman(a, b) if len(rows) else float("nan"),
        "sign_accuracy": float(np.mean(np.sign(a) == np.sign(b))) if len(rows) else float("nan"),
        "n_pairs": len(rows),
        "pairs": rows,
    }


def score_against_truth(
    measured: pd.DataFrame,
    truth: Mapping[str, Any],
    *,
    expression: pd.DataFrame | None = None,
    top_k: int | None = None,
) -> pd.DataFrame:
    """Score a genes × features map against the planted effects, per phenotype <-> feature pairing.

    Columns of the result (one row per (phenotype, feature) of :data:`PHENOTYPE_FEATURES`):

    * ``topk_precision``: fraction of the k genes with the largest ``|measured|`` that are drivers of
      this phenotype (k = ``top_k`` or the number of its drivers);
    * ``sign_accuracy``: fraction of this phenotype's drivers whose measured sign is the planted sign;
    * ``spearman_expected`` (needs ``expression``, patients × genes): Spearman correlation over all
      genes of the map between the measured value and the association expected from the planted
      drivers and the co-expression (:func:`expected_associations`);
    * ``spearman_drivers``: Spearman correlation, over all planted driver genes (of every phenotype)
      present in the map, between the planted effect on this phenotype (0 for the other phenotypes'
      drivers) and the measured value. The tied zeros cap it: with 2 drivers of opposite sign among 8
      and non-zero measured values elsewhere its maximum is 0.764;
    * ``n_drivers``: drivers of this phenotype present in the map; ``drivers``: their values.

    Args:
        measured: genes × features map; truth: the demo truth.
        expression: patients × genes, for ``spearman_expected`` (left out without it).
        top_k: k of ``topk_precision`` (default: the phenotype's number of drivers).

    Returns:
        the table, one row per pairing.
    """
    genes = list(measured.index)
    planted = planted_effects(truth, genes)
    all_drivers = [g for g in genes if (planted.loc[g] != 0).any()]
    expected = None
    if expression is not None:
        common = [g for g in genes if g in expression.columns]
        expected = expected_associations(truth, expression[common]).reindex(genes)
    rows = []
    for phen, feats in PHENOTYPE_FEATURES.items():
        if phen not in planted.columns:
            continue
        p = planted[phen]
        drivers = [g for g in genes if p[g] != 0]
        for feat in feats:
            m = measured[feat]
            k = int(top_k) if top_k else len(drivers)
            top = m.abs().sort_values(ascending=False, na_position="last").index[:k]
            row = {
                "phenotype": phen,
                "feature": feat,
                "n_drivers": len(drivers),
                "topk_precision": float(np.mean([g in drivers for g in top])) if k else float("nan"),
                "sign_accuracy": float(np.mean([np.sign(m[g]) == np.sign(p[g]) for g in drivers]))
                if drivers
                else float("nan"),
            }
            if expected is not None:
                row["spearman_expected"] = spearman(expected[phen].to_numpy(), m.to_numpy())
            row["spearman_drivers"] = spearman(p[all_drivers].to_numpy(), m[all_drivers].to_numpy())
            row["drivers"] = ", ".join(f"{g} planted {p[g]:+.3g} measured {m[g]:+.3g}" for g in drivers)
            rows.append(row)
    return pd.DataFrame(rows)


def map_agreement(tables: Sequence[pd.DataFrame]) -> dict[str, Any]:
    """Pairwise agreement of genes × features maps (e.g. of several training seeds on the same data).

    Each column is divided by its standard deviation over the genes (features have different units), the
    common genes × features cells are flattened, and every pair of maps is compared by the Spearman
    correlation of the flattened values; per-column Spearman correlations are reported as well.

    Returns:
        ``{"pairs": [{"a", "b", "spearman", "per_feature": {...}}], "min_spearman", "mean_spearman"}``.
    """
    if len(tables) < 2:
        raise InputError("map agreement needs at least two maps")
    genes = sorted(set.intersection(*(set(t.index) for t in tables)))
    cols = [c for c in tables[0].columns if all(c in t.columns for t in tables)]
    std = [t.loc[genes, cols].astype(float) / t.loc[genes, cols].astype(float).std().replace(0, np.nan) for t in tables]
    pairs = []
    for i in range(len(std)):
        for j in range(i + 1, len(std)):
            pairs.append(
                {
                    "a": i,
                    "b": j,
                    "spearman": spearman(std[i].to_numpy().ravel(), std[j].to_numpy().ravel()),
                    "per_feature": {c: spearman(std[i][c].to_numpy(), std[j][c].to_numpy()) for c in cols},
                }
            )
    rhos = [p["spearman"] for p in pairs]
    return {
        "genes": len(genes),
        "pairs": pairs,
        "min_spearman": float(np.nanmin(rhos)),
        "mean_spearman": float(np.nanmean(rhos)),
    }


def summarise_scores(scores: pd.DataFrame) -> dict[str, float]:
    """Summary of :func:`score_against_truth`'s table.

    Returns:
        ``{"mean_<score>": mean over the main pairing of each phenotype}`` (its first feature in
        :data:`PHENOTYPE_FEATURES`).
    """
    main = scores[[PHENOTYPE_FEATURES[p][0] == f for p, f in zip(scores.phenotype, scores.feature)]]
    cols = [c for c in ("spearman_expected", "topk_precision", "sign_accuracy", "spearman_drivers") if c in main]
    return {f"mean_{c}": float(main[c].mean()) for c in cols}
