"""DCGAN-style weight initialisation (docs/spec.md, section "Model").

Convolution and linear weights ~ N(0, 0.02), batch-norm weights ~ N(1, 0.02), biases 0: MONAI's
:func:`monai.networks.utils.normal_init`. The original RG-GAN code used orthogonal convolution/linear
weights instead (docs/spec.md, section "Differences from the paper and the prototype").
"""

from __future__ import annotations

from monai.networks.utils import normal_init
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torch.nn.modules.conv import _ConvNd

__all__ = ["DCGAN_STD", "init_weights"]

#: standard deviation of every initial weight
DCGAN_STD = 0.02

_NAMES = ("Conv", "Linear", "BatchNorm")  # what normal_init recognises, by class name


def _monai_handles(module: nn.Module) -> bool:
    """Whether :func:`normal_init` initialises ``module`` exactly as the DCGAN rule asks.

    It dispatches on the class name, so it is used for torch's convolution, linear and affine batch-norm
    layers (and subclasses that keep those words in their names); it would fail on a batch norm without
    affine parameters.
    """
    if not isinstance(module, (_ConvNd, nn.Linear, _BatchNorm)) or getattr(module, "weight", None) is None:
        return False
    return any(n in type(module).__name__ for n in _NAMES)


def init_weights(module: nn.Module) -> None:
    """Initialise one module in place; use it as ``net.apply(init_weights)``.

    Convolution and linear weights ~ N(0, 0.02); normalisation weights ~ N(1, 0.02); every bias 0.
    Convolution, linear and batch-norm layers go through MONAI's :func:`normal_init`; the other affine
    normalisations (instance, group and layer norm), which it skips, get the same rule here. Modules of
    other kinds are left as they are.

    Args:
        module: one module (``nn.Module.apply`` visits every submodule).
    """
    if _monai_handles(module):
        normal_init(module, std=DCGAN_STD)
        return
    # what normal_init skips: instance/group/layer norm, and subclasses whose names it does not recognise
    if isinstance(module, (_ConvNd, nn.Linear)):
        mean = 0.0
    elif isinstance(module, (_NormBase, nn.GroupNorm, nn.LayerNorm)):
        mean = 1.0
    else:
        return
    if getattr(module, "weight", None) is not None:
        nn.init.normal_(module.weight, mean, DCGAN_STD)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
