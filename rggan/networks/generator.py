"""RG-GAN generator (docs/spec.md, section "Model"): gene encoder + MC-GAN synthesis blocks + alpha compositing.

Shapes below use B = batch, G = genes, E = ``embed_dim``, L = ``latent_size``, g = ``g_n_feat``,
S = ``image_size`` and k = S/16 (``code_kernel``)::

    e       = gene_encoder(rna) [+ P (W rna + c)]       (B, E)   (the bracket: with a ``phenotype_prior``)
    u       = cat(e, z)                                 (B, E+L)
    F1..F4  = code_projections(u)                       (B, 16g|8g|4g|2g, k, k)
    B0..B4  = background_encoder(base)                  g@S, 2g@S/2, 4g@S/4, 8g@S/8, 16g@k
    h, _    = SB1(x=B4, skip=F1, style=F1); Up1         8g @ 2k   (stage 1 swaps roles: background in, code as skip)
    h, _    = SB2(x=h,  skip=B3, style=F2); Up2         4g @ 4k
    h, _    = SB3(x=h,  skip=B2, style=F3); Up3         2g @ 8k
    h, sw   = SB4(x=h,  skip=B1, style=F4); Up4          g @ S
    f, t    = tanh(Conv3x3(h -> 2))                     foreground, mask channel in [-1, 1]
    alpha   = (t + 1)/2        (or (tanh t + 1)/2 with ``double_tanh``, the prototype's bug)
    image   = base * (1 - alpha) + f * alpha

With ``texture_noise`` the head has a third channel a and the foreground gets per-pixel noise of a
learned, conditioned amplitude (StyleGAN's noise inputs, Karras et al. 2019): ``f <- f + 0.25 sigmoid(3a) eps``
with ``eps = reshape(P z) / sqrt(L)``, P a fixed random (S*S, L) matrix (not trained, not saved: rebuilt
from a fixed seed). The noise is thus a deterministic function of z (same z, same texture; no random
state in the forward pass), and each pixel is N(0, 1) when z ~ N(0, I). Without it the synthesis path,
whose only randomness enters through the k x k code maps, cannot make pixel-level texture.

With ``margin_harmonics`` K > 0 the mask logit gets a lobulated margin before its tanh (a radial-profile
path for the outline; without it the outline is a smooth function of the k x k code maps, and the
synthesis path does not draw margins that follow the genes)::

    a_k    = softplus(8 A(u)_k - 1) / 4                         k = 2 .. K+1, A a Linear(E+L -> K)
    phi_k  = angle of (Q z)_k                                    Q a fixed (2K, L) matrix: z sets phases only
    t      = tanh(t_raw + sum_k a_k w(rho) cos(k theta - phi_k))

about the patch centre, with ``w(rho) = (rho / r) exp(1 - rho / r)``, r = S/4 (a typical nodule radius):
0 at the centre, largest at the outline, fading towards the background. The amplitudes (how lobulated)
come straight from the condition through one linear layer; the genes set them, z turns the lobes. The
gain 8 lets Adam move the amplitude across its range in a short run; the offset -1 starts it near a
disc. ``GeneratorOutput.clean_mask`` keeps the mask before the lobes (the predictable outline, which a
reconstruction term may ask for).

With a ``phenotype_prior`` (W, c), W a fixed (F, G) matrix and c (F,), the embedding also gets the F
phenotype scores ``W rna + c`` (a sparse linear prediction of each real-nodule feature from the genes, fitted
on the training patients: :func:`rggan.adaptive_lasso.phenotype_prior`) through a learned Linear(F -> E) P.
W and c are buffers (saved with the weights, never trained). The encoder must otherwise learn, from ~80
training patients, a gene map that holds between patients; the scores give it the linear read-out of the
genes that a lasso of the same patients generalises with.

BatchNorm is used throughout (also on the code projections), so training needs batch > 1 and
single-sample inference needs ``eval()``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rggan.networks._sizes import check_positive, resolve_code_kernel

__all__ = [
    "GeneratorOutput",
    "RGGenerator",
    "GeneEncoder",
    "CodeProjection",
    "SynthesisBlock",
    "adain",
    "calc_mean_std",
]

_EPS = 1e-5


@dataclass
class GeneratorOutput:
    """What :class:`RGGenerator` returns.

    Attributes:
        embedding: (B, E) gene embedding ``e`` (the learned radiogenomic code). Not detached: the
            G loss trains the encoder through the discriminator's ISC head; the D loss detaches it.
        image: (B, 1, S, S) composited CT, ``base * (1 - alpha) + f * alpha``.
        mask: (B, 1, S, S) mask channel ``t`` in [-1, 1]; > 0 means nodule.
        switch: (B, 1, S/2, S/2) channel mean of the last synthesis block's switch, i.e. the weight
            it gives the background skip at S/2 (the prototype's "fg_switch"/"Gene_Impact"; it is
            not an intensity and not a probability of nodule).
        alpha: (B, 1, S, S) compositing weight of the generated foreground (1 = generated pixel).
        clean_mask: (B, 1, S, S) the mask channel before the margin lobes (``margin_harmonics``), else None.
        foreground: (B, 1, S, S) the generated foreground ``f`` (texture noise included) before compositing.
    """

    embedding: Tensor
    image: Tensor
    mask: Tensor
    switch: Tensor
    alpha: Tensor
    clean_mask: Tensor | None = None
    foreground: Tensor | None = None

    def detach(self) -> GeneratorOutput:
        """A copy with every tensor detached from the graph (for samplers, EMA checks, the D step)."""
        return GeneratorOutput(
            **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).detach() for f in fields(self)}
        )


def calc_mean_std(x: Tensor, eps: float = _EPS) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel spatial mean and ``sqrt(unbiased var + eps)`` of (B, C, H, W) ``x``.

    The convention of naoto0804/pytorch-AdaIN ``calc_mean_std`` that the prototype uses. Needs
    H * W >= 2 (guaranteed: the smallest map is k x k with k >= 2).
    """
    flat = x.flatten(2)
    mean = flat.mean(dim=2)[..., None, None]
    std = (flat.var(dim=2, unbiased=True) + eps).sqrt()[..., None, None]
    return mean, std


