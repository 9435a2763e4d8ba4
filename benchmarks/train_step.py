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
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PAPER, REPO, machine_info, make_paper_prepared, median, write_json  # noqa: E402
from steps import VARIANTS  # noqa: E402
from steps.report import add_achieved_gflops, payload, print_report, ratios, summarise  # noqa: E402

#: boolean options passed on to every worker
_WORKER_FLAGS = ("channels_last", "amp", "compile", "no_set_to_none", "d_single_backward", "paired")


def build_parser() -> argparse.ArgumentParser:
    """The command line (the hidden ``--worker``/``--result``/``--flops`` are the driver's, for its workers)."""
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
    p.add_argument(
        "--cpu-allocator",
        choices=("auto", "false"),
        default=None,
        help="product: the bundle's cpu_allocator (default: the bundle's own, auto: glibc keeps freed buffers on CPU)",
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
    return p


def _worker(args: argparse.Namespace) -> None:
    """Run one variant in this (fresh) process and write its result to ``--result``."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker == "product":
        from steps.product import run_product

        res = run_product(args)
    else:
        from steps.loop import run_loop_variant

        res = run_loop_variant(args, args.worker)
    res["torch_threads"] = torch.get_num_threads()
    Path(args.result).write_text(json.dumps(res))


def _worker_command(args: argparse.Namespace, variant: str, round_: int, res_path: str) -> list[str]:
    """The command line of one worker process."""
    cmd = [sys.executable, __file__, "--worker", variant, "--result", res_path, "--data", args.data]
    cmd += ["--warmup", str(args.warmup), "--iters", str(args.iters)]
    cmd += ["--epochs", str(args.epochs)]
    cmd += ["--threads", str(args.threads), "--recipe", args.recipe]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    if args.cpu_allocator is not None:
        cmd += ["--cpu-allocator", args.cpu_allocator]
    cmd += ["--" + flag.replace("_", "-") for flag in _WORKER_FLAGS if getattr(args, flag)]
    if args.flops and round_ == 0:
        cmd.append("--flops")
    if args.profile and round_ == 0:
        cmd += ["--profile", args.profile]
    return cmd


def _add_result(runs: dict[str, list[dict]], variant: str, res: dict) -> None:
    """File a worker's result under its variant, and its paired (b)/(c) timings under theirs."""
    runs[variant].append(res)
    for k, pr in res.get("paired", {}).items():
        if k in runs:
            flops = {"flops": res["paired_flops"][k]} if "paired_flops" in res else {}
            runs[k].append({**pr, "peak_rss_mib": res["peak_rss_mib"], **flops})


def run_rounds(args: argparse.Namespace, variants: list[str]) -> dict[str, list[dict]]:
    """Every round's workers, interleaved (a b c, then c b a, ...); returns their results per variant."""
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    launch = ["product"] if args.paired else variants
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for v in launch if r % 2 == 0 else launch[::-1]:
                res_path = os.path.join(tmp, f"{v}_{r}.json")
                t0 = time.perf_counter()
                subprocess.run(_worker_command(args, v, r, res_path), check=True, cwd=str(REPO))
                res = json.loads(Path(res_path).read_text())
                _add_result(runs, v, res)
                print(
                    f"round {r} {v}: median step {median(res['step_s']):.3f} s "
                    f"({len(res['step_s'])} timed, process {time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                )
    return runs


def main() -> None:
    """Run the benchmark (or, with ``--worker``, one variant of it)."""
    args = build_parser().parse_args()
    if args.worker:
        _worker(args)
        return
    if args.data is None:
        args.data = str(make_paper_prepared(Path(args.workdir) / "prepared", n_train=args.patients))
    variants = [v for v in args.variants.split(",") if v]
    info = machine_info()
    print(f"machine: {info}", file=sys.stderr)
    runs = run_rounds(args, variants)
    summary = {v: summarise(v, runs[v], PAPER["batch_size"]) for v in variants}
    add_achieved_gflops(summary, args.recipe)
    ratio = ratios(summary, runs, args.paired)
    info_end = machine_info()
    print_report(variants, summary, ratio)
    write_json(args.out, payload(args, info, info_end, summary, ratio, runs))


if __name__ == "__main__":
    main()
