"""RG-GAN discriminator (docs/spec.md, section "Model"): three least-squares heads I, IS and ISC.

With D = ``d_n_feat``, E = ``embed_dim``, S = ``image_size``, k = S/16::

    I-path   image (1 ch)            -> 4 x [Conv s2, no bias] D, 2D, 4D, 8D @ k   (BN on all but the first,
    IS-path  cat(image, mask) (2 ch) -> same, own weights                          LeakyReLU 0.2 everywhere)
    ISC      cat(tile(c, k x k), IS features) -> Conv3x3 s1 (8D+E -> 8D, no bias) + BN + LeakyReLU 0.2
    heads    Conv k x k (8D -> 1, with bias) on ISC / I / IS features -> flattened logits (B,)

The condition ``c`` is the generator's gene embedding ``e`` (E values, the paper's design) or, with
``condition_dim`` set, the patient's expression vector itself (``condition_dim`` genes) mapped by D's
own ``condition_encoder`` (Linear -> LeakyReLU 0.2, E outputs): a condition G cannot move, as in
ordinary conditional GANs.

``augment`` turns on differentiable augmentation (DiffAugment, Zhao et al. 2020) in training mode:
every call draws, per sample, one of the 8 flips/transposes of the square and an integer translation of
up to ``S/8`` pixels (border replicated), applied jointly to image and mask before both paths. Real,
wrong and fake pairs are augmented alike, in the D and the G step, so D cannot memorise the few real
nodules while G still learns the un-augmented distribution. Geometric only: intensity augmentations
would change the HU phenotypes the map measures.

``isc_head="projection"`` replaces the ISC path by a projection head (Miyato & Koyama 2018): with
``phi`` the IS features summed over the k x k code map (8D values) and ``c`` the encoded condition,
``isc = w . phi + b + <V c, phi>``. The condition meets the image in a per-sample inner product after
the last BatchNorm, so the match score of one pair does not depend on the other pairs of its batch.
With ``"concat"`` (the paper) the tiled condition goes through a BatchNorm layer with the image features,
and the head can tell a batch of matched pairs from a batch of mismatched ones by the batch statistics
alone, which gives the generator no per-sample gene signal.

No sigmoid (LSGAN), no spectral norm. Each call is its own BatchNorm forward, so callers must keep
real / wrong / fake pairs in separate calls (as the paper trains) rather than concatenating them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import Tensor, nn

from rggan.networks._sizes import check_positive, resolve_code_kernel

__all__ = ["DiscriminatorOutput", "RGDiscriminator", "dihedral_translate"]


@dataclass
class DiscriminatorOutput:
    """Logits of the three heads, each (B,).

    Attributes:
        isc: image-mask-gene match (ISC head).
        i: image realism (I head).
        is_: image-mask realism (IS head; ``is`` is a Python keyword).
    """

    isc: Tensor
    i: Tensor
    is_: Tensor


def _encoder(in_channels: int, d: int, kernel_size: int) -> nn.Sequential:
    chans = [in_channels, d, 2 * d, 4 * d, 8 * d]
    layers = []
    for n, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:])):
        layers.append(
            Convolution(
                2,
                c_in,
                c_out,
                strides=2,
                kernel_size=kernel_size,
                padding=1,
                act=("leakyrelu", {"negative_slope": 0.2, "inplace": True}),
                norm=None if n == 0 else "batch",
                bias=False,
            )
        )
    return nn.Sequential(*layers)


def dihedral_translate(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Random flip/transpose (one of 8) and integer translation per sample of (B, C, S, S) ``x``.

    One ``grid_sample`` whose sampling points fall exactly on pixel centres (no interpolation: pixel
    values are copied), border pixels replicated. Differentiable with respect to ``x``.

    Args:
        x: (B, C, S, S) batch; all channels of a sample get the same transform.
        max_shift: largest translation in pixels along each axis (0: none).
        generator: optional random generator (default: torch's global one).
    """
    b, s = x.shape[0], x.shape[-1]
    dev = x.device
    opts = {"device": dev, "generator": generator}
    flip = torch.randint(0, 2, (b, 2), **opts).float() * 2 - 1  # +-1 per axis
    swap = torch.randint(0, 2, (b,), **opts).bool()
    shift = torch.randint(-max_shift, max_shift + 1, (b, 2), **opts).float() * (2.0 / s)
    theta = torch.zeros(b, 2, 3, device=dev)
    eye = torch.tensor([[1.0, 0.0], [0.0, 1.0]], device=dev)
    perm = torch.where(swap[:, None, None], eye.flip(1), eye)  # transpose swaps the axes
    theta[:, :, :2] = perm * flip[:, :, None]
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="nearest", padding_mode="border", align_corners=False)


