"""Runs and times a plain-loop variant (bare or proto) in this process."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import count_flops, peak_rss_mib

from steps import SEED
from steps.batches import load_arrays
from steps.nets import usage


def run_loop_variant(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """``--warmup`` untimed then ``--iters`` timed steps of variant ``name`` (``"bare"`` or ``"proto"``).

    Returns:
        The worker's result: per-step wall, CPU and system seconds, minor faults, optional FLOPs and
        profile path, and the peak RSS.
    """
    arrays = load_arrays(args.data)
    if name == "bare":
        from steps.bare import make_bare_step as make_step
    else:  # imported only here: scipy is the prototype's, not the other variants'
        from steps.proto import make_proto_step as make_step
    step = make_step(args, arrays)
    torch.manual_seed(SEED)
    for _ in range(args.warmup):
        step()
    wall, cpu, sys_s, faults = [], [], [], []
    for _ in range(args.iters):
        t0, c0, (s0, f0) = time.perf_counter(), time.process_time(), usage()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        s1, f1 = usage()
        sys_s.append(s1 - s0)
        faults.append(f1 - f0)
    res: dict[str, Any] = {"variant": name, "step_s": wall, "cpu_s": cpu, "sys_s": sys_s, "minflt": faults}
    if args.flops_worker:
        res["flops"] = count_flops(step)
    if args.profile:
        res["profile"] = profile_to_file(lambda: [step() for _ in range(2)], f"{args.profile}.{name}.txt")
    res["peak_rss_mib"] = peak_rss_mib()
    return res


def profile_to_file(fn: Callable[[], Any], path: str) -> str:
    """Run ``fn`` under ``torch.profiler`` (CPU) and write its op table (top 30 by self CPU time) to ``path``.

    Returns:
        ``path``.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return write_op_table(prof, path)


def write_op_table(prof: Any, path: str) -> str:
    """Write a finished profiler's op table (top 30 by self CPU time) to ``path``; returns ``path``."""
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    Path(path).write_text(table)
    return path
