"""Radiogenomic-map benchmark: the fast (embedding-linearised) map against the exact finite-difference map.

    nice python benchmarks/radiogenomic_map.py --out map.json \
        --ckpt <model.pt> --prepared <prepared folder> [--truth <demo_truth.json>] [--num-latents 2] \
        [--deltas 0.5 0.1] [--directions all 16 8] [--default-directions 8] \
        [--paper-patients 117 --paper-latents 4] [--perturbation coexpression|gene] [--skip-paper] [--skip-agreement]

* **agreement** (needs a trained demo model): on the demo's 8 planted driver genes + 100 random genes
  (seeded), ``rggan.radiogenomic_map.synthesis_map`` (exact) and ``rggan.fast_map.fast_synthesis_map``
  (for each ``--directions``) on every patient x ``--num-latents`` latents, for each ``--deltas``; per
  feature column the Spearman correlation of the two effect columns and the overlap of their top-10 genes
  (by |effect|).  ``agreement_spearman_min`` / ``top10_overlap_min`` are those of ``--default-directions``
  at the first delta.
* **paper-size timing**: the full fast map (every one of 5,172 genes) on ``--paper-patients`` x
  ``--paper-latents`` synthetic samples (random expression, latents and background patches) with the
  paper-size generator (random DCGAN init: the speed does not depend on the weights), run in full unless
  ``--paper-measure-samples`` (then extrapolated linearly in the samples, and said so in the JSON):
  ``full_map_seconds`` (wall) and ``full_map_cpu_seconds`` (CPU time of the process: on a shared machine
  the wall time depends on the other load, the CPU time less).  The exact map's time for the same size is
  extrapolated from one measured batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PAPER, machine_info, paper_generator, write_json  # noqa: E402

SEED = 12345


def compare(exact: pd.DataFrame, fast: pd.DataFrame, k: int = 10) -> dict[str, dict[str, float]]:
    """Per feature column: Spearman rho of the two maps and the overlap of their top-k genes by |effect|."""
    from scipy import stats

    out = {}
    for col in exact.columns:
        x, y = exact[col].to_numpy(), fast.loc[exact.index, col].to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        rho = float(stats.spearmanr(x[ok], y[ok]).statistic) if ok.sum() > 2 else float("nan")
        top_x = set(exact[col].abs().sort_values(ascending=False).index[:k])
        top_y = set(fast[col].abs().sort_values(ascending=False).index[:k])
        out[str(col)] = {"spearman": round(rho, 4), "top10_overlap": len(top_x & top_y)}
    return out


def agreement(args: argparse.Namespace) -> dict[str, Any]:
    from rggan.data.rna import GeneTransform
    from rggan.fast_map import fast_synthesis_map
    from rggan.inference import build_inputs, load_generator
    from rggan.radiogenomic_map import synthesis_map

    torch.manual_seed(SEED)
    net = load_generator(args.ckpt, args.prepared)
    genes = GeneTransform.load(Path(args.prepared) / "gene_transform.json").genes
    truth = json.loads(Path(args.truth).read_text())
    drivers = [d["gene"] for v in truth["phenotypes"].values() for d in v["drivers"] if d["gene"] in genes]
    others = [g for g in genes if g not in drivers]
    chosen = drivers + [str(g) for g in np.random.default_rng(SEED).choice(others, args.random_genes, replace=False)]
    requests = build_inputs(
        args.prepared, num_genes=len(genes), image_size=net.image_size, latent_size=net.latent_size,
        num_samples=args.num_latents, seed=SEED, split="all",
    )  # fmt: skip
    slopes = _slopes(args, list({r["patient"]: r["rna"] for r in requests}.values()))  # one profile per patient
    result: dict[str, Any] = {
        "ckpt": str(args.ckpt),
        "embed_dim": net.embed_dim,
        "genes": len(chosen),
        "drivers": drivers,
        "samples": len(requests),
        "runs": [],
    }
    for delta in args.deltas:
        t = time.perf_counter()
        exact = synthesis_map(
            net, requests, genes, delta=delta, genes=chosen, batch_size=args.batch, coexpression=slopes
        )["effect"]
        exact_s = time.perf_counter() - t
        print(f"exact map, delta {delta}: {exact_s:.1f} s", flush=True)
        for k in args.directions:
            t = time.perf_counter()
            fast = fast_synthesis_map(
                net, requests, genes, delta=delta, genes=chosen, directions=k, batch_size=args.batch,
                coexpression=slopes,
            )
            fast_s = time.perf_counter() - t
            cmp = compare(exact, fast["effect"])
            run = {"delta": delta, "directions": k, "exact_seconds": round(exact_s, 2),
                   "fast_seconds": round(fast_s, 2), "info": fast["info"], "per_feature": cmp}  # fmt: skip
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
    return result


def _slopes(args: argparse.Namespace, profiles: list[np.ndarray]) -> np.ndarray | None:
    """The co-expression slopes over one expression profile per patient, or None with ``--perturbation gene``."""
    from rggan.radiogenomic.perturbation import coexpression_slopes

    return coexpression_slopes(np.stack(profiles)) if args.perturbation == "coexpression" else None


def paper_timing(args: argparse.Namespace) -> dict[str, Any]:
    from rggan.fast_map import fast_synthesis_map
    from rggan.radiogenomic_map import synthesis_map

    n_genes, s = PAPER["num_genes"], PAPER["image_size"]
    net = paper_generator(n_genes, SEED).eval()
    rng = np.random.default_rng(SEED)
    n = args.paper_patients * args.paper_latents
    requests = [
        {"rna": rng.normal(size=n_genes).astype(np.float32), "z": rng.normal(size=PAPER["g_ls"]).astype(np.float32),
         "base": np.clip(rng.normal(-0.7, 0.15, (1, s, s)), -1, 1).astype(np.float32), "spacing": [0.7, 0.7]}
        for _ in range(n)
    ]  # fmt: skip
    names = [f"G{i:05d}" for i in range(n_genes)]
    measured = n if args.paper_measure_samples <= 0 else min(n, args.paper_measure_samples)
    t, cpu = time.perf_counter(), time.process_time()
    slopes = _slopes(args, [r["rna"] for r in requests[:: args.paper_latents]])  # one profile per patient
    fast = fast_synthesis_map(
        net, requests[:measured], names, delta=args.deltas[0], directions=args.default_directions,
        batch_size=args.batch, progress=True, coexpression=slopes,
    )  # fmt: skip
    full_s, full_cpu = time.perf_counter() - t, time.process_time() - cpu
    full_s, full_cpu = full_s * n / measured, full_cpu * n / measured  # linear in samples (identical batches)
    print(f"full fast map, {n_genes} genes x {n} samples: {full_s:.1f} s ({measured} samples run)", flush=True)
    # exact map: one batch of its loop (batch / 2 gene x sample pairs), extrapolated to every pair
    pairs = args.batch // 2
    t, cpu = time.perf_counter(), time.process_time()
    synthesis_map(net, requests[:pairs], names, delta=args.deltas[0], genes=names[:1], batch_size=args.batch)
    exact_batch_s, exact_batch_cpu = time.perf_counter() - t, time.process_time() - cpu
    return {
        "genes": n_genes,
        "samples": n,
        "directions": args.default_directions,
        "perturbation": args.perturbation,
        "full_map_seconds": round(full_s, 1),
        "full_map_cpu_seconds": round(full_cpu, 1),
        "torch_threads": torch.get_num_threads(),
        "measured_samples": measured,
        "full_map_extrapolated": measured < n,
        "generations": fast["info"]["generations"] * n // measured,
        "exact_map_seconds_extrapolated": round(exact_batch_s * n_genes * n / pairs, 1),
        "exact_batch_seconds": round(exact_batch_s, 2),
        "exact_map_cpu_seconds_extrapolated": round(exact_batch_cpu * n_genes * n / pairs, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="trained demo generator (needed unless --skip-agreement)")
    p.add_argument("--prepared", default=None, help="its prepared dataset folder")
    p.add_argument("--truth", default=None, help="demo_truth.json (default: found from the prepared folder)")
    p.add_argument("--num-latents", type=int, default=2)
    p.add_argument("--random-genes", type=int, default=100)
    p.add_argument("--deltas", type=float, nargs="+", default=[0.5, 0.1])
    p.add_argument("--directions", nargs="+", default=["all", "16", "8"])
    p.add_argument("--default-directions", default="8", help="the fast map's default (the timed one)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument(
        "--perturbation", choices=["coexpression", "gene"], default="coexpression",
        help="what moves with a gene (the map's --perturbation; coexpression: its co-expressed genes too)",
    )  # fmt: skip
    p.add_argument("--paper-patients", type=int, default=117)
    p.add_argument("--paper-latents", type=int, default=4)
    p.add_argument(
        "--paper-measure-samples", type=int, default=0,
        help="run the paper-size fast map on this many samples and extrapolate linearly (0: run all)",
    )  # fmt: skip
    p.add_argument("--skip-paper", action="store_true")
    p.add_argument("--skip-agreement", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    args.directions = [d if d == "all" else int(d) for d in args.directions]
    if args.default_directions != "all":
        args.default_directions = int(args.default_directions)
    payload: dict[str, Any] = {"machine": machine_info(), "args": vars(args)}
    if not args.skip_agreement:
        if not (args.ckpt and args.prepared):
            p.error("the agreement part needs --ckpt and --prepared (or pass --skip-agreement)")
        if args.truth is None:
            from rggan.radiogenomic_map import find_truth

            args.truth = find_truth(args.prepared)
        payload["agreement"] = agreement(args)
        main_runs = [
            r for r in payload["agreement"]["runs"]
            if r["delta"] == args.deltas[0] and r["directions"] == args.default_directions
        ]  # fmt: skip
        if main_runs:
            per = main_runs[0]["per_feature"]
            payload["agreement_spearman_min"] = min(v["spearman"] for v in per.values())
            payload["top10_overlap"] = {k: v["top10_overlap"] for k, v in per.items()}
            payload["top10_overlap_min"] = min(payload["top10_overlap"].values())
        write_json(args.out, payload)
    if not args.skip_paper:
        payload["paper"] = paper_timing(args)
        payload["full_map_seconds"] = payload["paper"]["full_map_seconds"]
        print(json.dumps(payload["paper"]), flush=True)
    payload["machine_after"] = machine_info()["loadavg"]
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
