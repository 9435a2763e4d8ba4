"""The radiogenomic-map workflow (``bundle/configs/radiogenomic_map.yaml``): both maps of a trained generator.

:func:`run_radiogenomic_map` reads a prepared dataset, computes the synthesis map (exact or fast), its
bootstrap intervals and the conventional map, scores both against the planted demo truth when there is
one, and writes everything into a staging folder that is moved into ``output_dir`` at the end::

    synthesis_map.csv            units x features, effect per +1 SD of the gene (feature units)
    synthesis_map_sem.csv        standard error of each effect over patients x latents
    synthesis_map_ci_lo.csv/_hi  percentile bootstrap confidence interval of each effect (patients resampled)
    synthesis_map.png            heatmap (colour scaled per feature column)
    conventional_map.csv         genes x features Spearman rho of the real nodules' features
    conventional_map_p.csv       the p-values
    conventional_map_q.csv       Benjamini-Hochberg FDR q-values (per feature column)
    traversal/*.png              traversal strips of each feature's top genes (-2..+2 SD), also in
                                 traversal/tensorboard (TensorBoard images)
    conventional_map.png         heatmap
    real_features.csv            the real nodules' features (patients x features)
    top_genes.csv / .json        top_k genes per feature for both maps
    truth_scores.csv / .json     (demo data) both maps scored against the planted effects
    summary.json                 settings, counts, timing and the scores
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rggan.errors import InputError
from rggan.intensity import hu_range_of
from rggan.radiogenomic.bootstrap import bootstrap_ci
from rggan.radiogenomic.conventional import conventional_map, real_features
from rggan.radiogenomic.outputs import (
    map_summary,
    write_heatmaps,
    write_map_tables,
    write_top_genes,
    write_truth_scores,
)
from rggan.radiogenomic.perturbation import check_perturbation, coexpression_slopes, perturbation_units
from rggan.radiogenomic.scores import main_driver_agreement, score_against_truth, summarise_scores
from rggan.radiogenomic.synthesis import synthesis_map
from rggan.radiogenomic.truth import load_truth, resolve_truth

__all__ = ["MapInputs", "read_modules", "load_map_inputs", "map_slopes", "compute_maps", "run_radiogenomic_map"]

logger = logging.getLogger("rggan.radiogenomic_map")


@dataclass
class MapInputs:
    """What the maps are computed from, read from a prepared dataset."""

    gene_names: list[str]
    truth_path: Path | None
    truth: dict[str, Any] | None
    modules: dict[str, list[str]] | None
    requests: list[dict[str, Any]]
    items: list[dict[str, Any]]
    hu_range: Sequence[float]
    real: pd.DataFrame
    expression: pd.DataFrame


def read_modules(modules: Any, truth: Mapping[str, Any] | None) -> dict[str, list[str]] | None:
    """The gene modules to perturb together.

    Args:
        modules: None / False / "" / "None" (genes one by one), a ``{name: [genes]}`` mapping, ``"truth"``
            (the planted modules of the demo truth) or the path of a JSON ``{name: [genes]}`` file.
        truth: the demo truth, if any.

    Returns:
        ``{name: [genes]}`` or None.
    """
    if modules is None or modules is False or str(modules) in ("", "None"):
        return None
    if isinstance(modules, Mapping):
        return {str(k): [str(g) for g in v] for k, v in modules.items()}
    if str(modules) == "truth":
        if truth is None:
            raise InputError("modules: truth needs a demo truth file (truth_file)")
        return {k: list(v) for k, v in truth["modules"].items()}
    try:
        data = json.loads(Path(modules).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the gene modules {modules} (JSON {{module: [genes]}}): {exc}") from exc
    return {str(k): [str(g) for g in v] for k, v in data.items()}


def load_map_inputs(
    dataset_dir: str | os.PathLike, *, genes: Sequence[str] | None, modules: Any, truth_file: Any,
    latent_size: int, image_size: int, split: str, num_latents: int, seed: int, base_index: int | str,
) -> MapInputs:  # fmt: skip
    """Read a prepared dataset: genes, truth, modules, generation requests, real features, expression.

    Args:
        dataset_dir: the prepared folder. Other arguments: see :func:`run_radiogenomic_map`.

    Returns:
        the inputs; the genes / modules are validated before the real nodules are measured.
    """
    from rggan.data.dataset import load_datalist
    from rggan.data.rna import GeneTransform
    from rggan.inference import build_inputs

    folder = Path(dataset_dir)
    gene_names = GeneTransform.load(folder / "gene_transform.json").genes
    truth_path = resolve_truth(truth_file, folder)
    truth = load_truth(truth_path) if truth_path is not None else None
    module_map = read_modules(modules, truth)
    requests = build_inputs(
        folder, num_genes=len(gene_names), image_size=image_size, latent_size=latent_size,
        num_samples=num_latents, seed=seed, split=split, base_index=base_index,
    )  # fmt: skip
    perturbation_units(gene_names, genes, module_map)  # validate before the long part
    items = (
        load_datalist(folder, "training", required=False) + load_datalist(folder, "validation", required=False)
        if split == "all"
        else load_datalist(folder, split)
    )
    hu_range = hu_range_of(folder)  # the window the prepared images (and so G's outputs) were scaled with
    real = real_features(items, hu_range)
    expression = pd.DataFrame(
        np.stack([np.load(it["rna"]).astype(np.float64).reshape(-1) for it in items]),
        index=pd.Index([str(it["patient"]) for it in items], name="patient"),
        columns=gene_names,
    )
    return MapInputs(gene_names, truth_path, truth, module_map, requests, items, hu_range, real, expression)


def map_slopes(data: MapInputs, perturbation: str) -> np.ndarray | None:
    """The co-expression slopes a map perturbs with, or None (each gene alone, or modules).

    Args:
        data: the map's inputs (its ``expression``: the map's patients).
        perturbation: one of :data:`rggan.radiogenomic.perturbation.PERTURBATIONS`.
    """
    if check_perturbation(perturbation) == "gene" or data.modules is not None:
        return None
    return coexpression_slopes(data.expression)


def compute_maps(
    network: torch.nn.Module, data: MapInputs, *, method: str, directions: int | str, delta: float,
    genes: Sequence[str] | None, batch_size: int, device: str | torch.device | None, progress: bool,
    main_component_only: bool, n_boot: int, ci_level: float, seed: int, perturbation: str = "coexpression",
) -> dict[str, Any]:  # fmt: skip
    """Both maps, the synthesis map's bootstrap interval and (with a truth) their scores.

    Args:
        data: :func:`load_map_inputs`' output. Other arguments: see :func:`run_radiogenomic_map`.

    Returns:
        ``{"synth", "ci" (or None), "conv", "scores": {map: table}, "main": {map: main-driver agreement},
        "slopes": the co-expression slopes used (or None)}``.
    """
    if method not in ("exact", "fast"):
        raise InputError(f"method must be 'exact' or 'fast', got {method!r}")
    slopes = map_slopes(data, perturbation)
    map_fn = synthesis_map
    if method == "fast":
        from rggan.radiogenomic.fast import fast_synthesis_map

        map_fn = functools.partial(fast_synthesis_map, directions=directions)
    synth = map_fn(
        network, data.requests, data.gene_names, delta=delta, genes=genes, modules=data.modules,
        coexpression=slopes, batch_size=batch_size, device=device, progress=progress,
        main_component_only=main_component_only, hu_range=data.hu_range,
    )  # fmt: skip
    ci = None
    if n_boot and "per_patient" in synth:  # the exact map (the fast map has no per-patient effects)
        ci = bootstrap_ci(synth["per_patient"], synth["effect"].index, n_boot=n_boot, level=ci_level, seed=seed)
    conv = conventional_map(data.real, data.expression, genes=genes if data.modules is None else None)
    scores: dict[str, pd.DataFrame] = {}
    main: dict[str, Any] = {}
    if data.truth is not None:
        if data.modules is None:
            scores["synthesis"] = score_against_truth(synth["effect"], data.truth, expression=data.expression)
            scale = data.real.std().to_dict()
            main["synthesis"] = main_driver_agreement(synth["effect"], data.truth, feature_scale=scale)
        scores["conventional"] = score_against_truth(conv["rho"], data.truth, expression=data.expression)
        main["conventional"] = main_driver_agreement(conv["rho"], data.truth)
    return {"synth": synth, "ci": ci, "conv": conv, "scores": scores, "main": main, "slopes": slopes}


def write_traversals(
    network: torch.nn.Module,
    requests: Sequence[Mapping[str, Any]],
    gene_names: Sequence[str],
    effect: pd.DataFrame,
    folder: Path,
    **kwargs: Any,
) -> None:
    """Traversal strips (:func:`rggan.traversal.traversal_figures`) as PNG in ``folder`` and in TensorBoard."""
    from tensorboardX import SummaryWriter

    from rggan.traversal import traversal_figures

    writer = SummaryWriter(str(folder / "tensorboard"))
    try:
        traversal_figures(network, requests, gene_names, effect, folder, summary_writer=writer, **kwargs)
    finally:
        writer.close()


def _log_scores(scores: Mapping[str, pd.DataFrame], main: Mapping[str, Any]) -> None:
    """Log each map's scores against the planted effects."""
    for k, v in scores.items():
        logger.info(
            "%s map vs planted effects (main pairings): %s; main-driver Spearman %.3f over %d pairs\n%s",
            k, ", ".join(f"{n} {x:.3f}" for n, x in summarise_scores(v).items()), main[k]["spearman"],
            main[k]["n_pairs"], v.drop(columns=["drivers"]).to_string(index=False),
        )  # fmt: skip


