"""Training-step benchmark: the product path vs a bare PyTorch loop vs the prototype's step.

    nice python benchmarks/train_step.py [--rounds 2] [--iters 8] [--out train_step.json]

Variants (same machine, same data, same seed, same networks at the paper's sizes):

* ``product`` (a): the real product path. ``bundle/configs/train.yaml`` (plus ``paper.yaml`` with
  ``--recipe paper``, the default: the networks and losses of (b) and (c)) is loaded with MONAI's
  ``ConfigParser``; only ``dataset_dir``/``output_dir``/``epochs``/``resume`` (and the optional
  ``--workers``/``--channels-last`` overrides) are changed.  Everything else is the bundle's:
  ``RGGANDataset`` + MONAI ``DataLoader`` (workers sized to the CPUs), ``RGGanTrainer`` with every default handler
  (TrainingStats, TerminateOnNan, 2 x LrScheduleHandler, StatsHandler, TensorBoardStatsHandler,
  SampleSaver), then the ``run`` section's EMAHandler, CheckpointSaver, ProgressBar.
  An iteration is timed from Ignite's ``GET_BATCH_STARTED`` to the end of the last
  ``ITERATION_COMPLETED`` handler, so it includes waiting for data and all per-iteration handlers.
* ``bare`` (b): the same ``RGGenerator``/``RGDiscriminator``/``rggan.losses``, the bundle's optimiser
  (``Adam(fused=True)``), the D loss backward per pair as the trainer does it (``--d-single-backward``:
  one backward) and a one-pass EMA, in a plain loop over in-memory tensors (no Ignite, no MONAI engine
  or data pipeline).
* ``proto`` (c): a re-creation of the prototype's step (docs/performance.md describes it) on the same
  networks: the G loss runs D twice on the fakes (the first result unused, V2), the background mask is
  eroded on the host per sample (``.cpu().numpy()`` + a 5x5 ``scipy.ndimage.binary_erosion`` with cv2's
  default border, V0/V1), one backward of the summed D loss, labels allocated per step, the losses
  ``.item()``-ed for logging, ``torch.optim.Adam`` with its defaults (a per-tensor loop on CPU) and the
  V1 per-parameter EMA loop (parameters only).

Every variant runs in its own fresh process (clean peak RSS), and the rounds interleave the variants
(a b c, then c b a, ...) to spread the noise of a shared machine; the reported figure is the median
over all timed iterations of all rounds.  FLOPs of one step come from
``torch.utils.flop_counter.FlopCounterMode``.  ``--profile`` writes a ``torch.profiler`` op table of
each variant over 2 iterations.

Options that apply on CPU: ``--channels-last`` (bare, proto and product), ``--amp`` (bfloat16 autocast;
the product through the bundle's ``amp: true``), ``--compile`` (``torch.compile`` of G and D; bare and
proto only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PAPER,
    REPO,
    count_flops,
    machine_info,
    make_paper_prepared,
    median,
    paper_generator,
    peak_rss_mib,
    print_table,
    write_json,
)

VARIANTS = ("product", "bare", "proto")
SEED = 12345


# ----------------------------------------------------------------------------- shared pieces
def _load_arrays(prepared: str) -> dict:
    """Every training patient's arrays as stacked tensors (the bare/proto loops' in-memory data)."""
    import numpy as np
    import torch

    from rggan.data.dataset import load_datalist

    items = load_datalist(prepared, "training")
    return {
        "image": torch.from_numpy(np.stack([np.load(d["image"]) for d in items])),
        "mask": torch.from_numpy(np.stack([np.load(d["mask"]) for d in items])),
        "bases": torch.from_numpy(np.stack([np.load(d["bases"]) for d in items])),
        "rna": torch.from_numpy(np.stack([np.load(d["rna"]) for d in items])),
    }


class _Batches:
    """Random batches like the dataset's: shuffled patients, a wrong pair from another patient, a random base."""

    def __init__(self, arrays: dict, batch_size: int, seed: int, channels_last: bool = False) -> None:
        import torch

        self.a, self.b = arrays, batch_size
        self.n = arrays["image"].shape[0]
        self.gen = torch.Generator().manual_seed(seed)
        self.cl = channels_last

    def __call__(self) -> dict:
        import torch

        n, b = self.n, self.b
        idx = torch.randperm(n, generator=self.gen)[:b]
        wrong = (idx + torch.randint(1, n, (b,), generator=self.gen)) % n
        k = torch.randint(self.a["bases"].shape[1], (b,), generator=self.gen)
        out = {
            "image": self.a["image"][idx],
            "mask": self.a["mask"][idx],
            "wrong_image": self.a["image"][wrong],
            "wrong_mask": self.a["mask"][wrong],
            "base": self.a["bases"][idx, k][:, None],
            "rna": self.a["rna"][idx],
        }
        if self.cl:
            out = {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in out.items()}
        return out


