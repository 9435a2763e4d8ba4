"""Fast correlation-via-synthesis map: the genome-wide map at a cost that does not grow with the genes.

The exact map (:func:`rggan.radiogenomic.synthesis.synthesis_map`) generates ``rna ± delta`` for every gene,
patient and latent.  In the generator, rna enters only through the gene encoder ``e = E(rna)`` (size
``embed_dim``), so the map is computed in two parts, per sample ``s`` (patient × latent):

1. **the feature's response to the embedding** ``g_s = d f / d e``: central finite differences of the
   (non-differentiable, thresholded) nodule features along ``K`` orthonormal directions ``U`` of the
   embedding space, ``(f(e_s + h u_k) - f(e_s - h u_k)) / 2h``, so ``g_s ≈ U Uᵀ g_s``: ``2K``
   generations per sample whatever the number of genes (the background part of G is computed once);
2. **the embedding's response to each gene**: the exact encoder difference
   ``Δe_{s,j} = E(rna_s + delta·d_j) - E(rna_s - delta·d_j)`` of every gene (or module) ``j``, with
   ``d_j`` the unit's shift (its indicator, or its co-expression slopes), cheap because the first
   encoder layer is linear (a rank-one shift of its output).

Then ``effect_j = mean_s g_s · Δe_{s,j} / (2 delta)``: the exact map with the generator linearised in
``e`` around each sample (the encoder is not linearised).  ``U`` is the top-``K`` principal directions of
the gene shifts ``Δe`` (so the directions that the genes actually move the embedding along); with
``K = embed_dim`` it is the whole space.  The step ``h`` defaults to the median of ``|Δe| / 2`` over the
pilot samples and units: the half-step the exact map takes for a typical gene, so the finite differences
probe the features at the scale the exact map probes them (floored at 1e-3 of the embedding's RMS norm,
below which float32 round-off dominates).  (The RMS, used before, is dominated by the few
genes that move the embedding most: on a trained demo model it is ~4x the median, and the thresholded
features, std HU and irregularity above all, are not linear over that range; bundle/docs/inference.md.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rggan.errors import InputError
from rggan.features import FEATURE_NAMES, nodule_features
from rggan.intensity import DEFAULT_HU_RANGE
from rggan.radiogenomic.perturbation import (
    check_map_inputs,
    collate_requests,
    mean_sem_frames,
    progress_bar,
    unit_shifts,
)

__all__ = ["embedding_shifts", "shift_directions", "fast_synthesis_map"]


def _encoder_parts(network: torch.nn.Module) -> tuple[torch.nn.Linear, torch.nn.Module]:
    """The first (linear) layer of ``network.gene_encoder`` and the rest of it."""
    enc = getattr(network, "gene_encoder", None)
    if not isinstance(enc, torch.nn.Sequential) or not isinstance(enc[0], torch.nn.Linear):
        raise InputError("the fast map needs a generator whose gene_encoder is a Sequential starting with a Linear")
    if not all(hasattr(network, m) for m in ("embed", "synthesise", "encode_background")):
        raise InputError("the fast map needs a generator with embed(), synthesise() and encode_background()")
    return enc[0], torch.nn.Sequential(*list(enc)[1:])


def embedding_shifts(network: torch.nn.Module, rna: Tensor, unit_shift: Tensor, delta: float) -> Tensor:
    """Exact embedding differences ``E(rna + delta·d_j) - E(rna - delta·d_j)`` for every unit j.

    ``E`` is the generator's :meth:`~rggan.networks.RGGenerator.embed`: the gene encoder, plus the phenotype
    prior's path when the generator has one.

    Args:
        network: the generator (its ``gene_encoder`` must start with a ``Linear``).
        rna: (B, G) expression vectors.
        unit_shift: (J, G) each unit's shift per unit of delta
            (:func:`rggan.radiogenomic.perturbation.unit_shifts`).
        delta: the shift in normalised units.

    Returns:
        (B, J, E) embedding differences.
    """
    first, rest = _encoder_parts(network)
    pre = first(rna)  # (B, H)
    step = float(delta) * (unit_shift @ first.weight.T)  # (J, H)
    b, j = pre.shape[0], step.shape[0]
    plus = rest((pre[:, None] + step[None]).reshape(b * j, -1))
    minus = rest((pre[:, None] - step[None]).reshape(b * j, -1))
    shifts = (plus - minus).view(b, j, -1)
    projection = getattr(network, "prior_projection", None)
    if projection is not None:  # the phenotype prior's path is linear in rna: its difference is exact
        prior_step = 2.0 * float(delta) * (unit_shift.to(network.prior_weight.dtype) @ network.prior_weight.T)
        shifts = shifts + projection(prior_step.to(shifts.dtype))[None]
    return shifts


def shift_directions(moment: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` principal directions of embedding shifts from their (uncentred) second moment.

    Args:
        moment: (E, E) ``sum_shifts shift shiftᵀ``.
        k: number of directions (clipped to E).

    Returns:
        ``(U, explained)``: (E, k) orthonormal columns, and the fraction of ``sum |shift|²`` they capture.
    """
    evals, evecs = torch.linalg.eigh(moment.to(torch.float64))  # ascending
    k = max(1, min(int(k), moment.shape[0]))
    explained = evals[-k:].sum() / evals.sum().clamp(min=1e-300)
    return evecs[:, -k:].flip(1), explained


