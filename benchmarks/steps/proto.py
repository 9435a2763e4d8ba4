"""(c) A re-creation of the prototype's training step on the product's networks (docs/performance.md).

What it keeps of the prototype: the G loss runs D twice on the fakes (the first result unused, V2), the
background mask is eroded on the host per sample (``.cpu().numpy()`` + a 5x5 ``scipy.ndimage.binary_erosion``
with cv2's default border, V0/V1), one backward of the summed D loss, labels allocated per step, the losses
``.item()``-ed for logging, ``torch.optim.Adam`` with its defaults (a per-tensor loop on CPU) and the V1
per-parameter EMA loop (parameters only).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from common import PAPER
from scipy import ndimage

from steps.nets import autocast, build, generate

EMA_DECAY = 0.999
#: the loss coefficients (c_isc, c_i, c_is, c_bg) of the paper
C_ISC, C_I, C_IS, C_BG = 10.0, 8.0, 1.0, 100.0
_KERNEL = np.ones((5, 5), dtype=bool)


def erode_on_host(mask: torch.Tensor) -> torch.Tensor:
    """The background mask ``mask < 0``, eroded per sample on the host as the prototype did (V0/V1).

    ``cv2.erode(M, ones(5, 5))`` with cv2's default border (no erosion at the edge), by scipy.

    Args:
        mask: (B, 1, S, S) generated mask channel.

    Returns:
        The eroded {0, 1} float32 mask on ``mask``'s device.
    """
    m = (mask.detach().float().cpu().numpy() < 0).astype(np.uint8)  # .float(): numpy has no bfloat16
    out = np.empty_like(m)
    for i in range(m.shape[0]):
        out[i, 0] = ndimage.binary_erosion(m[i, 0], structure=_KERNEL, border_value=1)
    return torch.from_numpy(out.astype(np.float32)).to(mask.device)


def _d_loss(d_run: Callable, b: dict, fake, ones: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The prototype's D loss: four separate D calls, 12 weighted MSE terms."""
    e = fake.embedding.detach()
    real = d_run(b["image"], b["mask"], e)
    wrong = d_run(b["wrong_image"], b["wrong_mask"], e)
    wseg = d_run(b["image"], b["wrong_mask"], e)
    fk = d_run(fake.image.detach(), fake.mask.detach(), e)
    return (
        C_ISC * F.mse_loss(real.isc, ones)
        + C_I * F.mse_loss(real.i, ones)
        + C_IS * F.mse_loss(real.is_, ones)
        + C_ISC * F.mse_loss(wrong.isc, zeros)
        + C_I * F.mse_loss(wrong.i, ones)
        + C_IS * F.mse_loss(wrong.is_, ones)
        + C_ISC * F.mse_loss(wseg.isc, zeros)
        + C_I * F.mse_loss(wseg.i, ones)
        + C_IS * F.mse_loss(wseg.is_, zeros)
        + C_ISC * F.mse_loss(fk.isc, zeros)
        + C_I * F.mse_loss(fk.i, zeros)
        + C_IS * F.mse_loss(fk.is_, zeros)
    )


def _g_loss(d_run: Callable, b: dict, fake, ones: torch.Tensor) -> torch.Tensor:
    """The prototype's G loss: the redundant first D forward (V2), then the one that is used, plus the background."""
    _unused = d_run(fake.image, fake.mask, fake.embedding)  # noqa: F841
    out = d_run(fake.image, fake.mask, fake.embedding)
    errg = C_ISC * F.mse_loss(out.isc, ones) + C_I * F.mse_loss(out.i, ones) + C_IS * F.mse_loss(out.is_, ones)
    m = erode_on_host(fake.mask)
    return errg + C_BG * F.l1_loss(fake.image * m, b["base"] * m)


def make_proto_step(args: argparse.Namespace, arrays: dict) -> Callable[[], list[float]]:
    """The prototype's step (see the module), over its own networks, the default Adam and batches of ``arrays``.

    Returns:
        ``step()``: trains one batch, returns ``[G loss, D loss]`` (as host floats, like the prototype's logging).
    """
    g, d, g_run, d_run, g_opt, d_opt, ema, batches = build(arrays, args, fused=False)
    bs = PAPER["batch_size"]  # the prototype sizes its labels with the loader's batch size

    def step() -> list[float]:
        b, fake = generate(batches, g, d, g_run, args)
        ones, zeros = torch.ones(bs), torch.zeros(bs)
        d_opt.zero_grad()
        with autocast(args):
            errd = _d_loss(d_run, b, fake, ones, zeros)
        errd.backward()
        d_opt.step()
        g_opt.zero_grad()
        with autocast(args):
            errg = _g_loss(d_run, b, fake, ones)
        errg.backward()
        g_opt.step()
        with torch.no_grad():  # V1 "ReparameterizationTrick" Update: per parameter, parameters only
            for pe, p in zip(ema.parameters(), g.parameters()):
                pe.mul_(EMA_DECAY).add_(p.detach(), alpha=1.0 - EMA_DECAY)
        return [errg.item(), errd.item()]  # StatsHandler logged both every iteration

    return step
