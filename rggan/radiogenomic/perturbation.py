"""What both correlation-via-synthesis maps share: perturbation units, batched requests, effect tables.

A *unit* is what one row of a map perturbs: one gene, or a module of genes shifted together. A *request*
is one generation input (a patient and a latent), as built by :func:`rggan.inference.build_inputs`.
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

__all__ = ["perturbation_units", "check_map_inputs", "collate_requests", "mean_sem_frames", "progress_bar"]

logger = logging.getLogger("rggan.radiogenomic_map")


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
