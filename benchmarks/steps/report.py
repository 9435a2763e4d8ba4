"""What ``train_step.py`` reports: per-variant summaries, ratios, the table and the JSON payload."""

from __future__ import annotations

import argparse
from typing import Any

from common import PAPER, median, print_table

LABELS = {
    "product": "(a) product (bundle + RGGanTrainer + handlers)",
    "bare": "(b) bare PyTorch loop",
    "proto": "(c) prototype step",
}
HEADER = [
    "variant", "samples/s", "median step (s)", "CPU s/step", "sys s/step", "minor faults/step", "GFLOP/s",
    "peak RSS (MiB)", "n",
]  # fmt: skip
#: the targets of the performance issue (fp32)
TARGETS = {"a_over_b": ">= 0.98", "a_over_c": ">= 1.05", "peak_rss_gib": "<= 3"}


def _product_summary(runs: list[dict], batch: int) -> dict[str, Any]:
    """The product-only figures: data wait, epoch times and the run's sizes."""
    wait = [x for r in runs for x in r["data_wait_s"]]
    step = [x for r in runs for x in r["step_s"]]
    ep = [x for r in runs for x in r["epoch_s"]]
    return {
        "data_wait_s_median": median(wait),
        "data_wait_fraction": sum(wait) / sum(step),
        "data_wait_fraction_first_iter_excluded": sum(x for r in runs for x in r["data_wait_s"][1:])
        / max(sum(x for r in runs for x in r["step_s"][1:]), 1e-9),
        "epoch_s_median": median(ep),
        "epoch_length": runs[0]["epoch_length"],
        "samples_per_s_epoch_amortised": batch * runs[0]["epoch_length"] / median(ep) if ep else None,
        "num_workers": runs[0]["num_workers"],
        "num_genes": runs[0]["num_genes"],
    }


def summarise(name: str, runs: list[dict], batch: int) -> dict[str, Any]:
    """Medians over every timed iteration of every round of one variant.

    Args:
        name: the variant.
        runs: its workers' results, one per round.
        batch: samples per step.

    Returns:
        The variant's summary (``step_s_median``, ``samples_per_s``, ...).
    """
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
        out.update(_product_summary(runs, batch))
    return out


def add_achieved_gflops(summary: dict[str, dict], recipe: str) -> None:
    """Set each variant's ``achieved_gflops``.

    The product's FLOPs are the bare loop's when both run the same recipe.
    """
    flops = summary.get("bare", {}).get("flops_per_step")
    for v, s in summary.items():
        f = s.get("flops_per_step") or (flops if v == "product" and recipe == "paper" else None)
        s["achieved_gflops"] = f / s["step_s_median"] / 1e9 if f else None


def ratios(summary: dict[str, dict], runs: dict[str, list[dict]], paired: bool) -> dict[str, float]:
    """Throughput ratios of the product to the bare loop (a/b) and to the prototype (a/c)."""
    out = {}
    if "product" in summary and "bare" in summary:
        out["a_over_b"] = summary["product"]["samples_per_s"] / summary["bare"]["samples_per_s"]
        out["a_over_b_cpu_time"] = summary["bare"]["cpu_s_median"] / summary["product"]["cpu_s_median"]
    if "product" in summary and "proto" in summary:
        out["a_over_c"] = summary["product"]["samples_per_s"] / summary["proto"]["samples_per_s"]
        out["a_over_c_cpu_time"] = summary["proto"]["cpu_s_median"] / summary["product"]["cpu_s_median"]
    if paired and "product" in runs:
        for k, key in (("bare", "a_over_b_paired"), ("proto", "a_over_c_paired")):
            pairs = [(x / y) for r in runs["product"] for x, y in zip(r["paired"][k]["step_s"], r["step_s"])]
            if pairs:
                out[key + "_median_of_ratios"] = median(pairs)
    return out


def print_report(variants: list[str], summary: dict[str, dict], ratio: dict[str, float]) -> None:
    """Print the table, the ratios and the product's data-wait line."""
    keys = ("samples_per_s", "step_s_median", "cpu_s_median", "sys_s_median", "minflt_median", "achieved_gflops")
    rows = [[LABELS[v], *(summary[v][k] for k in keys), summary[v]["peak_rss_mib"], summary[v]["n_timed"]]
            for v in variants]  # fmt: skip
    print_table(rows, HEADER)
    for k, v in ratio.items():
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


def payload(args: argparse.Namespace, info: dict, info_end: dict, summary: dict, ratio: dict, runs: dict) -> dict:
    """The JSON written with ``--out``."""
    keys = ("data", "rounds", "warmup", "iters", "epochs", "channels_last", "amp", "compile", "threads", "workers",
            "recipe")  # fmt: skip
    return {
        "benchmark": "train_step",
        "machine": info,
        "loadavg_end": info_end["loadavg"],
        "config": {**PAPER, **{k: getattr(args, k) for k in keys}},
        "summary": summary,
        "ratios": ratio,
        "targets": dict(TARGETS),
        "runs": runs,
    }
