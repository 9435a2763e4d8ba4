"""(b) The bare loop: the product's networks, losses and optimiser in a plain PyTorch loop.

No Ignite, no MONAI engine or data pipeline: the bundle's ``Adam(fused=True)``, the D loss backward per
pair as the trainer does it (``--d-single-backward``: one backward) and a one-pass EMA.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from steps.nets import autocast, build, generate

EMA_DECAY = 0.999


def make_bare_step(args: argparse.Namespace, arrays: dict) -> Callable[[], list[float]]:
    """The bare loop's step (see the module), over its own networks, ``Adam(fused=True)`` and batches of ``arrays``.

    Returns:
        ``step()``: trains one batch, returns ``[G loss, D loss]``.
    """
    from rggan.losses import DiscriminatorLoss, GeneratorLoss

    g, d, g_run, d_run, g_opt, d_opt, ema, batches = build(arrays, args, fused=True)
    d_loss, g_loss = DiscriminatorLoss(), GeneratorLoss(erosion=5)
    ema_p, live_p = list(ema.parameters()), list(g.parameters())
    ema_b, live_b = list(ema.buffers()), list(g.buffers())

    def step() -> list[float]:
        b, fake = generate(batches, g, d, g_run, args)
        d_opt.zero_grad(set_to_none=not args.no_set_to_none)
        if not args.d_single_backward:  # as the trainer: 4 D calls (BN statistics per pair), each graph freed early
            with autocast(args):
                d_out = d_loss(
                    d_run, b["image"], b["mask"], b["wrong_image"], b["wrong_mask"], fake,
                    backward=lambda t: t.backward(),
                )  # fmt: skip
        else:
            with autocast(args):
                d_out = d_loss(d_run, b["image"], b["mask"], b["wrong_image"], b["wrong_mask"], fake)
            d_out["total"].backward()
        d_opt.step()
        g_opt.zero_grad(set_to_none=not args.no_set_to_none)
        with autocast(args):
            g_out = g_loss(d_run, fake, b["base"])
        g_out["total"].backward()
        g_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_p, live_p, 1.0 - EMA_DECAY)
            for e, v in zip(ema_b, live_b):
                e.copy_(v)
        return torch.stack([g_out["total"].detach().float(), d_out["total"].detach().float()]).tolist()

    return step