def adain(content: Tensor, style: Tensor, eps: float = _EPS) -> Tensor:
    """Adaptive instance normalisation: ``(content - mu_c) / sigma_c * sigma_s + mu_s``.

    ``content`` and ``style`` must have the same (B, C); their spatial sizes may differ (the style
    is always the k x k code map: only its channel statistics matter).
    """
    c_mean, c_std = calc_mean_std(content, eps)
    s_mean, s_std = calc_mean_std(style, eps)
    return (content - c_mean) / c_std * s_std + s_mean


class GeneEncoder(nn.Sequential):
    """Linear(G -> 4E, no bias) -> LeakyReLU(0.2) -> Linear(4E -> E, no bias)."""

    def __init__(self, num_genes: int, embed_dim: int) -> None:
        super().__init__(
            nn.Linear(num_genes, 4 * embed_dim, bias=False),
            nn.LeakyReLU(0.2),
            nn.Linear(4 * embed_dim, embed_dim, bias=False),
        )


class CodeProjection(nn.Module):
    """Linear(E+L -> 2*C*k*k, no bias) -> BatchNorm1d -> GLU(dim=1) -> reshape (B, C, k, k)."""

    def __init__(self, in_features: int, channels: int, kernel: int) -> None:
        super().__init__()
        self.channels = channels
        self.kernel = kernel
        n = channels * kernel * kernel
        self.fc = nn.Linear(in_features, 2 * n, bias=False)
        self.bn = nn.BatchNorm1d(2 * n)
        self.glu = nn.GLU(dim=1)

    def forward(self, u: Tensor) -> Tensor:
        return self.glu(self.bn(self.fc(u))).view(-1, self.channels, self.kernel, self.kernel)


