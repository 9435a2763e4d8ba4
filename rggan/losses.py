"""RG-GAN least-squares losses (docs/spec.md, section "Losses").

Discriminator targets (every pair is its own D call, so BatchNorm statistics are per pair as the
paper trains; ``e`` is the generator's embedding of the *current* sample, always detached here):

============================== ===== === ===
pair (image, mask, e)           ISC   I   IS
============================== ===== === ===
real  (x, s, e)                  1    1   1
wrong (x_w, s_w, e)              0    1   1
wrong mask (x, s_w, e)           0    1   0
fake  (x_hat, s_hat, e)          0    0   0
============================== ===== === ===

The generator loss runs D **once** on (x_hat, s_hat, e) with ``e`` attached (the encoder learns
through the ISC head), pushes every head to 1, and adds ``c_bg * mean|x_hat * M - base * M|`` with
``M = 1[s_hat < 0]`` (detached), optionally eroded on the device.

``condition="rna"`` (both losses) gives D the patient's expression vector instead of ``e`` (D then
encodes it itself, see :class:`rggan.networks.RGDiscriminator`): the ISC head judges the match
against a condition the generator cannot move, so G can only satisfy it through the image.

Paired terms (off by default, the paper has none): the real nodule of the same patient is known, so
the generator loss can also ask for it (a conditional GAN with a reconstruction term, as pix2pix):

* ``c_rec * (mean|t - s| + mean over the real nodule of |x_hat - x|)``: the mask channel ``t``
  against the real mask ``s`` (size, position and shape) and the image against the real image
  inside the real nodule (its HU). With the generator's ``margin_harmonics``, ``t`` is the mask
  before its lobes (``clean_mask``): lobes turned by z cannot match one real outline, so L1 would
  only flatten them (``c_shape`` asks for their amount);
* ``c_tex * mean|sd(x_hat in t > 0) - sd(x in s > 0)|``: the standard deviation of each image inside its
  own nodule mask (the texture, as the ``std_hu`` feature measures it, margin pixels included), which an
  L1 term alone would smooth away. With ``appearance_moves_mask=False`` this term and the image part of
  ``c_rec`` train the foreground only: through the compositing they would otherwise shrink a nodule to
  raise its SD (a smaller nodule holds more dark margin pixels);
* ``c_size * mean|r(alpha) - r(s > 0)|``: the equivalent radius ``sqrt(area / pi)`` of the generated
  soft mask (``alpha`` summed) against the real mask's, as a fraction of the image side (so the
  coefficient does not depend on ``image_size``): the size as the ``equivalent_radius_mm`` feature
  measures it, which the mask part of ``c_rec`` mixes with position and outline;
* ``c_binary * mean(4 alpha (1 - alpha))``: zero where the generated mask is binary (alpha 0 or 1), 1 where
  alpha is 0.5. The features threshold the mask channel at 0, while ``c_size`` and ``c_shape`` measure the
  soft alpha: on a binary mask the two agree, and no faint halo or frame of alpha is left around the
  nodule. Needs no real nodule.
* ``c_shape * mean|irr(alpha) - irr(s)|``: the margin irregularity ``1 - 4 pi area / perimeter^2`` of
  the generated mask against the real mask's, inside a 3-pixel band around the real nodule, since the
  exact lobes of a real margin are not predictable from genes and an L1 term alone would round every
  margin. The generated margin is measured by the total variation of the soft mask
  (:func:`soft_irregularity`, ``shape_measure="tv"``) or by the zero level set of the mask channel, traced
  with sub-pixel crossings (:func:`level_set_irregularity`, ``"level_set"``). The real margin is measured
  by TV too (``shape_target="tv"``) or by the ``irregularity`` feature itself (``"feature"``). TV reads a
  binary mask's pixel staircase as margin (a digital disc reads about 0.02 above its feature) and a soft,
  anti-aliased edge as smooth, so with a TV target G is asked for more irregularity than the real nodule
  has, and draws it;
* ``c_stray * mean(sum of alpha farther than S/5 pixels from the real nodule)``: the generated mask's
  area, in pixels, where no real nodule of that patient reaches (speckle in the patch corners, which
  every feature counts and the band of ``c_shape`` does not see).

``paired_score="crps"`` scores ``c_rec``, ``c_tex``, ``c_shape`` and ``c_size`` with two samples of the same
(rna, base) and independent latents, ``(d(x1, y) + d(x2, y)) / 2 - d(x1, x2) / 2`` with ``d`` the term's own
L1 distance: the continuous ranked probability score (Gneiting & Raftery 2007), whose optimum is the true
conditional distribution where the one-sample L1 asks for its median. It is never negative (triangle
inequality), and equals the L1 score when both samples coincide.

Each loss returns a dict of 0-d tensors: ``"total"`` plus one key per *weighted* term
(``total == sum of the terms``). A coefficient of 0 removes its term: the key is absent and, where
that saves work, nothing is computed (``"total"`` is still a tensor). No ``.item()`` or other host
synchronisation happens here; targets are made with ``ones_like``/``zeros_like`` on the logits, so a
short last batch is fine.

The G loss leaves gradients in D's parameters (they are needed to reach G through D): the trainer
must step only G's optimiser after it, and zero D's gradients before the next D step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rggan.features import contour_length, nodule_features, smooth_padded
from rggan.networks import DiscriminatorOutput, GeneratorOutput

__all__ = [
    "DiscriminatorLoss",
    "GeneratorLoss",
    "SHRINKABLE_TERMS",
    "background_mask",
    "level_set_irregularity",
    "paired_target_priors",
    "soft_irregularity",
]

DNet = Callable[[Tensor, Tensor, Tensor], DiscriminatorOutput]

_HEADS = ("isc", "i", "is")
# pair name -> targets (isc, i, is), the table above
_D_TARGETS = {
    "real": (1.0, 1.0, 1.0),
    "wrong": (0.0, 1.0, 1.0),
    "wrongmask": (0.0, 1.0, 0.0),
    "fake": (0.0, 0.0, 0.0),
}


def _check_coefficients(**coeffs: float) -> dict[str, float]:
    for name, c in coeffs.items():
        if not c >= 0:  # also rejects NaN
            raise ValueError(f"{name} must be >= 0, got {c}")
    return {k: float(v) for k, v in coeffs.items()}


def _head(out: DiscriminatorOutput, name: str) -> Tensor:
    return out.is_ if name == "is" else getattr(out, name)


def _mse_to(logits: Tensor, target: float) -> Tensor:
    t = torch.ones_like(logits) if target == 1.0 else torch.zeros_like(logits)
    return F.mse_loss(logits, t)


def _check_condition(condition: str) -> str:
    if condition not in ("embedding", "rna"):
        raise ValueError(
            f"condition must be 'embedding' (G's gene embedding) or 'rna' (the expression), got {condition!r}"
        )
    return condition


def _masked_mean_std(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample mean and population SD of (B, 1, S, S) ``x`` over the {0, 1} weights ``m``."""
    n = m.flatten(1).sum(1).clamp(min=1.0)
    mean = (x * m).flatten(1).sum(1) / n
    var = (((x - mean[:, None, None, None]) ** 2) * m).flatten(1).sum(1) / n
    return mean, (var + 1e-8).sqrt()


