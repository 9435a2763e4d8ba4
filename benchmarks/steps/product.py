"""(a) The product path: the bundle's training config, run by ``RGGanTrainer`` with every bundle handler.

``bundle/configs/train.yaml`` (plus ``paper.yaml`` with ``--recipe paper``) is loaded with MONAI's
``ConfigParser``; only ``dataset_dir``/``output_dir``/``epochs``/``resume`` (and the optional
``--workers``/``--amp``/``--channels-last`` overrides) are changed. An iteration is timed from Ignite's
``GET_BATCH_STARTED`` to the end of the last ``ITERATION_COMPLETED`` handler.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from common import REPO, count_flops, peak_rss_mib

from steps.batches import load_arrays
from steps.loop import write_op_table
from steps.nets import usage


def bundle_parser(args: argparse.Namespace, out_dir: str) -> Any:
    """The bundle's training config with the benchmark's overrides, parsed.

    Args:
        args: the benchmark's options (``data``, ``epochs``, ``recipe``, ``workers``, ``cpu_allocator``, ``amp``,
            ``channels_last``).
        out_dir: the run's output folder.

    Returns:
        A parsed ``monai.bundle.ConfigParser``.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    configs = [str(REPO / "bundle" / "configs" / "train.yaml")]
    if args.recipe == "paper":  # the networks and losses of (b) and (c): like for like
        configs.append(str(REPO / "bundle" / "configs" / "paper.yaml"))
    parser.read_config(configs)
    overrides: dict[str, Any] = {
        "dataset_dir": args.data,
        "output_dir": out_dir,
        "epochs": args.epochs,
        "resume": False,
    }
    if args.workers is not None:
        overrides["num_workers"] = args.workers
    if getattr(args, "cpu_allocator", None) is not None:
        overrides["cpu_allocator"] = args.cpu_allocator
    # the bundle's own switch: bfloat16 autocast on CPU with --amp; float32 otherwise (train.yaml's default
    # `auto` would pick bfloat16 on an AMX CPU, and (b)/(c) run float32 unless --amp)
    overrides["amp"] = bool(args.amp)
    if args.channels_last:
        to_device = ".to(@device, memory_format=torch.channels_last)"
        for key, net in (("gnetwork", "network_def"), ("dnetwork", "discriminator_def")):
            overrides[key] = f"$@{net}.apply(rggan.networks.init_weights){to_device}"
    parser.update(overrides)
    parser.parse()
    return parser


class IterationTimer:
    """Timestamps, CPU/system seconds and minor faults of each iteration and epoch, from Ignite events."""

    def __init__(self) -> None:
        self.t: dict[str, list] = {"get": [], "got": [], "done": [], "epoch_start": [], "epoch_done": []}
        self.cpu: list[tuple[int, float]] = []
        self.sys_s: list[tuple[int, float]] = []
        self.faults: list[tuple[int, int]] = []
        self._c0, self._u0 = 0.0, (0.0, 0)

    def handler(self, name: str) -> Callable[[Any], None]:
        """The event handler that records mark ``name`` (``get``/``got``/``done``/``epoch_start``/``epoch_done``)."""

        def h(engine: Any) -> None:
            key = engine.state.epoch if name.startswith("epoch") else engine.state.iteration
            self.t[name].append((key, time.perf_counter()))
            if name == "get":
                self._c0, self._u0 = time.process_time(), usage()
            elif name == "done":
                self.cpu.append((key, time.process_time() - self._c0))
                (s0, f0), (s1, f1) = self._u0, usage()
                self.sys_s.append((key, s1 - s0))
                self.faults.append((key, f1 - f0))

        return h

    def attach_iteration(self, trainer: Any) -> None:
        """Register the per-iteration marks; after every bundle handler, so "done" follows the last of them."""
        from ignite.engine import Events

        trainer.add_event_handler(Events.GET_BATCH_STARTED, self.handler("get"))
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, self.handler("got"))
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.handler("done"))

    def attach_epoch(self, trainer: Any) -> None:
        """Register the per-epoch marks."""
        from ignite.engine import Events

        trainer.add_event_handler(Events.EPOCH_STARTED, self.handler("epoch_start"))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.handler("epoch_done"))

    def result(self, warmup: int) -> dict[str, list]:
        """Per-iteration and per-epoch figures after ``warmup`` iterations (and the first epoch)."""
        t = self.t
        # GET_BATCH_STARTED/COMPLETED fire before Ignite increments the iteration counter
        get = [x for i, x in t["get"] if i + 1 > warmup]
        got = [x for i, x in t["got"] if i + 1 > warmup]
        done = [x for i, x in t["done"] if i > warmup]
        es = [x for e, x in t["epoch_start"] if e > 1]
        ed = [x for e, x in t["epoch_done"] if e > 1]
        return {
            "step_s": [c - a for a, c in zip(get, done)],
            "data_wait_s": [b - a for a, b in zip(get, got)],
            "cpu_s": [x for i, x in self.cpu if i > warmup],
            "sys_s": [x for i, x in self.sys_s if i > warmup],
            "minflt": [x for i, x in self.faults if i > warmup],
            "epoch_s": [b - a for a, b in zip(es, ed)],
        }