class RGDiscriminator(nn.Module):
    """The RG-GAN discriminator: (image, mask, embedding) -> :class:`DiscriminatorOutput`.

    Args:
        embed_dim: E, width of the generator's gene embedding.
        d_n_feat: D; the encoders have D, 2D, 4D, 8D channels.
        image_size: S, a power of two >= 32.
        code_kernel: k; must equal ``image_size // 16`` (default: derived).
        kernel_size: 3 (the MONAI prototype, 3x3 s2 p1, about 6.15 M parameters at the defaults) or 4
            (the original research code, 4x4 s2 p1, about 8.56 M); both halve the size exactly.
        condition_dim: None (default, the paper): the condition is G's embedding, E values. An int:
            the condition is the expression vector of that many genes, encoded by D's own layer.
        augment: differentiable geometric augmentation of every input pair in training mode
            (:func:`dihedral_translate`, translation up to ``image_size // 8``).
        isc_head: ``"concat"`` (the paper: tiled condition + Conv + BatchNorm) or ``"projection"``
            (per-sample inner product of the condition with the pooled IS features).

    Raises:
        ValueError: inconsistent sizes or a kernel size other than 3 or 4.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        d_n_feat: int = 64,
        image_size: int = 128,
        code_kernel: int | None = None,
        kernel_size: int = 3,
        condition_dim: int | None = None,
        augment: bool = False,
        isc_head: str = "concat",
    ) -> None:
        super().__init__()
        check_positive(embed_dim=embed_dim, d_n_feat=d_n_feat)
        if condition_dim is not None:
            check_positive(condition_dim=condition_dim)
        if kernel_size not in (3, 4):
            raise ValueError(
                f"kernel_size must be 3 (MONAI prototype) or 4 (original research code), got {kernel_size}"
            )
        if isc_head not in ("concat", "projection"):
            raise ValueError(f"isc_head must be 'concat' (the paper) or 'projection', got {isc_head!r}")
        k = resolve_code_kernel(image_size, code_kernel)
        self.isc_head = isc_head
        self.embed_dim = embed_dim
        self.d_n_feat = d_n_feat
        self.image_size = image_size
        self.code_kernel = k
        self.kernel_size = kernel_size
        self.condition_dim = embed_dim if condition_dim is None else int(condition_dim)
        self.augment = bool(augment)
        self.condition_encoder = (
            None
            if condition_dim is None
            else nn.Sequential(nn.Linear(self.condition_dim, embed_dim), nn.LeakyReLU(0.2))
        )

        d = d_n_feat
        self.i_path = _encoder(1, d, kernel_size)
        self.is_path = _encoder(2, d, kernel_size)
        if isc_head == "concat":
            self.isc_joint = Convolution(
                2,
                8 * d + embed_dim,
                8 * d,
                kernel_size=3,
                act=("leakyrelu", {"negative_slope": 0.2, "inplace": True}),
                norm="batch",
                bias=False,
            )
        else:
            self.isc_projection = nn.Linear(embed_dim, 8 * d, bias=False)
        heads = ("isc", "i", "is_") if isc_head == "concat" else ("i", "is_")
        self.heads = nn.ModuleDict(
            {name: Convolution(2, 8 * d, 1, kernel_size=k, padding=0, conv_only=True, bias=True) for name in heads}
        )
        if isc_head == "projection":
            self.heads["isc"] = nn.Linear(8 * d, 1)

    def forward(self, image: Tensor, mask: Tensor, embedding: Tensor) -> DiscriminatorOutput:
        """Score a batch.

        Args:
            image: (B, 1, S, S) CT in [-1, 1].
            mask: (B, 1, S, S) mask in [-1, 1].
            embedding: the condition: (B, E) gene embedding, or (B, ``condition_dim``) expression
                vectors when D has its own condition encoder. An embedding is used as given: the
                discriminator loss must pass it **detached** (D must not train the generator's
                encoder), while the generator loss passes it attached so that the encoder learns
                through the ISC head.
        """
        s = self.image_size
        for name, x in (("image", image), ("mask", mask)):
            if x.ndim != 4 or tuple(x.shape[1:]) != (1, s, s):
                raise ValueError(f"{name} must be (B, 1, {s}, {s}), got {tuple(x.shape)}")
        if embedding.ndim != 2 or embedding.shape[1] != self.condition_dim:
            what = "embedding" if self.condition_encoder is None else "expression vector"
            raise ValueError(f"the condition ({what}) must be (B, {self.condition_dim}), got {tuple(embedding.shape)}")
        if self.condition_encoder is not None:
            embedding = self.condition_encoder(embedding)
        if self.augment and self.training:
            both = dihedral_translate(torch.cat([image, mask], dim=1), max(s // 8, 1))
            image, mask = both[:, :1], both[:, 1:]

        f_i = self.i_path(image)
        f_is = self.is_path(torch.cat([image, mask], dim=1))
        if self.isc_head == "projection":
            phi = f_is.sum(dim=(2, 3))
            isc = self.heads["isc"](phi).flatten() + (self.isc_projection(embedding) * phi).sum(dim=1)
        else:
            k = self.code_kernel
            tiled = embedding[:, :, None, None].expand(-1, -1, k, k)
            isc = self.heads["isc"](self.isc_joint(torch.cat([tiled, f_is], dim=1))).flatten()
        return DiscriminatorOutput(
            isc=isc,
            i=self.heads["i"](f_i).flatten(),
            is_=self.heads["is_"](f_is).flatten(),
        )