def _equivalent_radius(m: Tensor) -> Tensor:
    """Per-sample ``sqrt(area / pi)`` of (B, 1, S, S) weights in [0, 1], as a fraction of the side S."""
    return (m.flatten(1).sum(1) / torch.pi + 1e-6).sqrt() / m.shape[-1]


def _dilate(m: Tensor, k: int) -> Tensor:
    """Max filter of side ``k`` (odd) of (B, 1, S, S) ``m``, as a row then a column pass: the square max-pool's
    values, 2-3x faster on the CPU (for masks without gradient: with ties the two routes differ)."""
    p = k // 2
    return F.max_pool2d(F.max_pool2d(m, (1, k), stride=1, padding=(0, p)), (k, 1), stride=1, padding=(p, 0))


def _gradient_norm(x: Tensor, eps: float) -> Tensor:
    """``sqrt(gx^2 + gy^2 + eps)`` of (B, 1, H, W) ``x`` by central differences, on the (H-2, W-2) interior."""
    gy = (x[:, :, 2:, 1:-1] - x[:, :, :-2, 1:-1]) / 2
    gx = (x[:, :, 1:-1, 2:] - x[:, :, 1:-1, :-2]) / 2
    return (gx**2 + gy**2 + eps).sqrt()


def soft_irregularity(alpha: Tensor) -> Tensor:
    """Differentiable ``1 - 4 pi area / perimeter^2`` of (B, 1, S, S) soft masks in [0, 1].

    The mask is blurred by a 3x3 binomial kernel (so binary and soft masks are measured alike), the area
    is its sum and the perimeter its isotropic total variation (sum of gradient magnitudes, central
    differences). Scale-free; about 0.1 for a digital disk, larger for lobulated or spiculated margins.
    """
    k = torch.tensor([1.0, 2.0, 1.0], device=alpha.device, dtype=alpha.dtype)
    k = (k[:, None] * k[None, :] / 16.0)[None, None]
    a = F.conv2d(F.pad(alpha, (1, 1, 1, 1)), k)
    perimeter = _gradient_norm(a, 1e-6).flatten(1).sum(1)
    area = a.flatten(1).sum(1)
    return 1.0 - 4.0 * torch.pi * area / perimeter.clamp(min=1e-3) ** 2