def _build(num_genes: int, args: argparse.Namespace, fused: bool) -> tuple:
    import torch

    from rggan.networks import RGDiscriminator, init_weights

    g = paper_generator(num_genes, SEED)
    d = RGDiscriminator(embed_dim=PAPER["embed_dim"], d_n_feat=PAPER["d_n_feat"], image_size=PAPER["image_size"]).apply(
        init_weights
    )
    if args.channels_last:
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    # fused: the bundle's optimiser (bare loop); the prototype built the default Adam
    g_opt = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=fused or None)
    d_opt = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.5, 0.999), fused=fused or None)
    import copy

    ema = copy.deepcopy(g).requires_grad_(False)
    g_run, d_run = (torch.compile(g), torch.compile(d)) if args.compile else (g, d)
    return g, d, g_run, d_run, g_opt, d_opt, ema


def _usage() -> tuple[float, int]:
    """(system CPU seconds, minor page faults) of this process so far: the cost of fresh memory pages."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_stime, ru.ru_minflt


def _autocast(args: argparse.Namespace):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if args.amp else contextlib.nullcontext()


def _generate(batches: _Batches, g, d, g_run, args: argparse.Namespace) -> tuple:
    """The start every step shares: a batch, fresh latents, both nets in train mode, one G forward."""
    import torch

    b = batches()
    z = torch.randn(b["image"].shape[0], PAPER["g_ls"])
    g.train(), d.train()
    with _autocast(args):
        return b, g_run(b["rna"], z, b["base"])


# ----------------------------------------------------------------------------- (b) bare loop
def make_bare_step(args: argparse.Namespace, arrays: dict):
    import torch

    from rggan.losses import DiscriminatorLoss, GeneratorLoss

    num_genes = arrays["rna"].shape[1]
    g, d, g_run, d_run, g_opt, d_opt, ema = _build(num_genes, args, fused=True)
    batches = _Batches(arrays, PAPER["batch_size"], SEED, args.channels_last)
    d_loss, g_loss = DiscriminatorLoss(), GeneratorLoss(erosion=5)
    ema_p, live_p = list(ema.parameters()), list(g.parameters())
    ema_b, live_b = list(ema.buffers()), list(g.buffers())
    decay = 0.999

    def step() -> list[float]:
        b, fake = _generate(batches, g, d, g_run, args)
        d_opt.zero_grad(set_to_none=not args.no_set_to_none)
        if not args.d_single_backward:  # as the trainer: 4 D calls (BN statistics per pair), each graph freed early
            with _autocast(args):
                d_out = d_loss(
                    d_run, b["image"], b["mask"], b["wrong_image"], b["wrong_mask"], fake,
                    backward=lambda t: t.backward(),
                )  # fmt: skip
        else:
            with _autocast(args):
                d_out = d_loss(d_run, b["image"], b["mask"], b["wrong_image"], b["wrong_mask"], fake)
            d_out["total"].backward()
        d_opt.step()
        g_opt.zero_grad(set_to_none=not args.no_set_to_none)
        with _autocast(args):
            g_out = g_loss(d_run, fake, b["base"])
        g_out["total"].backward()
        g_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_p, live_p, 1.0 - decay)
            for e, v in zip(ema_b, live_b):
                e.copy_(v)
        return torch.stack([g_out["total"].detach().float(), d_out["total"].detach().float()]).tolist()

    return step


# ----------------------------------------------------------------------------- (c) prototype step
def make_proto_step(args: argparse.Namespace, arrays: dict):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    num_genes = arrays["rna"].shape[1]
    g, d, g_run, d_run, g_opt, d_opt, ema = _build(num_genes, args, fused=False)
    batches = _Batches(arrays, PAPER["batch_size"], SEED, args.channels_last)
    c_isc, c_i, c_is, c_bg = 10.0, 8.0, 1.0, 100.0
    kernel = np.ones((5, 5), dtype=bool)
    decay = 0.999
    bs = PAPER["batch_size"]  # the prototype sizes its labels with the loader's batch size

    def erode_on_host(mask: torch.Tensor) -> torch.Tensor:
        # V0/V1: per sample on the host, cv2.erode(M, ones(5, 5)) with the default border (= no erosion at the edge)
        m = (mask.detach().float().cpu().numpy() < 0).astype(np.uint8)  # .float(): numpy has no bfloat16
        out = np.empty_like(m)
        for i in range(m.shape[0]):
            out[i, 0] = ndimage.binary_erosion(m[i, 0], structure=kernel, border_value=1)
        return torch.from_numpy(out.astype(np.float32)).to(mask.device)

    def step() -> list[float]:
        b, fake = _generate(batches, g, d, g_run, args)
        ones, zeros = torch.ones(bs), torch.zeros(bs)
        # D: four separate calls, 12 weighted MSE terms
        d_opt.zero_grad()
        with _autocast(args):
            e = fake.embedding.detach()
            real = d_run(b["image"], b["mask"], e)
            wrong = d_run(b["wrong_image"], b["wrong_mask"], e)
            wseg = d_run(b["image"], b["wrong_mask"], e)
            fk = d_run(fake.image.detach(), fake.mask.detach(), e)
            errd = (
                c_isc * F.mse_loss(real.isc, ones)
                + c_i * F.mse_loss(real.i, ones)
                + c_is * F.mse_loss(real.is_, ones)
                + c_isc * F.mse_loss(wrong.isc, zeros)
                + c_i * F.mse_loss(wrong.i, ones)
                + c_is * F.mse_loss(wrong.is_, ones)
                + c_isc * F.mse_loss(wseg.isc, zeros)
                + c_i * F.mse_loss(wseg.i, ones)
                + c_is * F.mse_loss(wseg.is_, zeros)
                + c_isc * F.mse_loss(fk.isc, zeros)
                + c_i * F.mse_loss(fk.i, zeros)
                + c_is * F.mse_loss(fk.is_, zeros)
            )
        errd.backward()
        d_opt.step()
        # G: the redundant first D forward (V2), then the one that is used
        g_opt.zero_grad()
        with _autocast(args):
            _unused = d_run(fake.image, fake.mask, fake.embedding)  # noqa: F841
            out = d_run(fake.image, fake.mask, fake.embedding)
            errg = c_isc * F.mse_loss(out.isc, ones) + c_i * F.mse_loss(out.i, ones) + c_is * F.mse_loss(out.is_, ones)
            m = erode_on_host(fake.mask)
            errg = errg + c_bg * F.l1_loss(fake.image * m, b["base"] * m)
        errg.backward()
        g_opt.step()
        with torch.no_grad():  # V1 "ReparameterizationTrick" Update: per parameter, parameters only
            for pe, p in zip(ema.parameters(), g.parameters()):
                pe.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        return [errg.item(), errd.item()]  # StatsHandler logged both every iteration

    return step


def run_loop_variant(args: argparse.Namespace, name: str) -> dict:
    import torch

    arrays = _load_arrays(args.data)
    step = (make_bare_step if name == "bare" else make_proto_step)(args, arrays)
    torch.manual_seed(SEED)
    for _ in range(args.warmup):
        step()
    wall, cpu, sys_s, faults = [], [], [], []
    for _ in range(args.iters):
        t0, c0, (s0, f0) = time.perf_counter(), time.process_time(), _usage()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        s1, f1 = _usage()
        sys_s.append(s1 - s0)
        faults.append(f1 - f0)
    res: dict[str, Any] = {"variant": name, "step_s": wall, "cpu_s": cpu, "sys_s": sys_s, "minflt": faults}
    if args.flops_worker:
        res["flops"] = count_flops(step)
    if args.profile:
        res["profile"] = _profile(lambda: [step() for _ in range(2)], f"{args.profile}.{name}.txt")
    res["peak_rss_mib"] = peak_rss_mib()
    return res


def _profile(fn, path: str) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    Path(path).write_text(table)
    return path


# ----------------------------------------------------------------------------- (a) product path
def run_product(args: argparse.Namespace) -> dict:
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    out_dir = tempfile.mkdtemp(prefix="rggan_bench_train_")
    parser = ConfigParser()
    configs = [str(REPO / "bundle" / "configs" / "train.yaml")]
    if args.recipe == "paper":  # the networks and losses of (b) and (c): like for like
        configs.append(str(REPO / "bundle" / "configs" / "paper.yaml"))
    parser.read_config(configs)
    epochs = args.epochs
    overrides: dict[str, Any] = {
        "dataset_dir": args.data,
        "output_dir": out_dir,
        "epochs": epochs,
        "resume": False,
    }
    if args.workers is not None:
        overrides["num_workers"] = args.workers
    if args.amp:  # the bundle's own switch: bfloat16 autocast on CPU
        overrides["amp"] = True
    if args.channels_last:
        overrides["gnetwork"] = (
            "$@network_def.apply(rggan.networks.init_weights).to(@device, memory_format=torch.channels_last)"
        )
        overrides["dnetwork"] = (
            "$@discriminator_def.apply(rggan.networks.init_weights).to(@device, memory_format=torch.channels_last)"
        )
    parser.update(overrides)
    parser.parse()
    try:
        parser.get_parsed_content("initialize")
        trainer = parser.get_parsed_content("train#trainer")
        run_items = parser["run"]
        for i in range(len(run_items) - 1):  # EMA, checkpoint saver/loader, progress bar: as the bundle attaches them
            parser.get_parsed_content(f"run#{i}")

        t: dict[str, list] = {"get": [], "got": [], "done": [], "epoch_start": [], "epoch_done": []}
        cpu: list[float] = []
        sys_s: list[tuple[int, float]] = []
        faults: list[tuple[int, int]] = []
        state: dict[str, Any] = {"c0": 0.0, "u0": (0.0, 0)}

        def on(name):
            def h(engine):
                key = engine.state.epoch if name.startswith("epoch") else engine.state.iteration
                t[name].append((key, time.perf_counter()))
                if name == "get":
                    state["c0"], state["u0"] = time.process_time(), _usage()
                elif name == "done":
                    cpu.append((key, time.process_time() - state["c0"]))
                    (s0, f0), (s1, f1) = state["u0"], _usage()
                    sys_s.append((key, s1 - s0))
                    faults.append((key, f1 - f0))

            return h

        # registered after every bundle handler, so "done" is after the last ITERATION_COMPLETED handler
        trainer.add_event_handler(Events.GET_BATCH_STARTED, on("get"))
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, on("got"))
        trainer.add_event_handler(Events.ITERATION_COMPLETED, on("done"))
        paired: dict[str, dict[str, list]] = {}
        others: dict[str, Any] = {}
        if args.paired:
            # (b) and (c) steps right after each product iteration, in alternating order, so that the
            # three variants see the same machine load (paired samples); their own nets and optimisers
            arrays = _load_arrays(args.data)
            others.update(bare=make_bare_step(args, arrays), proto=make_proto_step(args, arrays))
            paired = {k: {"step_s": [], "cpu_s": []} for k in others}

            def run_others(engine):
                names = list(others) if engine.state.iteration % 2 else list(others)[::-1]
                for k in names:
                    t0, c0 = time.perf_counter(), time.process_time()
                    others[k]()
                    if engine.state.iteration > args.warmup:
                        paired[k]["step_s"].append(time.perf_counter() - t0)
                        paired[k]["cpu_s"].append(time.process_time() - c0)

            trainer.add_event_handler(Events.ITERATION_COMPLETED, run_others)
        trainer.add_event_handler(Events.EPOCH_STARTED, on("epoch_start"))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, on("epoch_done"))

        prof_ctx: dict[str, Any] = {}
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            def p_start(engine):  # GET_BATCH_STARTED fires before the iteration counter moves on
                if engine.state.iteration == args.warmup and "p" not in prof_ctx:
                    prof_ctx["p"] = profile(activities=[ProfilerActivity.CPU])
                    prof_ctx["p"].__enter__()
                    prof_ctx["n"] = 0

            def p_stop(engine):
                if "p" in prof_ctx and "done" not in prof_ctx:
                    prof_ctx["n"] += 1
                    if prof_ctx["n"] == 2:
                        prof_ctx["p"].__exit__(None, None, None)
                        prof_ctx["done"] = True

            trainer.add_event_handler(Events.GET_BATCH_STARTED, p_start)
            trainer.add_event_handler(Events.ITERATION_COMPLETED, p_stop)

        parser.get_parsed_content(f"run#{len(run_items) - 1}")  # trainer.run()
        parser.get_parsed_content("finalize")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)

    # GET_BATCH_STARTED/COMPLETED fire before Ignite increments the iteration counter
    get = [x for i, x in t["get"] if i + 1 > args.warmup]
    got = [x for i, x in t["got"] if i + 1 > args.warmup]
    done = [x for i, x in t["done"] if i > args.warmup]
    step = [c - a for a, c in zip(get, done)]
    data = [b - a for a, b in zip(get, got)]
    es = [x for e, x in t["epoch_start"] if e > 1]
    ed = [x for e, x in t["epoch_done"] if e > 1]
    res: dict[str, Any] = {
        "variant": "product",
        "step_s": step,
        "data_wait_s": data,
        "cpu_s": [x for i, x in cpu if i > args.warmup],
        "sys_s": [x for i, x in sys_s if i > args.warmup],
        "minflt": [x for i, x in faults if i > args.warmup],
        "epoch_s": [b - a for a, b in zip(es, ed)],
        "epoch_length": trainer.state.epoch_length,
        "num_workers": parser.get_parsed_content("num_workers"),
        "num_genes": parser.get_parsed_content("num_genes"),
    }
    if args.profile and "p" in prof_ctx:
        table = prof_ctx["p"].key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        Path(f"{args.profile}.product.txt").write_text(table)
        res["profile"] = f"{args.profile}.product.txt"
    if paired:
        res["paired"] = paired
        if args.flops_worker:
            res["paired_flops"] = {k: count_flops(f) for k, f in others.items()}
    res["peak_rss_mib"] = peak_rss_mib()
    return res


# ----------------------------------------------------------------------------- driver
def _worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    res = run_product(args) if args.worker == "product" else run_loop_variant(args, args.worker)
    res["torch_threads"] = torch.get_num_threads()
    Path(args.result).write_text(json.dumps(res))


def _summarise(name: str, runs: list[dict], batch: int) -> dict:
    step = [x for r in runs for x in r["step_s"]]
    cpu = [x for r in runs for x in r.get("cpu_s", [])]
    out: dict[str, Any] = {
        "variant": name,
        "n_timed": len(step),
        "step_s_median": median(step),
        "step_s_min": min(step) if step else None,
        "per_round_median_s": [median(r["step_s"]) for r in runs],
        "samples_per_s": batch / median(step) if step else None,
        "cpu_s_median": median(cpu),
        "sys_s_median": median([x for r in runs for x in r.get("sys_s", [])]),
        "minflt_median": median([x for r in runs for x in r.get("minflt", [])]),
        "peak_rss_mib": max(r["peak_rss_mib"]["self"] for r in runs),
        "peak_rss_child_mib": max(r["peak_rss_mib"]["largest_child"] for r in runs),
    }
    flops = [r["flops"] for r in runs if "flops" in r]
    if flops:
        out["flops_per_step"] = flops[0]
    if name == "product":
        wait = [x for r in runs for x in r["data_wait_s"]]
        out["data_wait_s_median"] = median(wait)
        out["data_wait_fraction"] = sum(wait) / sum(step)
        out["data_wait_fraction_first_iter_excluded"] = sum(x for r in runs for x in r["data_wait_s"][1:]) / max(
            sum(x for r in runs for x in r["step_s"][1:]), 1e-9
        )
        ep = [x for r in runs for x in r["epoch_s"]]
        out["epoch_s_median"] = median(ep)
        out["epoch_length"] = runs[0]["epoch_length"]
        out["samples_per_s_epoch_amortised"] = batch * runs[0]["epoch_length"] / median(ep) if ep else None
        out["num_workers"] = runs[0]["num_workers"]
        out["num_genes"] = runs[0]["num_genes"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="prepared folder (default: a synthetic paper-size one in --workdir)")
    p.add_argument("--workdir", default="/tmp/rggan_bench_train", help="where the synthetic prepared folder lives")
    p.add_argument(
        "--patients", type=int, default=48, help="training patients of the synthetic folder (48: 3 it/epoch)"
    )
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of product,bare,proto")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (a b c, c b a, ...)")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps of every variant per round")
    p.add_argument("--iters", type=int, default=5, help="timed steps of bare/proto per round")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the product run (timed: all but --warmup steps)")
    p.add_argument(
        "--workers", type=int, default=None, help="override the bundle's num_workers (default: sized to the CPUs)"
    )
    p.add_argument(
        "--recipe",
        choices=("paper", "default"),
        default="paper",
        help="product's training recipe: 'paper' (train.yaml + paper.yaml: the networks and losses of the bare and "
        "prototype steps, like for like) or 'default' (train.yaml alone: the conditioning recipe, more work per step)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads in each variant (0: torch default)")
    p.add_argument("--channels-last", action="store_true", help="networks and batches in channels_last")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CPU (product: the bundle's amp=true)")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D (bare/proto)")
    p.add_argument(
        "--no-set-to-none",
        action="store_true",
        help="bare: zero_grad(set_to_none=False), as GanTrainer's default optim_set_to_none=False",
    )
    p.add_argument(
        "--d-single-backward",
        action="store_true",
        help="bare: one backward of the summed D loss (before the trainer's per-pair backward; more memory)",
    )
    p.add_argument(
        "--paired",
        action="store_true",
        help="one process: each product iteration is followed by one bare and one proto step (paired "
        "timing under the same load; peak RSS is then not per variant)",
    )
    p.add_argument("--no-flops", dest="flops", action="store_false", help="skip the FlopCounterMode step")
    p.add_argument("--profile", default=None, help="path prefix for torch.profiler op tables (one per variant)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--flops", dest="flops_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        _worker(args)
        return

    if args.data is None:
        args.data = str(make_paper_prepared(Path(args.workdir) / "prepared", n_train=args.patients))
    variants = [v for v in args.variants.split(",") if v]
    info = machine_info()
    print(f"machine: {info}", file=sys.stderr)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    launch = ["product"] if args.paired else variants
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = launch if r % 2 == 0 else launch[::-1]
            for v in order:
                res_path = os.path.join(tmp, f"{v}_{r}.json")
                cmd = [sys.executable, __file__, "--worker", v, "--result", res_path, "--data", args.data]
                cmd += ["--warmup", str(args.warmup), "--iters", str(args.iters)]
                cmd += ["--epochs", str(args.epochs)]
                cmd += ["--threads", str(args.threads), "--recipe", args.recipe]
                if args.workers is not None:
                    cmd += ["--workers", str(args.workers)]
                for flag in (
                    "channels_last",
                    "amp",
                    "compile",
                    "no_set_to_none",
                    "d_single_backward",
                    "paired",
                ):
                    if getattr(args, flag):
                        cmd.append("--" + flag.replace("_", "-"))
                if args.flops and r == 0:
                    cmd.append("--flops")
                if args.profile and r == 0:
                    cmd += ["--profile", args.profile]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, cwd=str(REPO))
                res = json.loads(Path(res_path).read_text())
                runs[v].append(res)
                for k, pr in res.get("paired", {}).items():
                    if k in runs:
                        runs[k].append(
                            {
                                **pr,
                                "peak_rss_mib": res["peak_rss_mib"],
                                **({"flops": res["paired_flops"][k]} if "paired_flops" in res else {}),
                            }
                        )
                print(
                    f"round {r} {v}: median step {median(res['step_s']):.3f} s "
                    f"({len(res['step_s'])} timed, process {time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                )

    batch = PAPER["batch_size"]
    summary = {v: _summarise(v, runs[v], batch) for v in variants}
    flops = summary.get("bare", {}).get("flops_per_step")
    for v, s in summary.items():
        # the product's FLOPs are the bare loop's only when both run the same recipe
        f = s.get("flops_per_step") or (flops if v == "product" and args.recipe == "paper" else None)
        s["achieved_gflops"] = f / s["step_s_median"] / 1e9 if f else None
    ratios = {}
    if "product" in summary and "bare" in summary:
        ratios["a_over_b"] = summary["product"]["samples_per_s"] / summary["bare"]["samples_per_s"]
        ratios["a_over_b_cpu_time"] = summary["bare"]["cpu_s_median"] / summary["product"]["cpu_s_median"]
    if "product" in summary and "proto" in summary:
        ratios["a_over_c"] = summary["product"]["samples_per_s"] / summary["proto"]["samples_per_s"]
        ratios["a_over_c_cpu_time"] = summary["proto"]["cpu_s_median"] / summary["product"]["cpu_s_median"]
    if args.paired and "product" in runs:
        for k, key in (("bare", "a_over_b_paired"), ("proto", "a_over_c_paired")):
            pairs = [(x / y) for r in runs["product"] for x, y in zip(r["paired"][k]["step_s"], r["step_s"])]
            if pairs:
                ratios[key + "_median_of_ratios"] = median(pairs)
    info_end = machine_info()

    rows = []
    for v in variants:
        s = summary[v]
        rows.append(
            [
                {
                    "product": "(a) product (bundle + RGGanTrainer + handlers)",
                    "bare": "(b) bare PyTorch loop",
                    "proto": "(c) prototype step",
                }[v],
                s["samples_per_s"],
                s["step_s_median"],
                s["cpu_s_median"],
                s["sys_s_median"],
                s["minflt_median"],
                s["achieved_gflops"],
                s["peak_rss_mib"],
                s["n_timed"],
            ]
        )
    print_table(
        rows,
        [
            "variant",
            "samples/s",
            "median step (s)",
            "CPU s/step",
            "sys s/step",
            "minor faults/step",
            "GFLOP/s",
            "peak RSS (MiB)",
            "n",
        ],
    )
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    if "product" in summary:
        s = summary["product"]
        print(
            f"data wait: median {s['data_wait_s_median'] * 1e3:.1f} ms/iteration, "
            f"{100 * s['data_wait_fraction']:.2f}% of iteration time ({s['num_workers']} workers; "
            f"{100 * s['data_wait_fraction_first_iter_excluded']:.2f}% without each run's first timed iteration)"
            + (
                f"; epoch of {s['epoch_length']} iterations: {s['epoch_s_median']:.2f} s "
                f"({s['samples_per_s_epoch_amortised']:.2f} samples/s amortised)"
                if s["epoch_s_median"]
                else ""
            )
        )
    write_json(
        args.out,
        {
            "benchmark": "train_step",
            "machine": info,
            "loadavg_end": info_end["loadavg"],
            "config": {
                **PAPER,
                "data": args.data,
                "rounds": args.rounds,
                "warmup": args.warmup,
                "iters": args.iters,
                "epochs": args.epochs,
                "channels_last": args.channels_last,
                "amp": args.amp,
                "compile": args.compile,
                "threads": args.threads,
                "workers": args.workers,
                "recipe": args.recipe,
            },
            "summary": summary,
            "ratios": ratios,
            "targets": {"a_over_b": ">= 0.98", "a_over_c": ">= 1.05", "peak_rss_gib": "<= 3"},  # issue 11 (fp32)
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