def _pilot_directions(
    network: torch.nn.Module,
    rna: Tensor,
    unit_shift: Tensor,
    delta: float,
    *,
    pilot_samples: int,
    directions: int | str,
    step: float | str,
) -> tuple[Tensor, float, dict[str, Any]]:
    """The embedding directions and the finite-difference step, from the gene shifts of pilot samples.

    Args:
        rna: (N, G) expression vectors of all samples; ``pilot_samples`` evenly spaced ones are used.
        unit_shift: (J, G) each unit's shift per unit of delta.
        directions, step: as :func:`fast_synthesis_map`.

    Returns:
        ``(basis, h, info)``: (E, K) orthonormal directions in ``rna``'s dtype, the step, and
        ``{"directions", "embed_dim", "explained_shift_energy", "pilot_samples"}``.
    """
    n_req = rna.shape[0]
    pilot = torch.linspace(0, n_req - 1, min(n_req, max(1, int(pilot_samples))), device=rna.device).round().long()
    embed_dim = int(network.embed(rna[:1]).shape[1])
    k = embed_dim if str(directions) == "all" else int(directions)
    if k < 1:
        raise InputError(f"directions must be >= 1 or 'all', got {directions}")
    moment = torch.zeros(embed_dim, embed_dim, dtype=torch.float64, device=rna.device)
    norms = []
    for chunk in pilot.split(8):  # a few samples at a time: (samples, units, hidden) can be large
        d = embedding_shifts(network, rna[chunk], unit_shift, delta).reshape(-1, embed_dim).to(torch.float64)
        moment += d.T @ d
        norms.append(torch.linalg.vector_norm(d, dim=1))
    basis, explained = shift_directions(moment, k)
    if str(step) == "auto":
        # floor: a step below 1e-3 of the embedding's own size drowns in float32 round-off of e + h u
        e_rms = float(network.embed(rna[pilot]).square().sum(1).mean().sqrt())
        h = max(float(torch.cat(norms).median()) / 2, 1e-3 * e_rms)
    else:
        h = float(step)
    if not h > 0:
        raise InputError(f"the embedding step must be > 0, got {h} (do the genes move the embedding?)")
    info = {
        "directions": int(basis.shape[1]),
        "embed_dim": embed_dim,
        "explained_shift_energy": float(explained),
        "pilot_samples": int(pilot.numel()),
    }
    return basis.to(rna.dtype), h, info


def _linearised_effects(
    network: torch.nn.Module,
    inputs: tuple[Tensor, Tensor, Tensor, Tensor],
    basis: Tensor,
    h: float,
    unit_shift: Tensor,
    delta: float,
    feature_kwargs: Mapping[str, Any],
) -> tuple[Tensor, Tensor]:
    """Each unit's effect on each sample of a batch, with G linearised in the embedding.

    Args:
        inputs: ``(rna, z, base, spacing)`` of the batch's b samples.
        basis: (E, K) embedding directions; h: the step along them.
        feature_kwargs: keyword arguments of :func:`rggan.features.nodule_features`.

    Returns:
        ``(contrib, ok)``: (b, J, F) float64 effects (0 where invalid) and (b, F) validity.
    """
    rna, z, base, spacing = inputs
    b, k = rna.shape[0], basis.shape[1]
    offsets = torch.cat([basis.T, -basis.T]) * h  # (2K, E)
    e = network.embed(rna)  # (b, E)
    background = [t.repeat_interleave(2 * k, dim=0) for t in network.encode_background(base)]
    pert = (e[:, None] + offsets[None]).reshape(b * 2 * k, -1)
    out = network.synthesise(pert, z.repeat_interleave(2 * k, 0), base.repeat_interleave(2 * k, 0), background)
    f = nodule_features(out.image, out.mask, spacing.repeat_interleave(2 * k, 0), **feature_kwargs)
    vals = torch.stack([f[n] for n in FEATURE_NAMES], dim=1).view(b, 2 * k, len(FEATURE_NAMES))
    slope = (vals[:, :k] - vals[:, k:]) / (2.0 * h)  # (b, K, F): directional derivatives
    ok = torch.isfinite(slope).all(dim=1)  # (b, F)
    grad = torch.einsum("ek,bkf->bef", basis.to(torch.float64), torch.nan_to_num(slope))  # (b, E, F)
    shifts = embedding_shifts(network, rna, unit_shift, delta).to(torch.float64)  # (b, J, E)
    return torch.einsum("bje,bef->bjf", shifts, grad) / (2.0 * delta) * ok[:, None], ok