def level_set_irregularity(mask: Tensor, sigma: float = 0.5) -> Tensor:
    """Differentiable ``1 - 4 pi area / perimeter^2`` of the outline ``mask == 0`` of (B, 1, S, S) masks.

    The outline is where the features put it when they threshold the mask at 0. The perimeter is the
    length of the zero level set of the mask channel, Gaussian-smoothed by ``sigma`` pixels, traced by
    marching squares with linearly interpolated crossings (:func:`rggan.features.contour_length`); the
    area is each pixel's sub-pixel coverage ``clamp(0.5 + t / |grad t|, 0, 1)`` (the signed distance to the
    zero crossing, central differences), so a faint halo below 0 adds no area. The gradient moves the
    crossings, i.e. the outline itself. ``sigma`` 0.5 makes a generated mask's reading agree with the
    ``irregularity`` feature of its thresholded self (the feature smooths the binary mask by 0.75 px; the
    generated edge is already about a pixel soft). Pixels outside the region of interest should carry
    mask -1 (background); the patch is padded with -1.

    Args:
        mask: (B, 1, S, S) mask channel in [-1, 1], nodule where > 0.
        sigma: Gaussian smoothing (pixels) of the mask before tracing; 0: none.

    Returns:
        (B,) irregularity in the dtype of ``mask``; 1 for an empty mask.
    """
    field = mask[:, 0].to(torch.float64)
    if sigma > 0:
        field = smooth_padded(field, float(sigma), value=-1.0)
    else:
        field = F.pad(field, (1, 1, 1, 1), value=-1.0)
    unit = torch.ones(field.shape[0], 2, dtype=torch.float64, device=field.device)
    perimeter = contour_length(field, unit, 0.0)
    grad = _gradient_norm(F.pad(mask, (1, 1, 1, 1), value=-1.0), 1e-12)
    coverage = (0.5 + mask / grad.clamp(min=1e-3)).clamp(0.0, 1.0)
    area = coverage.flatten(1).sum(1).to(torch.float64)
    return (1.0 - 4.0 * torch.pi * area / perimeter.clamp(min=1.0) ** 2).to(mask.dtype)


def background_mask(mask: Tensor, erosion: int = 5) -> Tensor:
    """Background indicator ``M = 1[mask < 0]`` (detached, float), eroded by a square ``erosion`` kernel.

    The erosion is ``-max_pool2d(-M, erosion, stride 1, padding erosion // 2)``: a pixel stays
    background only if its whole ``erosion x erosion`` neighbourhood is background, which drops a
    band of ``erosion // 2`` pixels around the generated nodule. The pool's implicit -inf padding
    leaves the image border untouched, like OpenCV's default border in the research code.
    ``erosion`` 0 or 1 disables it.
    """
    m = (mask.detach() < 0).to(mask.dtype)
    if erosion > 1:
        m = -F.max_pool2d(-m, kernel_size=erosion, stride=1, padding=erosion // 2)
    return m


def _rec_distance(a: Tensor, b: Tensor, inside: Tensor) -> Tensor:
    """Per sample: mean |mask difference| + mean over the real nodule of |smoothed image difference|.

    ``a`` and ``b`` are (B, 2, S, S): the mask channel, then the (box-filtered) image.
    """
    n = inside.flatten(1).sum(1).clamp(min=1.0)
    mask = (a[:, :1] - b[:, :1]).abs().flatten(1).mean(1)
    image = ((a[:, 1:] - b[:, 1:]).abs() * inside).flatten(1).sum(1) / n
    return mask + image


def _abs_distance(a: Tensor, b: Tensor, inside: Tensor) -> Tensor:
    """Per sample |a - b| of a scalar measurement (B,)."""
    return (a - b).abs()


#: the per-sample L1 distance of each paired term (its quantities: ``GeneratorLoss._real_quantities``)
_PAIRED_DISTANCE: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "rec": _rec_distance,
    "tex": _abs_distance,
    "shape": _abs_distance,
    "size": _abs_distance,
}


#: paired term -> the real-nodule feature whose gene prediction its target can be shrunk toward
SHRINKABLE_TERMS: dict[str, str] = {"shape": "irregularity", "tex": "std_hu"}


