"""The files of a radiogenomic-map run: CSV tables, top genes, truth scores, heatmaps and the summary.

Every writer takes the (staging) folder to write into; :func:`rggan.radiogenomic.workflow.run_radiogenomic_map`
moves that folder into place once everything is written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from rggan.radiogenomic.scores import summarise_scores
from rggan.visualize import heatmap_png

__all__ = ["top_genes", "write_map_tables", "write_heatmaps", "write_top_genes", "write_truth_scores", "map_summary"]

#: how the synthesis map is computed, for summary.json (the fast map's addition after it)
EXACT_METHOD = (
    "central finite differences of generated-nodule features, (f(x+delta) - f(x-delta)) / (2 delta), "
    "averaged over patients x latents; z and background fixed"
)
FAST_METHOD = (
    "; fast: the generator linearised in the gene embedding (finite differences along the top "
    "principal directions of the genes' embedding shifts, exact encoder differences)"
)


def top_genes(table: pd.DataFrame, k: int = 10) -> dict[str, list[dict[str, Any]]]:
    """The k rows with the largest |value| of each column.

    Args:
        table: genes × features map.
        k: rows per feature.

    Returns:
        ``{feature: [{"rank", "gene", "value"}, ...]}``.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for feat in table.columns:
        col = table[feat].dropna()
        order = col.abs().sort_values(ascending=False).index[:k]
        out[str(feat)] = [{"rank": i + 1, "gene": str(g), "value": float(col[g])} for i, g in enumerate(order)]
    return out


def top_frame(tops: Mapping[str, list[dict[str, Any]]], map_name: str) -> pd.DataFrame:
    """:func:`top_genes`' output as rows ``map, feature, rank, gene, value``."""
    return pd.DataFrame([{"map": map_name, "feature": f, **row} for f, rows in tops.items() for row in rows])


def write_map_tables(
    folder: Path,
    synth: Mapping[str, Any],
    conv: Mapping[str, pd.DataFrame],
    ci: Mapping[str, pd.DataFrame] | None,
) -> None:
    """Write both maps' CSV tables: effects and their SEM and interval, conventional rho, p and q.

    Args:
        folder: where to write.
        synth: the synthesis map (``effect``, ``sem``); conv: the conventional map (``rho``, ``p``, ``q``).
        ci: the bootstrap interval (``lo``, ``hi``), or None.
    """
    synth["effect"].to_csv(folder / "synthesis_map.csv", float_format="%.6g")
    synth["sem"].to_csv(folder / "synthesis_map_sem.csv", float_format="%.6g")
    conv["rho"].to_csv(folder / "conventional_map.csv", float_format="%.6g")
    conv["p"].to_csv(folder / "conventional_map_p.csv", float_format="%.6g")
    conv["q"].to_csv(folder / "conventional_map_q.csv", float_format="%.6g")
    if ci is not None:
        ci["lo"].to_csv(folder / "synthesis_map_ci_lo.csv", float_format="%.6g")
        ci["hi"].to_csv(folder / "synthesis_map_ci_hi.csv", float_format="%.6g")


def write_heatmaps(
    folder: Path, effect: pd.DataFrame, rho: pd.DataFrame, *, unit: str, delta: float, patients: int,
    num_latents: int, max_rows: int,
) -> None:  # fmt: skip
    """Write ``synthesis_map.png`` (colour scaled per feature) and ``conventional_map.png`` (rho).

    Args:
        unit: ``"gene"`` or ``"module"``; delta, patients, num_latents: for the titles.
        max_rows: rows shown in each heatmap.
    """
    heatmap_png(
        effect, folder / "synthesis_map.png", max_rows=max_rows,
        title=f"Correlation via synthesis: d feature / d {unit} (per +1 SD), delta={delta}, "
        f"{patients} patients x {num_latents} latents",
    )  # fmt: skip
    heatmap_png(
        rho, folder / "conventional_map.png", scale="none", max_rows=max_rows, value_fmt="{:+.2f}",
        title=f"Conventional map: Spearman rho (real nodule features vs expression), {patients} patients",
    )  # fmt: skip


def write_top_genes(folder: Path, effect: pd.DataFrame, rho: pd.DataFrame, k: int) -> None:
    """Write ``top_genes.csv`` and ``top_genes.json``: the top ``k`` genes per feature of both maps."""
    tops = {"synthesis": top_genes(effect, k), "conventional": top_genes(rho, k)}
    pd.concat([top_frame(v, name) for name, v in tops.items()]).to_csv(folder / "top_genes.csv", index=False)
    (folder / "top_genes.json").write_text(json.dumps(tops, indent=1, allow_nan=True) + "\n")


def write_truth_scores(
    folder: Path, scores: Mapping[str, pd.DataFrame], main: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Write ``truth_scores.csv`` / ``.json`` (nothing without scores).

    Args:
        scores: ``{map name: score_against_truth table}``; main: ``{map name: main_driver_agreement}``.

    Returns:
        the JSON's content: ``{map name: {"summary", "main_drivers", "pairings"}}``.
    """
    score_json = {
        k: {"summary": summarise_scores(v), "main_drivers": main.get(k), "pairings": v.to_dict(orient="records")}
        for k, v in scores.items()
    }
    if scores:
        pd.concat([v.assign(map=k) for k, v in scores.items()]).to_csv(
            folder / "truth_scores.csv", index=False, float_format="%.4g"
        )
        (folder / "truth_scores.json").write_text(json.dumps(score_json, indent=1) + "\n")
    return score_json


def map_summary(
    *,
    method: str,
    fast_info: Mapping[str, Any] | None,
    units: str,
    n_units: int,
    patients: int,
    run: Mapping[str, Any],
    n_boot: int,
    ci_level: float,
    truth_path: Path | None,
    score_json: Mapping[str, Any],
    start: float,
    settings: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The content of ``summary.json``.

    Args:
        method: ``"exact"`` or ``"fast"``; fast_info: the fast map's ``info``.
        units: ``"gene"`` or ``"module"``; n_units: rows of the map; patients: patients measured.
        run: ``delta, split, num_latents, seed, base_index, main_component_only`` of the run, in this order,
            and ``perturbation`` (``"coexpression"`` or ``"gene"``).
        n_boot, ci_level: the bootstrap settings; truth_path: the demo truth used, if any.
        score_json: :func:`write_truth_scores`' output; start: ``time.perf_counter()`` at the run's start.
        settings: extra entries (e.g. the checkpoint and dataset paths).

    Returns:
        the summary dict.
    """
    return {
        "method": EXACT_METHOD + (FAST_METHOD if method == "fast" else ""),
        "map_method": method,
        "fast_map": fast_info,
        "delta": run["delta"],
        "units": units,
        "n_units": n_units,
        "patients": patients,
        "perturbation": run.get("perturbation", "gene"),
        **{k: run[k] for k in ("split", "num_latents", "seed", "base_index", "main_component_only")},
        "confidence_interval": f"percentile bootstrap over patients, {n_boot} replicates, level {ci_level}"
        if n_boot
        else None,
        "conventional_q": "Benjamini-Hochberg FDR over the genes of each feature (scipy.stats.false_discovery_control)",
        "truth_file": str(truth_path) if truth_path else None,
        "truth_scores": score_json,
        "seconds": round(time.perf_counter() - start, 2),
        **dict(settings or {}),
    }
