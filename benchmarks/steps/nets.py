"""What the plain loops (bare and proto) share: networks, optimisers, EMA copy, autocast and a step's start."""

from __future__ import annotations

import argparse
import contextlib
import copy
import resource
from typing import Any, NamedTuple

import torch
from common import PAPER, paper_generator

from steps import SEED
from steps.batches import Batches


class Loop(NamedTuple):
    """What a plain loop trains: the nets (``g_run``/``d_run`` compiled with ``--compile``), optimisers, EMA, data."""

    g: torch.nn.Module
    d: torch.nn.Module
    g_run: Any
    d_run: Any
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    ema: torch.nn.Module
    batches: Batches


def build(arrays: dict, args: argparse.Namespace, fused: bool) -> Loop:
    """G and D at the paper's sizes (DCGAN init, seeded), their Adam optimisers, an EMA copy of G and the batches.

    Args:
        arrays: the output of :func:`steps.batches.load_arrays`.
        args: the benchmark's options (``channels_last``, ``compile``).
        fused: ``Adam(fused=True)``, the bundle's optimiser (bare loop); otherwise the default Adam (prototype).

    Returns:
        The :class:`Loop`.
    """
    from rggan.networks import RGDiscriminator, init_weights

    g = paper_generator(arrays["rna"].shape[1], SEED)
    d = RGDiscriminator(embed_dim=PAPER["embed_dim"], d_n_feat=PAPER["d_n_feat"], image_size=PAPER["image_size"]).apply(
        init_weights
    )
    if args.channels_last:
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    g_opt = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=fused or None)
    d_opt = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=fused or None)
    ema = copy.deepcopy(g).requires_grad_(False)
    g_run, d_run = (torch.compile(g), torch.compile(d)) if args.compile else (g, d)
    return Loop(g, d, g_run, d_run, g_opt, d_opt, ema, Batches(arrays, PAPER["batch_size"], SEED, args.channels_last))


def usage() -> tuple[float, int]:
    """(system CPU seconds, minor page faults) of this process so far: the cost of fresh memory pages."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_stime, ru.ru_minflt


def autocast(args: argparse.Namespace) -> Any:
    """bfloat16 autocast on CPU with ``--amp``, else a no-op context."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if args.amp else contextlib.nullcontext()


def generate(batches: Batches, g: torch.nn.Module, d: torch.nn.Module, g_run: Any, args: argparse.Namespace) -> tuple:
    """The start every step shares: a batch, fresh latents, both nets in train mode, one G forward.

    Returns:
        ``(batch, generator output)``.
    """
    b = batches()
    z = torch.randn(b["image"].shape[0], PAPER["g_ls"])
    g.train(), d.train()
    with autocast(args):
        return b, g_run(b["rna"], z, b["base"])
