"""RG-GAN networks: :class:`RGGenerator`, :class:`RGDiscriminator`, :func:`init_weights`.

:func:`parameter_table` lists trainable parameters per part (used by ``rggan info``).
"""

from __future__ import annotations

import torch

from rggan.networks.discriminator import DiscriminatorOutput, RGDiscriminator
from rggan.networks.generator import GeneratorOutput, RGGenerator
from rggan.networks.init import init_weights

__all__ = [
    "RGGenerator",
    "RGDiscriminator",
    "GeneratorOutput",
    "DiscriminatorOutput",
    "init_weights",
    "parameter_table",
]

_G_PARTS = ("gene_encoder", "code_projections", "background_encoder", "synthesis_blocks", "upsample_blocks", "head")
_D_PARTS = ("i_path", "is_path", "isc_joint", "heads")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_table(
    num_genes: int = 5172,
    *,
    embed_dim: int = 128,
    latent_size: int = 10,
    g_n_feat: int = 32,
    d_n_feat: int = 64,
    image_size: int = 128,
    code_kernel: int | None = None,
    d_kernel_size: int = 3,
) -> list[tuple[str, int]]:
    """Trainable parameter counts per part of both networks, for the given sizes.

    The networks are built on the ``meta`` device, so no memory is allocated and the call is fast
    even at the prototype's sizes. Every parameter counted is used in the forward pass.

    Returns:
        ``[(part, count), ...]``: ``generator.<part>`` rows, ``generator`` (total),
        ``discriminator.<part>`` rows, ``discriminator`` (total).
        With the defaults (5,172 genes): generator 43,431,040; discriminator 6,150,339
        (``d_kernel_size=4``: 8,560,131).
    """
    with torch.device("meta"):
        g = RGGenerator(
            num_genes,
            embed_dim=embed_dim,
            latent_size=latent_size,
            g_n_feat=g_n_feat,
            code_kernel=code_kernel,
            image_size=image_size,
        )
        d = RGDiscriminator(
            embed_dim=embed_dim,
            d_n_feat=d_n_feat,
            image_size=image_size,
            code_kernel=code_kernel,
            kernel_size=d_kernel_size,
        )
    rows = [(f"generator.{p}", _count(getattr(g, p))) for p in _G_PARTS]
    rows.append(("generator", _count(g)))
    rows += [(f"discriminator.{p}", _count(getattr(d, p))) for p in _D_PARTS]
    rows.append(("discriminator", _count(d)))
    return rows