class SynthesisBlock(nn.Module):
    """MC-GAN synthesis block with AdaIN (docs/spec.md, section "Model").

    ``h = BN(Conv3x3(LeakyReLU_0.02(BN(Conv3x3(x)))))`` with 2C channels, split into content ``f``
    and switch logits ``m``; ``s = (tanh m + 1) / 2``; ``out = skip * s + AdaIN(f * (1 - s), style)``.
    Returns ``(out, s)``.

    Memory: when training with autograd on, the element-wise switch/AdaIN part of a large block (at least
    ``CHECKPOINT_MIN_NUMEL`` elements in ``h``) is recomputed in the backward pass (``torch.utils.checkpoint``)
    instead of keeping its ~10 full-size intermediates; it holds no BatchNorm or randomness, so values and
    gradients are unchanged. Small blocks keep them: there the recomputation costs time and saves nothing
    that matters. The LeakyReLU works in place.
    """

    def __init__(self, channels: int, film_features: int = 0) -> None:
        super().__init__()
        c = channels
        # optional FiLM (Perez et al. 2018) from the condition u = cat(e, z): out * (1 + gamma(u)) + beta(u)
        self.film = nn.Linear(film_features, 2 * c) if film_features else None
        self.convs = nn.Sequential(
            Convolution(
                2,
                c,
                2 * c,
                kernel_size=3,
                act=("leakyrelu", {"negative_slope": 0.02, "inplace": True}),
                norm="batch",
                bias=False,
            ),
            Convolution(2, 2 * c, 2 * c, kernel_size=3, act=None, norm="batch", bias=False),
        )
        self.channels = c

    def _mix(self, h: Tensor, skip: Tensor, style: Tensor) -> tuple[Tensor, Tensor]:
        f, m = h[:, : self.channels], h[:, self.channels :]
        s = (torch.tanh(m) + 1) / 2
        return skip * s + adain(f * (1 - s), style), s

    def mix(self, h: Tensor, skip: Tensor, style: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The switch/AdaIN (and FiLM) part on convolved features ``h = self.convs(x)``; returns ``(out, s)``."""
        if self.training and h.requires_grad and h.numel() >= CHECKPOINT_MIN_NUMEL:  # False under no_grad
            out, s = checkpoint(self._mix, h, skip, style, use_reentrant=False)
        else:
            out, s = self._mix(h, skip, style)
        if self.film is not None:
            if u is None:
                raise ValueError("this synthesis block has a FiLM layer: pass the condition u")
            gamma, beta = self.film(u)[:, :, None, None].chunk(2, dim=1)
            out = out * (1 + gamma) + beta
        return out, s

    def forward(self, x: Tensor, skip: Tensor, style: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.mix(self.convs(x), skip, style, u)


#: blocks whose convolved features ``h`` have fewer elements keep the switch/AdaIN intermediates instead of
#: recomputing them in the backward pass (4 MiB of float32; at batch 16 every block of the paper size is
#: recomputed, as before, and every block of the 32² demo keeps them)
CHECKPOINT_MIN_NUMEL = 1 << 20


def _radial_harmonics(size: int, harmonics: int) -> Tensor:
    """(2K, S, S): ``w(rho) cos(k theta)``, ``w(rho) sin(k theta)`` for k = 2 .. K+1 about the patch centre.

    ``w(rho) = (rho / r) exp(1 - rho / r)`` with r = S/4: 0 at the centre, 1 at r (a typical nodule
    radius), fading far from it, so the outline is modulated and the background is left alone.
    """
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    rho, theta = (xx**2 + yy**2).sqrt(), torch.atan2(yy, xx)
    r = size / 4
    w = rho / r * torch.exp(1 - rho / r)
    basis = []
    for k in range(2, harmonics + 2):
        basis += [w * torch.cos(k * theta), w * torch.sin(k * theta)]
    return torch.stack(basis).float()


def _upsample_block(channels: int) -> nn.Sequential:
    """nearest x2 -> Conv3x3(C -> C, no bias) -> BN -> GLU(dim=1): C/2 channels at twice the size."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        Convolution(2, channels, channels, kernel_size=3, act=None, norm="batch", bias=False),
        nn.GLU(dim=1),
    )


