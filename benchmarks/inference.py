"""Inference benchmark: generated nodules/s at batch 64 and the radiogenomic-map wall time.

    nice python benchmarks/inference.py [--iters 5] [--map-genes 100 --map-patients 32 --map-measure-genes 4] \
        [--out inference.json]

* ``G forward``: the paper-size generator (5172 genes, g_n_feat 32, 128², random DCGAN init: speed does not
  depend on the weights) in ``eval()`` at batch 64, under ``torch.inference_mode()`` and under
  ``torch.no_grad()`` (what ``rggan.inference.generate`` and ``rggan.radiogenomic_map.synthesis_map`` use);
  median of ``--iters`` timed batches after a warm-up batch.
* ``rggan.inference.generate``: the product function (collation from request dicts, eval, no_grad,
  copies to the host) on ``--iters`` x 64 requests with ``batch_size=64``.
* radiogenomic map: ``rggan.radiogenomic_map.synthesis_map`` (G at ``rna ± delta`` for every gene x patient,
  then ``rggan.features.nodule_features``) for ``--map-genes`` genes x ``--map-patients`` patients.  On a
  2-core CPU the full 100 x 32 map is 6,400 generations; by default only ``--map-measure-genes`` genes
  are run and the full wall time is extrapolated linearly (the work is a sum of identical batches:
  the map's cost is exactly proportional to genes x patients).  ``--map-measure-genes 0`` runs all.

Options: ``--channels-last``, ``--amp`` (bf16 autocast on CPU), ``--compile`` (``torch.compile`` of G) apply
to the G-forward rows.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PAPER, machine_info, median, paper_generator, peak_rss_mib, print_table, write_json  # noqa: E402

SEED = 12345


def build_generator(num_genes: int, channels_last: bool = False) -> torch.nn.Module:
    g = paper_generator(num_genes, SEED)
    if channels_last:
        g = g.to(memory_format=torch.channels_last)
    return g.eval()


def requests(n: int, num_genes: int, seed: int = SEED) -> list[dict]:
    """Generation requests shaped like ``rggan.inference.build_inputs``' (rna, z, base, spacing, ids)."""
    rng = np.random.default_rng(seed)
    s = PAPER["image_size"]
    return [
        {
            "rna": rng.normal(size=num_genes).astype(np.float32),
            "z": rng.normal(size=PAPER["g_ls"]).astype(np.float32),
            "base": np.clip(rng.normal(-0.7, 0.15, (1, s, s)), -1, 1).astype(np.float32),
            "spacing": np.array([0.7, 0.7], np.float32),
            "patient": f"SYN-{i:03d}",
            "sample": 0,
        }
        for i in range(n)
    ]


def time_calls(fn, iters: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--genes", type=int, default=PAPER["num_genes"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--map-genes", type=int, default=100)
    p.add_argument("--map-patients", type=int, default=32)
    p.add_argument("--map-measure-genes", type=int, default=4, help="genes actually run (0: all --map-genes)")
    p.add_argument("--map-batch", type=int, default=128, help="synthesis_map batch_size (its default)")
    p.add_argument("--skip-map", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the generator")
    p.add_argument("--out", default=None)
    return p


def _row(results: dict, rows: list, name: str, label: str, batch: int, t: list[float]) -> None:
    """Record the timings ``t`` of one batch-of-``batch`` call as ``results[name]`` and a table row."""
    results[name] = {"batch_s": t, "median_s": median(t), "nodules_per_s": batch / median(t)}
    rows.append([label, batch, median(t), batch / median(t), len(t)])


def time_forwards(args: argparse.Namespace, g: torch.nn.Module, reqs: list[dict], results: dict, rows: list) -> None:
    """The G-forward rows: one batch under ``inference_mode`` and under ``no_grad``."""
    from rggan.inference import collate_inputs

    g_run = torch.compile(g) if args.compile else g
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.amp else contextlib.nullcontext
    b = collate_inputs(reqs[: args.batch])
    rna, z, base = b["rna"], b["z"], b["base"]
    if args.channels_last:
        base = base.contiguous(memory_format=torch.channels_last)

    def fwd_inference():
        with torch.inference_mode(), amp():
            return g_run(rna, z, base).image.sum()

    def fwd_no_grad():
        with torch.no_grad(), amp():
            return g_run(rna, z, base).image.sum()

    for name, fn in (("G forward, inference_mode", fwd_inference), ("G forward, no_grad", fwd_no_grad)):
        _row(results, rows, name, name, args.batch, time_calls(fn, args.iters))
        print(f"{name}: {results[name]['nodules_per_s']:.2f} nodules/s", file=sys.stderr)


def time_map(args: argparse.Namespace, g: torch.nn.Module, reqs: list[dict], results: dict, rows: list) -> None:
    """The radiogenomic-map rows: ``--map-measure-genes`` genes measured, ``--map-genes`` extrapolated."""
    from rggan.radiogenomic_map import synthesis_map

    n_genes = args.map_measure_genes or args.map_genes
    gene_names = [f"GENE{i}" for i in range(args.genes)]
    map_reqs = reqs[: args.map_patients]
    synthesis_map(g, map_reqs[:2], gene_names, genes=gene_names[:1], batch_size=args.map_batch)  # warm-up
    t0 = time.perf_counter()
    synthesis_map(g, map_reqs, gene_names, genes=gene_names[:n_genes], batch_size=args.map_batch)
    measured = time.perf_counter() - t0
    full = measured * args.map_genes / n_genes
    gens = 2 * n_genes * args.map_patients
    extrapolated = n_genes != args.map_genes
    results["radiogenomic_map"] = {
        "genes_measured": n_genes,
        "patients": args.map_patients,
        "generations_measured": gens,
        "measured_s": measured,
        "full_genes": args.map_genes,
        "full_s_extrapolated": full,
        "generations_per_s": gens / measured,
        "extrapolated": extrapolated,
    }
    what = f"synthesis_map {{}} genes x {args.map_patients} patients"
    rows.append([what.format(n_genes) + " (measured)", args.map_batch, measured, gens / measured, 1])
    label = what.format(args.map_genes) + (" (extrapolated)" if extrapolated else "")
    rows.append([label, args.map_batch, full, gens / measured, None])


def main() -> None:
    """Run the benchmark and print (and with ``--out`` write) its results."""
    args = build_parser().parse_args()
    info = machine_info()
    print(f"machine: {info}", file=sys.stderr)
    g = build_generator(args.genes, args.channels_last)
    reqs = requests(max(args.batch, args.map_patients), args.genes)
    from rggan.inference import generate

    results: dict = {}
    rows: list = []
    time_forwards(args, g, reqs, results, rows)
    reqs_gen = reqs[: args.batch]
    t = time_calls(lambda: generate(g, reqs_gen, batch_size=args.batch), args.iters)
    _row(results, rows, "rggan.inference.generate", "rggan.inference.generate (no_grad)", args.batch, t)
    if not args.skip_map:
        time_map(args, g, reqs, results, rows)

    rss = peak_rss_mib()
    print_table(rows, ["what", "batch", "wall (s)", "nodules/s", "n"])
    print(f"peak RSS {rss['self']:.0f} MiB")
    write_json(
        args.out,
        {
            "benchmark": "inference",
            "machine": info,
            "loadavg_end": machine_info()["loadavg"],
            "config": {**vars(args)},
            "results": results,
            "peak_rss_mib": rss,
        },
    )


if __name__ == "__main__":
    main()
