"""What both correlation-via-synthesis maps share: perturbation units, batched requests, effect tables.

A *unit* is what one row of a map perturbs: one gene, or a module of genes shifted together. A *request*
is one generation input (a patient and a latent), as built by :func:`rggan.inference.build_inputs`.

A unit's *shift* is the vector added to the expression per unit of ``delta``. With the ``"gene"``
perturbation it is the gene's indicator (the gene alone moves, every other gene held fixed). With the
``"coexpression"`` perturbation (:func:`coexpression_slopes`) a gene carries its co-expressed genes
with it, by their least-squares slopes on it over the cohort: the generator is asked what a patient
whose gene is 1 SD higher looks like, the rest of the transcriptome moving as it does in the data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from rggan.errors import InputError
from rggan.features import FEATURE_NAMES

__all__ = [
    "PERTURBATIONS",
    "check_perturbation",
    "perturbation_units",
    "check_map_inputs",
    "coexpression_slopes",
    "unit_shifts",
    "collate_requests",
    "mean_sem_frames",
    "progress_bar",
]

#: how a map moves the expression for a gene: the gene alone, or the gene with its co-expressed genes
PERTURBATIONS: tuple[str, ...] = ("coexpression", "gene")

logger = logging.getLogger("rggan.radiogenomic_map")


def check_perturbation(perturbation: str, option: str = "perturbation") -> str:
    """``perturbation`` if it is one of :data:`PERTURBATIONS`, else an InputError naming ``option``."""
    if perturbation not in PERTURBATIONS:
        raise InputError(f"{option} must be one of {', '.join(PERTURBATIONS)}, got {perturbation!r}")
    return perturbation


def perturbation_units(
    gene_names: Sequence[str], genes: Sequence[str] | None, modules: Mapping[str, Sequence[str]] | None
) -> tuple[list[str], list[list[int]]]:
    """Names and gene-column lists of the perturbation units (genes, or modules of genes).

    Args:
        gene_names: the model's expression columns.
        genes: genes to perturb one by one (default: all; a single string is one gene); ignored with ``modules``.
        modules: ``{name: [genes]}``; genes the model does not know are dropped, as are modules left empty.

    Returns:
        ``(names, columns)``: one name and one list of gene columns per unit.
    """
    index = {g: i for i, g in enumerate(gene_names)}
    if isinstance(genes, str):  # a single gene from the command line
        genes = [genes]
    if modules:
        names, idx = [], []
        for name, members in modules.items():
            cols = [index[g] for g in members if g in index]
            if cols:
                names.append(str(name))
                idx.append(cols)
            else:
                logger.warning("module %s has no gene of the model; skipped", name)
        if not names:
            raise InputError("no module has a gene of the model")
        return names, idx
    chosen = list(gene_names) if genes is None else [str(g) for g in genes]
    unknown = [g for g in chosen if g not in index]
    if unknown:
        raise InputError(f"{len(unknown)} genes are not model genes: {', '.join(unknown[:20])}")
    return chosen, [[index[g]] for g in chosen]


def check_map_inputs(
    requests: Sequence[Mapping[str, Any]],
    gene_names: Sequence[str],
    delta: float,
    genes: Sequence[str] | None,
    modules: Mapping[str, Sequence[str]] | None,
) -> tuple[list[str], list[list[int]]]:
    """Validate a map's arguments (both map methods).

    Returns:
        the unit names and their gene columns (:func:`perturbation_units`).
    """
    if delta <= 0:
        raise InputError(f"delta must be > 0, got {delta}")
    if not requests:
        raise InputError("no patient to compute the synthesis map on")
    return perturbation_units(gene_names, genes, modules)


def coexpression_slopes(expression: np.ndarray | pd.DataFrame) -> np.ndarray:
    """Least-squares slope of every gene on every gene over the patients: ``B[g, j] = cov(g, j) / var(g)``.

    Row ``g`` is the expected change of the whole expression vector per unit change of gene g in this
    cohort (``B[g, g] = 1``), so ``rna + delta * B[g]`` moves gene g by ``delta`` and its co-expressed
    genes by what the data predict for them. A gene without variance moves alone.

    Args:
        expression: patients × genes, normalised as the generator reads it (at least 3 patients).

    Returns:
        (G, G) float32 slopes.
    """
    x = np.asarray(expression, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise InputError(f"co-expression slopes need a patients x genes table of >= 3 patients, got {x.shape}")
    xc = x - x.mean(0)
    cov = xc.T @ xc / (x.shape[0] - 1)
    var = np.diag(cov).copy()
    ok = var > 1e-12 * max(float(var.max()), 1e-300)
    slopes = np.where(ok[:, None], cov / np.where(ok, var, 1.0)[:, None], 0.0)
    np.fill_diagonal(slopes, 1.0)
    return slopes.astype(np.float32)


def unit_shifts(
    unit_idx: Sequence[Sequence[int]],
    num_genes: int,
    coexpression: np.ndarray | torch.Tensor | None,
    device: str | torch.device,
) -> torch.Tensor:
    """Each unit's expression shift per unit of ``delta``.

    Args:
        unit_idx: the gene columns of each unit (:func:`perturbation_units`).
        num_genes: G, the expression vector's length.
        coexpression: None (each unit's genes move by 1, the others stay) or (G, G) slopes
            (:func:`coexpression_slopes`): a single-gene unit g moves by row g.
        device: where the shifts live.

    Returns:
        (J, G) float32 shifts.
    """
    if coexpression is None:
        shift = torch.zeros(len(unit_idx), num_genes, device=device)
        for u, cols in enumerate(unit_idx):
            shift[u, list(cols)] = 1.0
        return shift
    if any(len(cols) != 1 for cols in unit_idx):
        raise InputError("the co-expression perturbation moves single genes; perturb modules with perturbation: gene")
    slopes = torch.as_tensor(coexpression, dtype=torch.float32, device=device)
    if slopes.shape != (num_genes, num_genes):
        raise InputError(f"co-expression slopes of shape {tuple(slopes.shape)}, expected ({num_genes}, {num_genes})")
    return slopes[torch.tensor([cols[0] for cols in unit_idx], device=device)]


def collate_requests(
    requests: Sequence[Mapping[str, Any]], num_genes: int, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the request dicts into batches on ``device``.

    Returns:
        ``(rna, z, base, spacing)``; spacing in float64, checked positive on the host.
    """
    rna = torch.as_tensor(np.stack([np.asarray(r["rna"], np.float32) for r in requests])).to(device)
    if rna.shape[1] != num_genes:
        raise InputError(f"the expression vectors have {rna.shape[1]} genes, gene_names {num_genes}")
    z = torch.as_tensor(np.stack([np.asarray(r["z"], np.float32) for r in requests])).to(device)
    base = torch.as_tensor(np.stack([np.asarray(r["base"], np.float32) for r in requests])).to(device)
    spacing_np = np.stack([np.asarray(r["spacing"], np.float64) for r in requests])
    if not (spacing_np > 0).all():  # on the host, once: a clear error, not a device-side assert in a batch
        raise InputError("every request's spacing must be positive")
    spacing = torch.as_tensor(spacing_np).to(device)
    return rna, z, base, spacing


def mean_sem_frames(
    s1: torch.Tensor, s2: torch.Tensor, cnt: torch.Tensor, names: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """Effect tables from per-unit sums, sums of squares and counts of valid pairs.

    Returns:
        ``{"effect", "sem", "n"}`` DataFrames (units × features); NaN where a cell has too few pairs.
    """
    mean = torch.where(cnt > 0, s1 / cnt.clamp(min=1), torch.full_like(s1, float("nan")))
    var = torch.where(
        cnt > 1, (s2 - cnt * mean.nan_to_num() ** 2) / (cnt - 1).clamp(min=1), torch.full_like(s1, float("nan"))
    )
    sem = (var.clamp(min=0) / cnt.clamp(min=1)).sqrt()

    def frame(t: torch.Tensor) -> pd.DataFrame:
        return pd.DataFrame(t.cpu().numpy(), index=pd.Index(names, name="gene"), columns=list(FEATURE_NAMES))

    return {"effect": frame(mean), "sem": frame(sem), "n": frame(cnt)}


def progress_bar(iterable: Iterable, enabled: bool, **kwargs: Any) -> Iterable:
    """``iterable`` wrapped in a tqdm bar (keyword arguments passed on) when ``enabled``, else itself."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
