"""DCGAN-style weight initialisation (spec §6)."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ["init_weights"]


def init_weights(module: nn.Module) -> None:
    """Initialise one module in place; use it as ``net.apply(init_weights)``.

    Convolution and linear weights ~ N(0, 0.02); normalisation weights ~ N(1, 0.02); every bias 0.
    (The prototype used orthogonal conv/linear weights; the spec asks for DCGAN style.) Modules of
    other kinds are left as they are.
    """
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (_NormBase, nn.GroupNorm, nn.LayerNorm)):
        if getattr(module, "weight", None) is not None:
            nn.init.normal_(module.weight, 1.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
