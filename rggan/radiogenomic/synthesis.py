"""Correlation via synthesis, exact: every gene (or module) shifted by ``±delta`` and the nodules measured.

For each unit, its normalised (z-scored) value is shifted by ``+delta`` and ``-delta`` for every request
(patient × latent), with the latent ``z`` and the background patch fixed; both nodules are synthesised
and measured (:mod:`rggan.features`), and ``effect = (feature(+delta) - feature(-delta)) / (2 delta)``
is averaged over patients and latents (central finite differences; no gradients). Units: feature unit
per 1 SD of the gene's (log2) expression. Pairs where either nodule has an empty mask are left out.
With ``coexpression`` slopes a gene carries its co-expressed genes with it
(:mod:`rggan.radiogenomic.perturbation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from rggan.features import FEATURE_NAMES, nodule_features
from rggan.intensity import DEFAULT_HU_RANGE
from rggan.radiogenomic.perturbation import (
    check_map_inputs,
    collate_requests,
    mean_sem_frames,
    progress_bar,
    unit_shifts,
)

__all__ = ["synthesis_map"]


class _EffectSums:
    """Running sums of the finite-difference effects, per unit and per (unit, patient), on the device."""

    def __init__(self, n_units: int, n_patients: int, n_features: int, device: str | torch.device) -> None:
        self.shape = (n_units, n_patients, n_features)
        self.p1 = torch.zeros(n_units * n_patients, n_features, dtype=torch.float64, device=device)
        self.pc = torch.zeros_like(self.p1)
        self.s1 = torch.zeros(n_units, n_features, dtype=torch.float64, device=device)
        self.s2 = torch.zeros_like(self.s1)
        self.cnt = torch.zeros_like(self.s1)

    def add(self, unit: torch.Tensor, cell: torch.Tensor, eff: torch.Tensor) -> None:
        """Add a batch of effects (B, F) of units ``unit`` (B,) and (unit, patient) cells ``cell`` (B,)."""
        ok = torch.isfinite(eff)
        eff0 = torch.where(ok, eff, torch.zeros_like(eff))
        self.s1.index_add_(0, unit, eff0)
        self.s2.index_add_(0, unit, eff0**2)
        self.cnt.index_add_(0, unit, ok.to(torch.float64))
        self.p1.index_add_(0, cell, eff0)
        self.pc.index_add_(0, cell, ok.to(torch.float64))

    def result(self, names: Sequence[str], patients: list[str]) -> dict[str, Any]:
        """The map's tables and the per-patient means (see :func:`synthesis_map`)."""
        per_patient = torch.where(self.pc > 0, self.p1 / self.pc.clamp(min=1), torch.full_like(self.p1, float("nan")))
        return {
            **mean_sem_frames(self.s1, self.s2, self.cnt, names),
            "per_patient": per_patient.view(*self.shape).cpu(),
            "patients": patients,
        }