def paired_target_priors(
    dataset_dir: str | os.PathLike,
    terms: Sequence[str] = ("shape", "tex"),
    alpha: float = 0.1,
    slice_margin: bool = False,
) -> dict[str, tuple[np.ndarray, float]]:
    """Gene predictions of the paired terms' real values, for :class:`GeneratorLoss`'s ``target_shrinkage``.

    Each is :func:`rggan.adaptive_lasso.lasso_prediction` of the term's feature (:data:`SHRINKABLE_TERMS`) over
    the training patients, in the units the term compares: the irregularity as it is (1), the HU SD divided
    by half the prepared HU window (the normalised image's SD).

    Args:
        dataset_dir: a prepared folder; terms: keys of :data:`SHRINKABLE_TERMS`; alpha: the lasso penalty.
        slice_margin: the margin is fitted on prepare's slice-averaged values (``shape_target="slices"``).

    Returns:
        ``{term: ((genes,) weights, intercept)}``.
    """
    from rggan.adaptive_lasso import lasso_prediction
    from rggan.intensity import hu_range_of

    unknown = [t for t in terms if t not in SHRINKABLE_TERMS]
    if unknown:
        raise ValueError(f"{unknown} cannot be shrunk; use {', '.join(SHRINKABLE_TERMS)}")
    lo, hi = hu_range_of(dataset_dir)
    unit = {"shape": 1.0, "tex": 2.0 / (hi - lo)}
    priors = {}
    for term in terms:
        weights, intercept = lasso_prediction(dataset_dir, SHRINKABLE_TERMS[term], alpha, slice_margin=slice_margin)
        priors[term] = (weights * unit[term], intercept * unit[term])
    return priors


def _need_rna(rna: Tensor | None) -> Tensor:
    if rna is None:
        raise ValueError("condition='rna' needs the batch's expression vectors: pass rna=...")
    return rna