def _write_outputs(
    folder: Path, network: torch.nn.Module, data: MapInputs, maps: Mapping[str, Any], run: Mapping[str, Any], *,
    method: str, top_k: int, heatmap_rows: int, traversal_top_n: int, traversal_patients: int,
    device: str | torch.device | None, n_boot: int, ci_level: float, start: float, settings: Mapping[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """Write every output file into ``folder`` (arguments: see :func:`run_radiogenomic_map`).

    Args:
        run: the run's ``delta, split, num_latents, seed, base_index, main_component_only``.
        start: ``time.perf_counter()`` at the run's start.

    Returns:
        the summary (``summary.json``).
    """
    synth, conv = maps["synth"], maps["conv"]
    write_map_tables(folder, synth, conv, maps["ci"])
    if traversal_top_n and data.modules is None:
        write_traversals(
            network, data.requests, data.gene_names, synth["effect"], folder / "traversal",
            top_n=traversal_top_n, num_patients=traversal_patients, device=device, coexpression=maps.get("slopes"),
        )  # fmt: skip
    data.real.to_csv(folder / "real_features.csv", float_format="%.6g")
    unit = "module" if data.modules else "gene"
    write_heatmaps(
        folder, synth["effect"], conv["rho"], unit=unit, delta=run["delta"], patients=len(data.items),
        num_latents=run["num_latents"], max_rows=heatmap_rows,
    )  # fmt: skip
    write_top_genes(folder, synth["effect"], conv["rho"], top_k)
    score_json = write_truth_scores(folder, maps["scores"], maps["main"])
    summary = map_summary(
        method=method, fast_info=synth.get("info"), units=unit, n_units=int(synth["effect"].shape[0]),
        patients=len(data.items), run=run, n_boot=n_boot, ci_level=ci_level, truth_path=data.truth_path,
        score_json=score_json, start=start, settings=settings,
    )  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def run_radiogenomic_map(
    network: torch.nn.Module,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    latent_size: int,
    image_size: int,
    split: str = "all",
    num_latents: int = 4,
    seed: int = 12345,
    delta: float = 0.5,
    genes: Sequence[str] | None = None,
    modules: Any = None,
    base_index: int | str = 0,
    batch_size: int = 128,
    truth_file: str | os.PathLike | None = "auto",
    top_k: int = 10,
    heatmap_rows: int = 40,
    device: str | torch.device | None = None,
    progress: bool = True,
    main_component_only: bool = False,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    traversal_top_n: int = 2,
    traversal_patients: int = 4,
    method: str = "exact",
    directions: int | str = 8,
    perturbation: str = "coexpression",
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Both maps for a trained generator on a prepared dataset, written to ``output_dir`` (files: module docstring).

    Args:
        method: ``"exact"`` (:func:`rggan.radiogenomic.synthesis.synthesis_map`, 2 generations per gene ×
            sample) or ``"fast"`` (:func:`rggan.radiogenomic.fast.fast_synthesis_map`, linearised in the gene
            embedding: ``2 × directions`` generations per sample whatever the number of genes).
        directions: embedding directions of the fast map (``"all"``: ``embed_dim``).
        perturbation: ``"coexpression"`` (a gene moves with its co-expressed genes, by their slopes on it
            over the map's patients: :func:`rggan.radiogenomic.perturbation.coexpression_slopes`) or
            ``"gene"`` (the gene alone); modules always move alone.
        truth_file: ``"auto"`` (look beside the raw demo download the prepared folder came from),
            a path, or None (no scoring).
        modules: genes perturbed together (:func:`read_modules`); top_k: genes per feature in top_genes.
        n_boot, ci_level: bootstrap replicates and coverage of the per-cell confidence intervals
            (:func:`rggan.radiogenomic.bootstrap.bootstrap_ci`; ``n_boot`` 0: none).
        traversal_top_n, traversal_patients: traversal strips (:mod:`rggan.traversal`) of the top genes of
            each phenotype feature, with this many patients (``traversal_top_n`` 0: none; genes only).
        settings: extra entries of ``summary.json``.
        other arguments: see :func:`rggan.radiogenomic.synthesis.synthesis_map` and
            :func:`rggan.inference.build_inputs`.

    Returns:
        the summary dict (also ``summary.json``).
    """
    from rggan.inference import as_flag, commit_staging, make_staging

    t0 = time.perf_counter()
    check_perturbation(perturbation)  # before the long part
    progress, main_component_only = as_flag(progress), as_flag(main_component_only)  # CLI strings too
    genes = [genes] if isinstance(genes, str) else genes
    data = load_map_inputs(
        dataset_dir, genes=genes, modules=modules, truth_file=truth_file, latent_size=latent_size,
        image_size=image_size, split=split, num_latents=num_latents, seed=seed, base_index=base_index,
    )  # fmt: skip
    maps = compute_maps(
        network, data, method=method, directions=directions, delta=delta, genes=genes, batch_size=batch_size,
        device=device, progress=progress, main_component_only=main_component_only, n_boot=n_boot,
        ci_level=ci_level, seed=seed, perturbation=perturbation,
    )  # fmt: skip
    run = {"delta": delta, "split": split, "num_latents": num_latents, "seed": seed, "base_index": base_index,
           "perturbation": "coexpression" if maps["slopes"] is not None else "gene"}  # fmt: skip
    staging = make_staging(output_dir)
    try:
        summary = _write_outputs(
            staging, network, data, maps, {**run, "main_component_only": main_component_only}, method=method,
            top_k=top_k, heatmap_rows=heatmap_rows, traversal_top_n=traversal_top_n,
            traversal_patients=traversal_patients, device=device, n_boot=n_boot, ci_level=ci_level, start=t0,
            settings=settings,
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit_staging(staging, output_dir)
    logger.info("radiogenomic maps written to %s (%.1f s)", output_dir, summary["seconds"])
    _log_scores(maps["scores"], maps["main"])
    return summary