def attach_paired(trainer: Any, args: argparse.Namespace) -> tuple[dict[str, dict[str, list]], dict[str, Any]]:
    """(b) and (c) steps right after each product iteration, in alternating order (``--paired``).

    The three variants then see the same machine load (paired samples); (b) and (c) have their own nets
    and optimisers.

    Returns:
        ``(paired timings, {variant: step})``; both empty without ``--paired``.
    """
    from ignite.engine import Events

    if not args.paired:
        return {}, {}
    from steps.bare import make_bare_step
    from steps.proto import make_proto_step

    arrays = load_arrays(args.data)
    others: dict[str, Any] = {"bare": make_bare_step(args, arrays), "proto": make_proto_step(args, arrays)}
    paired: dict[str, dict[str, list]] = {k: {"step_s": [], "cpu_s": []} for k in others}

    def run_others(engine: Any) -> None:
        names = list(others) if engine.state.iteration % 2 else list(others)[::-1]
        for k in names:
            t0, c0 = time.perf_counter(), time.process_time()
            others[k]()
            if engine.state.iteration > args.warmup:
                paired[k]["step_s"].append(time.perf_counter() - t0)
                paired[k]["cpu_s"].append(time.process_time() - c0)

    trainer.add_event_handler(Events.ITERATION_COMPLETED, run_others)
    return paired, others


class ProfileWindow:
    """``torch.profiler`` over the two iterations after ``--warmup`` (``--profile``)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.ctx: dict[str, Any] = {}

    def start(self, engine: Any) -> None:
        """GET_BATCH_STARTED handler (it fires before the iteration counter moves on)."""
        from torch.profiler import ProfilerActivity, profile

        if engine.state.iteration == self.warmup and "p" not in self.ctx:
            self.ctx["p"] = profile(activities=[ProfilerActivity.CPU])
            self.ctx["p"].__enter__()
            self.ctx["n"] = 0

    def stop(self, engine: Any) -> None:
        """ITERATION_COMPLETED handler: closes the profiler after two iterations."""
        if "p" in self.ctx and "done" not in self.ctx:
            self.ctx["n"] += 1
            if self.ctx["n"] == 2:
                self.ctx["p"].__exit__(None, None, None)
                self.ctx["done"] = True

    def attach(self, trainer: Any) -> None:
        """Register :meth:`start` and :meth:`stop`."""
        from ignite.engine import Events

        trainer.add_event_handler(Events.GET_BATCH_STARTED, self.start)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.stop)

    def write(self, path: str) -> str | None:
        """Write the op table to ``path`` if the window was opened; returns the path or None."""
        return write_op_table(self.ctx["p"], path) if "p" in self.ctx else None


def run_product(args: argparse.Namespace) -> dict[str, Any]:
    """Train ``--epochs`` epochs through the bundle and time every iteration.

    Returns:
        The worker's result: per-iteration step, data-wait, CPU and system seconds, minor faults, epoch
        times, the run's sizes, optional profile and paired timings, and the peak RSS.
    """
    out_dir = tempfile.mkdtemp(prefix="rggan_bench_train_")
    parser = bundle_parser(args, out_dir)
    timer, prof = IterationTimer(), ProfileWindow(args.warmup)
    try:
        parser.get_parsed_content("initialize")
        trainer = parser.get_parsed_content("train#trainer")
        run_items = parser["run"]
        for i in range(len(run_items) - 1):  # EMA, checkpoint saver/loader, progress bar: as the bundle attaches them
            parser.get_parsed_content(f"run#{i}")
        timer.attach_iteration(trainer)
        paired, others = attach_paired(trainer, args)
        timer.attach_epoch(trainer)
        if args.profile:
            prof.attach(trainer)
        parser.get_parsed_content(f"run#{len(run_items) - 1}")  # trainer.run()
        parser.get_parsed_content("finalize")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)

    res: dict[str, Any] = {"variant": "product", **timer.result(args.warmup)}
    res.update(
        epoch_length=trainer.state.epoch_length,
        num_workers=parser.get_parsed_content("num_workers"),
        num_genes=parser.get_parsed_content("num_genes"),
    )
    if args.profile and prof.write(f"{args.profile}.product.txt"):
        res["profile"] = f"{args.profile}.product.txt"
    if paired:
        res["paired"] = paired
        if args.flops_worker:
            res["paired_flops"] = {k: count_flops(f) for k, f in others.items()}
    res["peak_rss_mib"] = peak_rss_mib()
    return res