@torch.no_grad()
def fast_synthesis_map(
    network: torch.nn.Module,
    requests: Sequence[Mapping[str, Any]],
    gene_names: Sequence[str],
    *,
    delta: float = 0.5,
    genes: Sequence[str] | None = None,
    modules: Mapping[str, Sequence[str]] | None = None,
    coexpression: Any = None,
    directions: int | str = 16,
    step: float | str = "auto",
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = False,
    main_component_only: bool = False,
    pilot_samples: int = 64,
    hu_range: Sequence[float] = DEFAULT_HU_RANGE,
) -> dict[str, Any]:
    """The correlation-via-synthesis map linearised in the gene embedding (see the module docstring).

    Args:
        network: an :class:`rggan.networks.RGGenerator` (run in eval mode).
        requests: dicts with ``rna``, ``z``, ``base``, ``spacing`` (as the exact map's).
        gene_names: names of the expression columns.
        delta: the gene shift in normalised (z-score) units, as in the exact map.
        genes: subset of genes (default all); ignored when ``modules`` is given.
        modules: ``{name: [genes]}`` perturbed together.
        coexpression: None or (G, G) co-expression slopes, as the exact map's.
        directions: number K of embedding directions (``"all"``: ``embed_dim``); cost is 2K generations
            per sample.
        step: finite-difference step in the embedding, or ``"auto"`` (the median of ``|Δe| / 2``, at least
            1e-3 of the embedding's RMS norm).
        batch_size: generations per forward pass.
        pilot_samples: samples whose gene shifts choose the directions and the step (evenly spaced).
        hu_range: the prepared dataset's HU window (:func:`rggan.intensity.hu_range_of`), as in the exact map.

    Returns:
        ``{"effect", "sem", "n"}`` DataFrames (units × features) as the exact map, and ``"info"``: a dict
        with the directions, the step, the fraction of the shifts' energy the directions capture and the
        number of generations.
    """
    names, unit_idx = check_map_inputs(requests, gene_names, delta, genes, modules)
    device = device or next(network.parameters()).device
    _encoder_parts(network)
    was_training = network.training
    network.eval()
    rna, z, base, spacing = collate_requests(requests, len(gene_names), device)
    n_req, n_units, n_feat = rna.shape[0], len(names), len(FEATURE_NAMES)
    unit_shift = unit_shifts(unit_idx, rna.shape[1], coexpression, device)
    feature_kwargs = {"main_component_only": main_component_only, "hu_range": hu_range}
    try:
        basis, h, pilot = _pilot_directions(
            network, rna, unit_shift, delta, pilot_samples=pilot_samples, directions=directions, step=step
        )
        k = basis.shape[1]
        per_batch = max(1, int(batch_size) // (2 * k))
        s1 = torch.zeros(n_units, n_feat, dtype=torch.float64, device=device)
        s2 = torch.zeros_like(s1)
        cnt = torch.zeros(n_feat, dtype=torch.float64, device=device)
        desc = f"fast synthesis map ({n_units} units x {n_req} samples, {2 * k} generations/sample)"
        for s in progress_bar(range(0, n_req, per_batch), progress, desc=desc, unit="batch"):
            idx = torch.arange(s, min(s + per_batch, n_req), device=device)
            batch = (rna[idx], z[idx], base[idx], spacing[idx])
            contrib, ok = _linearised_effects(network, batch, basis, h, unit_shift, delta, feature_kwargs)
            s1 += contrib.sum(0)
            s2 += contrib.square().sum(0)
            cnt += ok.sum(0)
    finally:
        network.train(was_training)
    info = {
        "method": "fast",
        "directions": pilot["directions"],
        "embed_dim": pilot["embed_dim"],
        "step": h,
        "explained_shift_energy": pilot["explained_shift_energy"],
        "generations": int(n_req * 2 * k),
        "pilot_samples": pilot["pilot_samples"],
    }
    return {**mean_sem_frames(s1, s2, cnt.expand(n_units, n_feat), names), "info": info}