def _central_differences(
    network: torch.nn.Module,
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    shift: torch.Tensor,
    delta: float,
    main_component_only: bool,
    hu_range: Sequence[float],
    background: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``(f(rna + shift) - f(rna - shift)) / (2 delta)`` of every feature, for a batch of B requests.

    Args:
        inputs: ``(rna, z, base, spacing)`` of the batch.
        shift: (B, G) the shift of each row.
        background: ``network.encode_background(cat([base, base]))`` when the network has one (it does
            not depend on the genes, so one encoding serves every unit); None runs ``network`` whole.

    Returns:
        (B, F) effects, in :data:`rggan.features.FEATURE_NAMES` order (NaN where a mask is empty).
    """
    rna, z, base, spacing = inputs
    pair = (torch.cat([rna + shift, rna - shift]), torch.cat([z, z]), torch.cat([base, base]))
    if background is None:
        out = network(*pair)
    else:
        out = network.synthesise(network.embed(pair[0]), pair[1], pair[2], background)
    sp = torch.cat([spacing, spacing])
    f = nodule_features(out.image, out.mask, sp, main_component_only=main_component_only, hu_range=hu_range)
    vals = torch.stack([f[k] for k in FEATURE_NAMES], dim=1)  # (2b, F)
    b = rna.shape[0]
    return (vals[:b] - vals[b:]) / (2.0 * delta)


@torch.no_grad()
def synthesis_map(
    network: torch.nn.Module,
    requests: Sequence[Mapping[str, Any]],
    gene_names: Sequence[str],
    *,
    delta: float = 0.5,
    genes: Sequence[str] | None = None,
    modules: Mapping[str, Sequence[str]] | None = None,
    coexpression: Any = None,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = False,
    main_component_only: bool = False,
    hu_range: Sequence[float] = DEFAULT_HU_RANGE,
) -> dict[str, pd.DataFrame]:
    """Correlation via synthesis: the genes (or modules) × features table of finite-difference effects.

    Args:
        network: the generator ``G(rna, z, base)`` (run in eval mode).
        requests: dicts with ``rna`` (G,), ``z`` (L,), ``base`` (1,S,S), ``spacing`` (2,) — e.g.
            :func:`rggan.inference.build_inputs` (one per patient and latent).
        gene_names: names of the G expression columns (the gene transform's genes).
        delta: the shift, in normalised (z-score) units; each unit is evaluated at ``rna ± delta``.
        genes: subset of genes to perturb (default: all); ignored when ``modules`` is given.
        modules: ``{name: [genes]}``: perturb each module's genes together (by ``delta`` each).
        coexpression: None (each gene moves alone) or (G, G) slopes
            (:func:`rggan.radiogenomic.perturbation.coexpression_slopes`): gene g's shift is ``delta``
            times row g, so its co-expressed genes move with it; genes only, not modules.
        batch_size: generations per forward pass (half ``+delta``, half ``-delta``).
        main_component_only: measure only the generated mask's main connected component
            (:func:`rggan.features.main_component`).
        hu_range: the HU window of the prepared dataset the generator was trained on
            (:func:`rggan.intensity.hu_range_of`): the generated images are turned back into HU with it.

    Returns:
        ``{"effect": DataFrame units × features, "sem": standard error of the mean, "n": valid pairs,
        "per_patient": (units, patients, features) float64 tensor of each patient's mean effect (NaN where
        none of its pairs was valid), "patients": the patient labels of its second axis}``.
    """
    names, unit_idx = check_map_inputs(requests, gene_names, delta, genes, modules)
    device = device or next(network.parameters()).device
    was_training = network.training
    network.eval()
    rna, z, base, spacing = collate_requests(requests, len(gene_names), device)
    n_req, n_units = rna.shape[0], len(names)
    labels = [str(r.get("patient", i)) for i, r in enumerate(requests)]
    patients = list(dict.fromkeys(labels))
    pid = torch.tensor([patients.index(p) for p in labels], device=device)
    shift = float(delta) * unit_shifts(unit_idx, rna.shape[1], coexpression, device)
    sums = _EffectSums(n_units, len(patients), len(FEATURE_NAMES), device)
    # the requests in chunks of about batch_size / 2 (each generated at +delta and -delta): a chunk's
    # backgrounds are encoded once and serve every unit
    half = max(1, int(batch_size) // 2)
    n_chunks = -(-n_req // half)
    chunk = -(-n_req // n_chunks)
    reuse = all(hasattr(network, a) for a in ("gene_encoder", "encode_background", "synthesise"))
    jobs = [(c0, unit) for c0 in range(0, n_req, chunk) for unit in range(n_units)]
    desc = f"synthesis map ({n_units} units x {n_req} samples)"
    current = None
    try:
        for c0, unit in progress_bar(jobs, progress, desc=desc, unit="batch", disable=None):
            if c0 != current:
                current, r = c0, torch.arange(c0, min(c0 + chunk, n_req), device=device)
                batch = (rna[r], z[r], base[r], spacing[r])
                background = network.encode_background(torch.cat([base[r], base[r]])) if reuse else None
            u = torch.full_like(r, unit)
            eff = _central_differences(network, batch, shift[u], delta, main_component_only, hu_range, background)
            sums.add(u, u * len(patients) + pid[r], eff)
    finally:
        network.train(was_training)
    return sums.result(names, patients)