class RGGenerator(nn.Module):
    """The RG-GAN generator: (rna, z, base) -> :class:`GeneratorOutput`.

    Args:
        num_genes: length G of the (transformed) expression vector; derive it from the data.
        embed_dim: E, width of the gene embedding (the prototype ignored this flag; here it is used).
        latent_size: L, size of the noise vector z.
        g_n_feat: g; channels are 16g, 8g, 4g, 2g, g from the coarsest to the finest scale.
        code_kernel: k, side of the code maps; must equal ``image_size // 16`` (default: derived).
        image_size: S, a power of two >= 32.
        double_tanh: reproduce the prototype's second tanh on the mask channel before compositing
            (alpha confined to [0.119, 0.881]); default False: alpha = (t + 1)/2 spans [0, 1].
        texture_noise: per-pixel foreground noise with a learned amplitude (see the module docstring).
        margin_harmonics: K, the number of radial harmonics (k = 2 .. K+1) of the margin lobes on the mask
            logit, amplitudes from the condition, phases from z (see the module docstring); 0: none.
        film: also modulate every synthesis block's output by FiLM from ``u = cat(e, z)``
            (``out * (1 + gamma(u)) + beta(u)``, one linear layer per block, zero-initialised by
            :func:`rggan.networks.init_weights`' N(0, 0.02)), a direct path from the genes to every scale besides
            AdaIN's channel statistics of the k x k code maps.
        phenotype_prior: ``(W, c)``: a fixed (F, G) matrix and (F,) offset whose scores ``W rna + c`` enter the
            embedding through a learned Linear(F -> E) (see the module docstring); None: the gene encoder alone.
            Loading a checkpoint, zeros of the saved shape do (the saved buffers replace them).
        prior_noise: SD of Gaussian noise added to the prior's scores in train mode (never in eval mode, so maps
            and inference stay deterministic); 0: none.

    Differences from the prototype, on purpose: no unused 32-channel code projection (fc0) and no
    unused image-stage FC; ``embed_dim`` and the input size are honoured. The background encoder's
    convolutions keep their bias (as in the prototype) although a BatchNorm follows them.

    Raises:
        ValueError: inconsistent sizes (see :func:`rggan.networks._sizes.resolve_code_kernel`).
    """

    def __init__(
        self,
        num_genes: int,
        embed_dim: int = 128,
        latent_size: int = 10,
        g_n_feat: int = 32,
        code_kernel: int | None = None,
        image_size: int = 128,
        double_tanh: bool = False,
        texture_noise: bool = False,
        film: bool = False,
        margin_harmonics: int = 0,
        phenotype_prior: tuple[Any, Any] | None = None,
        prior_noise: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive(num_genes=num_genes, embed_dim=embed_dim, latent_size=latent_size, g_n_feat=g_n_feat)
        k = resolve_code_kernel(image_size, code_kernel)
        self.num_genes = num_genes
        self.embed_dim = embed_dim
        self.latent_size = latent_size
        self.g_n_feat = g_n_feat
        self.code_kernel = k
        self.image_size = image_size
        self.double_tanh = bool(double_tanh)
        self.texture_noise = bool(texture_noise)
        self.film = bool(film)
        if isinstance(margin_harmonics, bool) or int(margin_harmonics) != margin_harmonics or margin_harmonics < 0:
            raise ValueError(f"margin_harmonics must be an int >= 0 (0: no margin lobes), got {margin_harmonics!r}")
        self.margin_harmonics = int(margin_harmonics)
        if not prior_noise >= 0:
            raise ValueError(f"prior_noise must be >= 0, got {prior_noise!r}")
        self.prior_noise = float(prior_noise)

        g = g_n_feat
        stage_channels = [16 * g, 8 * g, 4 * g, 2 * g]  # synthesis-block widths, coarse -> fine

        self.gene_encoder = GeneEncoder(num_genes, embed_dim)
        self.prior_projection: nn.Linear | None = None
        if phenotype_prior is not None:
            w = torch.as_tensor(np.asarray(phenotype_prior[0], dtype=np.float32))
            c = torch.as_tensor(np.asarray(phenotype_prior[1], dtype=np.float32)).reshape(-1)
            if w.ndim != 2 or w.shape[1] != num_genes or c.shape[0] != w.shape[0]:
                raise ValueError(
                    f"phenotype_prior must be ((F, {num_genes}), (F,)), got {tuple(w.shape)} and {tuple(c.shape)}"
                )
            self.register_buffer("prior_weight", w)
            self.register_buffer("prior_bias", c)
            self.prior_projection = nn.Linear(w.shape[0], embed_dim, bias=False)
        self.code_projections = nn.ModuleList(CodeProjection(embed_dim + latent_size, c, k) for c in stage_channels)

        enc_channels = [g, 2 * g, 4 * g, 8 * g, 16 * g]  # B0 .. B4
        enc: list[nn.Module] = [Convolution(2, 1, g, strides=1, kernel_size=3, act=None, norm="batch", bias=True)]
        for c_in, c_out in zip(enc_channels[:-1], enc_channels[1:]):
            enc.append(Convolution(2, c_in, c_out, strides=2, kernel_size=3, act=None, norm="batch", bias=True))
        self.background_encoder = nn.ModuleList(enc)

        film_features = embed_dim + latent_size if self.film else 0
        self.synthesis_blocks = nn.ModuleList(SynthesisBlock(c, film_features) for c in stage_channels)
        self.upsample_blocks = nn.ModuleList(_upsample_block(c) for c in stage_channels)
        out_channels = 3 if self.texture_noise else 2
        self.head = nn.Sequential(Convolution(2, g, out_channels, kernel_size=3, conv_only=True, bias=False), nn.Tanh())
        if self.texture_noise:
            proj = torch.randn(image_size * image_size, latent_size, generator=torch.Generator().manual_seed(0))
            self.register_buffer("noise_projection", proj / latent_size**0.5, persistent=False)
        if self.margin_harmonics:
            kh = self.margin_harmonics
            self.margin_amplitude = nn.Linear(embed_dim + latent_size, kh)
            q = torch.randn(2 * kh, latent_size, generator=torch.Generator().manual_seed(2))
            self.register_buffer("harmonic_projection", q / q.norm(dim=1, keepdim=True), persistent=False)
            self.register_buffer("harmonic_basis", _radial_harmonics(image_size, kh), persistent=False)

    def margin_lobes(self, u: Tensor, z: Tensor) -> Tensor:
        """(B, 1, S, S) lobes added to the mask logit: amplitudes from ``u = cat(e, z)``, phases from ``z``."""
        amp = F.softplus(8.0 * self.margin_amplitude(u) - 1.0).repeat_interleave(2, dim=1) / 4  # (B, 2K)
        phase = (z.to(self.harmonic_projection.dtype) @ self.harmonic_projection.T).view(-1, self.margin_harmonics, 2)
        coeff = amp * F.normalize(phase, dim=2).flatten(1).to(amp.dtype)  # unit (cos, sin) pairs
        return torch.einsum("bk,kxy->bxy", coeff, self.harmonic_basis.to(amp.dtype))[:, None]

    def forward(self, rna: Tensor, z: Tensor, base: Tensor) -> GeneratorOutput:
        """Synthesise a nodule for each (rna, z) inside its background patch ``base``.

        Args:
            rna: (B, G) transformed expression vectors.
            z: (B, L) noise, normally N(0, I).
            base: (B, 1, S, S) nodule-free background patch in [-1, 1].
        """
        if rna.ndim != 2 or rna.shape[1] != self.num_genes:
            raise ValueError(f"rna must be (B, {self.num_genes}), got {tuple(rna.shape)}")
        return self.synthesise(self.embed(rna), z, base)

    def embed(self, rna: Tensor) -> Tensor:
        """The gene embedding ``e`` (B, E) of (B, G) expression vectors: the encoder, plus the prior's scores."""
        e = self.gene_encoder(rna)
        if self.prior_projection is not None:
            scores = rna.to(self.prior_weight.dtype) @ self.prior_weight.T + self.prior_bias
            if self.training and self.prior_noise > 0:  # smooths G's response to the scores (train mode only)
                scores = scores + self.prior_noise * torch.randn_like(scores)
            e = e + self.prior_projection(scores.to(e.dtype))
        return e

    def encode_background(self, base: Tensor) -> list[Tensor]:
        """Everything that depends on ``base`` only: B0..B4 and the stage-1 convolution of B4.

        Args:
            base: (B, 1, S, S) background patches.

        Returns:
            ``[B0, B1, B2, B3, B4, convs1(B4)]``; pass it to :meth:`synthesise` to reuse it for many
            (e, z) of the same background (e.g. the radiogenomic maps).
        """
        feats = []
        h = base
        for block in self.background_encoder:
            h = block(h)
            feats.append(h)  # B0 (g@S) .. B4 (16g@k)
        feats.append(self.synthesis_blocks[0].convs(feats[4]))
        return feats

    def synthesise(
        self, e: Tensor, z: Tensor, base: Tensor, background: list[Tensor] | None = None
    ) -> GeneratorOutput:
        """The generator from the gene embedding on: ``G`` with ``embed(rna)`` replaced by ``e``.

        Args:
            e: (B, E) gene embeddings.
            z: (B, L) noise.
            base: (B, 1, S, S) background patches.
            background: :meth:`encode_background` of ``base`` (computed when None).

        Returns:
            the :class:`GeneratorOutput` (its ``embedding`` is ``e``).
        """
        s = self.image_size
        if e.ndim != 2 or e.shape[1] != self.embed_dim:
            raise ValueError(f"e must be (B, {self.embed_dim}), got {tuple(e.shape)}")
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"z must be (B, {self.latent_size}), got {tuple(z.shape)}")
        if base.ndim != 4 or tuple(base.shape[1:]) != (1, s, s):
            raise ValueError(f"base must be (B, 1, {s}, {s}), got {tuple(base.shape)}")

        u = torch.cat([e, z], dim=1)
        codes = [proj(u) for proj in self.code_projections]  # 16g@k, 8g@k, 4g@k, 2g@k
        feats = self.encode_background(base) if background is None else background

        # stage 1: background features through the convs, the code map is skip and style
        film_u = u if self.film else None
        h, switch = self.synthesis_blocks[0].mix(feats[5], codes[0], codes[0], film_u)
        h = self.upsample_blocks[0](h)
        for j in range(1, 4):
            h, switch = self.synthesis_blocks[j](h, feats[4 - j], codes[j], film_u)
            h = self.upsample_blocks[j](h)

        if self.margin_harmonics:  # the mask logit is needed before its tanh
            raw = self.head[0](h)
            out = self.head[1](raw)
        else:
            out = self.head(h)
        fg, t = out[:, 0:1], out[:, 1:2]
        if self.texture_noise:
            eps = (z.to(self.noise_projection.dtype) @ self.noise_projection.T).view(-1, 1, s, s).to(fg.dtype)
            fg = fg + 0.25 * torch.sigmoid(3.0 * out[:, 2:3]) * eps  # out is tanh'd: 3x widens the sigmoid's range
        clean = None
        if self.margin_harmonics:
            clean, t = t, torch.tanh(raw[:, 1:2] + self.margin_lobes(u, z))
        alpha = (torch.tanh(t) + 1) / 2 if self.double_tanh else (t + 1) / 2
        image = base * (1 - alpha) + fg * alpha
        return GeneratorOutput(
            embedding=e, image=image, mask=t, switch=switch.mean(dim=1, keepdim=True), alpha=alpha, clean_mask=clean,
            foreground=fg,
        )