class DiscriminatorLoss:
    """Least-squares discriminator loss over the four pairs × three heads (12 terms).

    Args:
        c_isc, c_i, c_is: coefficients of the ISC, I and IS heads (the paper's 10, 8, 1).
        condition: what D's ISC head sees: ``"embedding"`` (G's embedding ``e``, detached; the paper)
            or ``"rna"`` (the expression vector passed as ``rna``).

    Keys of the returned dict: ``"total"`` and ``"d_<pair>_<head>"`` for pair in real, wrong,
    wrongmask, fake and head in isc, i, is (only those with a non-zero coefficient), each already
    multiplied by its coefficient.
    """

    def __init__(self, c_isc: float = 10.0, c_i: float = 8.0, c_is: float = 1.0, condition: str = "embedding") -> None:
        c = _check_coefficients(c_isc=c_isc, c_i=c_i, c_is=c_is)
        self.coefficients = {"isc": c["c_isc"], "i": c["c_i"], "is": c["c_is"]}
        self.condition = _check_condition(condition)

    def __call__(
        self,
        d_net: DNet,
        real_image: Tensor,
        real_mask: Tensor,
        wrong_image: Tensor,
        wrong_mask: Tensor,
        fake: GeneratorOutput,
        backward: Callable[[Tensor], object] | None = None,
        rna: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute the D loss; ``fake`` image, mask and embedding are detached here.

        Args:
            rna: (B, G) expression vectors; required with ``condition="rna"``.
            backward: when given, called on each pair's loss right after that pair's D call (e.g.
                ``lambda t: t.backward()``), so only one discriminator graph is alive at a time (~100 MB
                each at the paper's size). The gradients are the same sum and D still sees four separate
                calls in the same order; the returned losses are then detached.
        """
        e = fake.embedding.detach() if self.condition == "embedding" else _need_rna(rna)
        pairs = {
            "real": (real_image, real_mask),
            "wrong": (wrong_image, wrong_mask),
            "wrongmask": (real_image, wrong_mask),
            "fake": (fake.image.detach(), fake.mask.detach()),
        }
        terms: dict[str, Tensor] = {}
        for pair, (image, mask) in pairs.items():
            active = [(h, t) for h, t in zip(_HEADS, _D_TARGETS[pair]) if self.coefficients[h] > 0]
            if not active:
                continue
            out = d_net(image, mask, e)  # one call per pair: BN statistics per pair
            pair_terms = {
                f"d_{pair}_{head}": self.coefficients[head] * _mse_to(_head(out, head), target)
                for head, target in active
            }
            if backward is not None:
                backward(torch.stack(list(pair_terms.values())).sum())
                pair_terms = {k: v.detach() for k, v in pair_terms.items()}
            terms.update(pair_terms)
        total = torch.stack(list(terms.values())).sum() if terms else real_image.new_zeros(())
        return {"total": total, **terms}


class GeneratorLoss:
    """Least-squares generator loss plus the background-reconstruction term.

    Args:
        c_isc, c_i, c_is: coefficients of the adversarial heads (10, 8, 1).
        c_bg: coefficient of the background L1 (100).
        erosion: side of the square erosion of the background mask (5 as in the research code;
            0 or 1 = no erosion as in the MONAI prototype). Must be odd when > 1.
        condition: ``"embedding"`` (D's ISC head sees G's attached embedding: the paper) or ``"rna"``.
        c_rec: coefficient of the paired reconstruction term (mask + image inside the real nodule); 0: off.
        c_tex: coefficient of the paired texture term (SD inside the real nodule); 0: off.
        c_shape: coefficient of the paired margin term (irregularity of the mask); 0: off.
        shape_measure: how ``c_shape`` measures the generated margin: ``"tv"`` (total variation of the soft
            mask, :func:`soft_irregularity`) or ``"level_set"`` (the mask's zero level set,
            :func:`level_set_irregularity`).
        shape_target: how it measures the real margin: ``"tv"`` (:func:`soft_irregularity` of the binary
            real mask), ``"feature"`` (the ``irregularity`` feature, as the evaluation measures it) or
            ``"slices"`` (that feature averaged over the tumour's slices near the nodule slice, which prepare
            stores with ``margin_mm`` (or ``margin_slices``) set and the trainer passes as ``real_margin``: one
            slice's outline holds noise the genes do not predict; a patient without one falls back to ``"feature"``).
        c_size: coefficient of the paired size term (equivalent radius of the mask, in image sides); 0: off.
        c_binary: coefficient of the binary-mask term ``mean(4 alpha (1 - alpha))``; 0: off.
        c_stray: coefficient of the stray-mask term (mask area far from the real nodule, pixels); 0: off.
        appearance_moves_mask: whether the paired appearance terms (the image part of ``c_rec`` and ``c_tex``)
            reach the mask through the compositing ``base (1 - alpha) + f alpha``. With False they
            see the same image values but train the foreground ``f`` only: a nodule cannot grow or shrink to
            match an HU or an SD (a smaller mask holds more margin pixels, and a higher SD), only ``c_size``,
            ``c_shape``, the mask part of ``c_rec`` and D set its outline. Needs ``GeneratorOutput.foreground``.
        rec_smooth: side of the box filter applied to both images before the image part of ``c_rec``
            (1: per-pixel L1). A texture is random: a per-pixel L1 against one real texture pulls the
            generated one towards its median, no texture at all; after a box filter the term asks for
            the patient's HU where the filter averages the texture out.
        target_shrinkage: ``lambda`` in [0, 1]: each paired term with a prior in ``target_priors`` (``"shape"``,
            ``"tex"``: :data:`SHRINKABLE_TERMS`) scores G against ``(1 - lambda) q(s) + lambda p(rna)``: the real
            nodule's value shrunk toward ``p``, a linear prediction from the patient's expression. One slice's
            margin and texture hold noise that no gene predicts; fitting it, G learns each training patient's
            noise instead of the genes' effect. 0: the real nodule alone.
        target_priors: ``{term: (weights, intercept)}``, each prediction ``p(rna) = rna @ weights + intercept``
            in the term's own units (:func:`paired_target_priors`, fitted on the training patients); needed
            when ``target_shrinkage > 0``.
        paired_score: how the paired terms (``c_rec``, ``c_tex``, ``c_shape``, ``c_size``) score the generated
            nodules against the patient's real one: ``"l1"`` (``d(x, y)``, the L1 distance ``d`` of one
            sample: its optimum is the conditional median, every latent drawing the same nodule) or
            ``"crps"`` (``(d(x1, y) + d(x2, y)) / 2 - d(x1, x2) / 2`` over two samples with independent
            latents: the continuous ranked probability score, a proper scoring rule whose optimum is the
            true conditional distribution, so the latents carry what the genes do not predict).
        mixup: weight of the mixed-expression terms (:meth:`mixed_terms`): the trainer adds, per G step, nodules
            generated from ``lam rna_i + (1 - lam) rna_j`` (``j`` another patient of the batch, ``lam ~ U(0, 1)``)
            on patient i's background, scored by the paired scalar terms (``c_tex``, ``c_shape``, ``c_size``)
            against the same mix of the two real nodules' values; 0: off.

    Keys of the returned dict: ``"total"``, ``"g_isc"``, ``"g_i"``, ``"g_is"``, ``"g_bg"``, ``"g_rec"``,
    ``"g_tex"``, ``"g_shape"``, ``"g_size"``, ``"g_binary"``, ``"g_stray"`` (those with a non-zero
    coefficient), each already multiplied by its coefficient. The background L1 is a mean over all B·S² pixels (pixels
    outside M count as zeros), not normalised by the area of M, as in the prototype.
    """

    def __init__(
        self,
        c_isc: float = 10.0,
        c_i: float = 8.0,
        c_is: float = 1.0,
        c_bg: float = 100.0,
        erosion: int = 5,
        condition: str = "embedding",
        c_rec: float = 0.0,
        c_tex: float = 0.0,
        c_shape: float = 0.0,
        rec_smooth: int = 1,
        c_size: float = 0.0,
        c_binary: float = 0.0,
        c_stray: float = 0.0,
        appearance_moves_mask: bool = True,
        shape_measure: str = "tv",
        shape_target: str = "tv",
        paired_score: str = "l1",
        target_shrinkage: float = 0.0,
        target_priors: Mapping[str, tuple[Sequence[float] | Tensor, float]] | None = None,
        mixup: float = 0.0,
    ) -> None:
        if paired_score not in ("l1", "crps"):
            raise ValueError(f"paired_score must be 'l1' or 'crps', got {paired_score!r}")
        self.paired_score = paired_score
        if not mixup >= 0:
            raise ValueError(f"mixup must be >= 0, got {mixup!r}")
        #: weight of :meth:`mixed_terms` (the trainer adds a mixed-expression sample when > 0)
        self.mixup = float(mixup)
        if shape_measure not in ("tv", "level_set"):
            raise ValueError(f"shape_measure must be 'tv' or 'level_set', got {shape_measure!r}")
        if shape_target not in ("tv", "feature", "slices"):
            raise ValueError(f"shape_target must be 'tv', 'feature' or 'slices', got {shape_target!r}")
        self.shape_measure, self.shape_target = shape_measure, shape_target
        self.target_shrinkage = float(target_shrinkage)
        if not 0.0 <= self.target_shrinkage <= 1.0:
            raise ValueError(f"target_shrinkage must be in [0, 1], got {target_shrinkage!r}")
        #: term -> ((genes,) float32 weights, intercept) of the shrunk paired targets
        self.target_priors: dict[str, tuple[Tensor, float]] = {}
        if self.target_shrinkage > 0:
            if not target_priors:
                raise ValueError("target_shrinkage > 0 needs target_priors={term: (weights, intercept)}")
            unknown = set(target_priors) - set(SHRINKABLE_TERMS)
            if unknown:
                raise ValueError(f"target_priors {sorted(unknown)}: only {', '.join(SHRINKABLE_TERMS)} can be shrunk")
            for term, (w, b) in target_priors.items():
                self.target_priors[term] = (torch.as_tensor(w, dtype=torch.float32).reshape(-1), float(b))
        if isinstance(rec_smooth, bool) or not isinstance(rec_smooth, int) or rec_smooth < 1 or rec_smooth % 2 == 0:
            raise ValueError(f"rec_smooth must be an odd int >= 1 (1: per-pixel L1), got {rec_smooth!r}")
        self.rec_smooth = rec_smooth
        c = _check_coefficients(
            c_isc=c_isc, c_i=c_i, c_is=c_is, c_bg=c_bg, c_rec=c_rec, c_tex=c_tex, c_shape=c_shape, c_size=c_size,
            c_binary=c_binary, c_stray=c_stray,
        )
        self.coefficients = {"isc": c["c_isc"], "i": c["c_i"], "is": c["c_is"]}
        self.c_bg, self.c_rec, self.c_tex, self.c_shape = c["c_bg"], c["c_rec"], c["c_tex"], c["c_shape"]
        self.c_size, self.c_binary, self.c_stray = c["c_size"], c["c_binary"], c["c_stray"]
        paired_on = self.c_rec > 0 or self.c_tex > 0 or self.c_shape > 0 or self.c_size > 0
        #: generated samples per (rna, base) the trainer passes: 2 (``fake`` and ``fake2``) with CRPS and a
        #: paired term on; 1 otherwise (no second G pass)
        self.paired_samples = 2 if paired_score == "crps" and paired_on else 1
        #: whether :meth:`__call__` reads ``real_margin`` (the trainer then passes the batch's ``margin``)
        self.uses_margin = shape_target == "slices" and self.c_shape > 0
        self.condition = _check_condition(condition)
        self.appearance_moves_mask = bool(appearance_moves_mask)
        if isinstance(erosion, bool) or not isinstance(erosion, int) or erosion < 0:
            raise ValueError(f"erosion must be an int >= 0, got {erosion!r}")
        if erosion > 1 and erosion % 2 == 0:
            raise ValueError(f"erosion must be odd (a centred square kernel) or 0/1 to disable, got {erosion}")
        self.erosion = erosion

    def _smooth(self, x: Tensor) -> Tensor:
        k = self.rec_smooth
        return x if k <= 1 else F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)

    def _prediction(self, term: str, rna: Tensor | None) -> Tensor:
        """The prior's (B,) float32 prediction of one term's real value from the expression, clamped at 0."""
        w, b = self.target_priors[term]
        if rna is None:
            raise ValueError("target_shrinkage > 0 needs the batch's expression vectors: pass rna=...")
        if rna.shape[-1] != w.numel():
            raise ValueError(
                f"target_priors[{term!r}] has {w.numel()} gene weights but the expression has {rna.shape[-1]} genes"
            )
        w = w.to(rna.device)  # an elementwise product and sum: float32 under autocast too
        return ((rna.float() * w).sum(-1) + b).clamp_min(0.0)

    def _real_quantities(
        self,
        real_image: Tensor,
        real_mask: Tensor,
        inside: Tensor,
        rna: Tensor | None = None,
        real_margin: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """What each paired term compares, measured on the real nodules (keys ``rec tex shape size``)."""
        q: dict[str, Tensor] = {}
        if self.c_rec > 0:
            q["rec"] = torch.cat([real_mask, self._smooth(real_image)], dim=1)
        if self.c_tex > 0:
            q["tex"] = _masked_mean_std(real_image, inside)[1]
        if self.c_shape > 0:
            if self.shape_target in ("feature", "slices"):  # as the evaluation measures the real nodule
                q["shape"] = nodule_features(real_image, inside)["irregularity"].to(inside.dtype)
                if self.uses_margin:
                    if real_margin is None:
                        raise ValueError(
                            "shape_target='slices' needs each patient's slice-averaged margin: pass real_margin=... "
                            "(the batch's 'margin', from data prepared with margin_mm > 0)"
                        )
                    m = real_margin.to(q["shape"].device, q["shape"].dtype).reshape(q["shape"].shape)
                    q["shape"] = torch.where(torch.isfinite(m), m, q["shape"])
            else:
                q["shape"] = soft_irregularity(inside)
        if self.c_size > 0:
            q["size"] = _equivalent_radius(inside)
        lam = self.target_shrinkage
        for term in self.target_priors:
            if term in q:
                prior = self._prediction(term, rna).to(q[term].dtype).reshape(q[term].shape)
                q[term] = (1 - lam) * q[term] + lam * prior
        return q

    def _fake_quantities(self, fake: GeneratorOutput, base: Tensor, inside: Tensor) -> dict[str, Tensor]:
        """The same quantities measured on one batch of generated nodules."""
        look = fake.image  # what the appearance terms measure
        if not self.appearance_moves_mask and (self.c_rec > 0 or self.c_tex > 0):
            if fake.foreground is None:
                raise ValueError(
                    "appearance_moves_mask=False needs the generator's foreground (GeneratorOutput.foreground)"
                )
            a = fake.alpha.detach()
            look = base * (1 - a) + fake.foreground * a  # the same values; no gradient into alpha
        q: dict[str, Tensor] = {}
        if self.c_rec > 0:
            mask = fake.mask if fake.clean_mask is None else fake.clean_mask  # the outline before its lobes
            q["rec"] = torch.cat([mask, self._smooth(look)], dim=1)
        if self.c_tex > 0:  # each nodule's own mask, as the std_hu feature measures it
            q["tex"] = _masked_mean_std(look, (fake.mask.detach() > 0).to(inside.dtype))[1]
        if self.c_shape > 0:  # the generated mask near the real nodule only (3 px band): no far-away speckle
            near = _dilate(inside, 7)
            if self.shape_measure == "level_set":  # the outline where thresholding the mask puts it
                q["shape"] = level_set_irregularity(fake.mask * near + (near - 1))
            else:
                q["shape"] = soft_irregularity(fake.alpha * near)
        if self.c_size > 0:  # equivalent radius, as equivalent_radius_mm measures it
            q["size"] = _equivalent_radius(fake.alpha)
        return q

    def mixed_terms(
        self,
        fake: GeneratorOutput,
        base: Tensor,
        real_image: Tensor,
        real_mask: Tensor,
        partner: Tensor,
        lam: Tensor,
        rna: Tensor | None = None,
        real_margin: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The paired scalar terms of nodules generated from mixed expression, against the mixed real values.

        With a gene effect that is linear (as the paired targets' noise averages out, its conditional mean),
        the mix ``lam rna_i + (1 - lam) rna_j`` of two patients' expression should give the same mix of their
        nodules' size, texture and margin: G is asked for the gene effect between the training patients, not
        only at them (mixup, Zhang et al. 2018, on the condition and the paired targets).

        Args:
            fake: nodules generated from the mixed expression on patient i's background ``base``.
            real_image, real_mask: the batch's real nodules (patient i's at row i).
            partner: (B,) long, the row ``j`` mixed into each row; lam: (B,) the weight of row i.
            rna: the batch's (unmixed) expression, for the shrunk targets (``target_shrinkage``).
            real_margin: the batch's slice-averaged margins (``shape_target="slices"``).

        Returns:
            ``{"g_mix_tex", "g_mix_shape", "g_mix_size"}`` (those with a non-zero coefficient), each multiplied by
            its coefficient and by ``mixup``.
        """
        inside = (real_mask > 0).to(fake.image.dtype)
        real = self._real_quantities(real_image, real_mask, inside, rna, real_margin)
        q = self._fake_quantities(fake, base, torch.maximum(inside, inside[partner]))  # near either nodule
        terms: dict[str, Tensor] = {}
        for name, coeff in (("tex", self.c_tex), ("shape", self.c_shape), ("size", self.c_size)):
            if coeff > 0:
                lam_ = lam.to(real[name].dtype).reshape(-1, *([1] * (real[name].ndim - 1)))
                target = lam_ * real[name] + (1 - lam_) * real[name][partner]
                terms[f"g_mix_{name}"] = self.mixup * coeff * (q[name] - target).abs().mean()
        return terms

    def __call__(
        self,
        d_net: DNet,
        fake: GeneratorOutput,
        base: Tensor,
        *,
        rna: Tensor | None = None,
        real_image: Tensor | None = None,
        real_mask: Tensor | None = None,
        fake2: GeneratorOutput | None = None,
        real_margin: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute the G loss for ``fake`` composited on ``base`` (the same base G was given).

        Args:
            rna: (B, G) expression vectors; required with ``condition="rna"``.
            real_image, real_mask: the patients' real nodule crops; required when a paired term
                (``c_rec``, ``c_tex``, ``c_shape``, ``c_size``, ``c_stray``) is non-zero.
            fake2: a second sample of the same (rna, base) with independent latents; required with
                ``paired_score="crps"`` (:attr:`paired_samples` is then 2), used by the paired terms only.
            real_margin: (B,) each patient's slice-averaged margin irregularity (NaN: none measured); required
                with ``shape_target="slices"`` (:attr:`uses_margin`).
        """
        terms: dict[str, Tensor] = {}
        active = [h for h in _HEADS if self.coefficients[h] > 0]
        if active:
            cond = fake.embedding if self.condition == "embedding" else _need_rna(rna)
            out = d_net(fake.image, fake.mask, cond)  # the single D forward, e attached
            for head in active:
                terms[f"g_{head}"] = self.coefficients[head] * _mse_to(_head(out, head), 1.0)
        if self.c_bg > 0:
            m = background_mask(fake.mask, self.erosion)
            terms["g_bg"] = self.c_bg * (fake.image * m - base * m).abs().mean()
        if self.c_binary > 0:  # a binary mask: the soft terms then measure what the thresholded features see
            terms["g_binary"] = self.c_binary * (4 * fake.alpha * (1 - fake.alpha)).mean()
        if self.c_rec > 0 or self.c_tex > 0 or self.c_shape > 0 or self.c_size > 0 or self.c_stray > 0:
            if real_image is None or real_mask is None:
                raise ValueError(
                    "c_rec / c_tex / c_shape / c_size / c_stray need the real nodules: "
                    "pass real_image=... and real_mask=..."
                )
            if self.paired_score == "crps" and fake2 is None:
                raise ValueError("paired_score='crps' needs a second sample: pass fake2=G(rna, z2, base)")
            inside = (real_mask > 0).to(fake.image.dtype)
            real = self._real_quantities(real_image, real_mask, inside, rna, real_margin)
            q1 = self._fake_quantities(fake, base, inside)
            q2 = self._fake_quantities(fake2, base, inside) if self.paired_score == "crps" else None
            paired = {"rec": self.c_rec, "tex": self.c_tex, "shape": self.c_shape, "size": self.c_size}
            for name, coeff in paired.items():
                if coeff > 0:
                    dist = _PAIRED_DISTANCE[name]
                    if q2 is None:
                        score = dist(q1[name], real[name], inside)
                    else:  # CRPS of the two-sample generated distribution at the real value (>= 0)
                        score = 0.5 * (dist(q1[name], real[name], inside) + dist(q2[name], real[name], inside))
                        score = score - 0.5 * dist(q1[name], q2[name], inside)
                    terms[f"g_{name}"] = coeff * score.mean()
            if self.c_stray > 0:  # mask pixels farther than S/5 from the real nodule: speckle, never a nodule
                r = max(1, inside.shape[-1] // 5)
                far = 1.0 - _dilate(inside, 2 * r + 1)
                terms["g_stray"] = self.c_stray * (fake.alpha * far).flatten(1).sum(1).mean()
        total = torch.stack(list(terms.values())).sum() if terms else fake.image.new_zeros(())
        return {"total": total, **terms}
