"""Benchmark of the prepare step on realistic-size CTs (512x512, >= 100 slices): cold and warm runs.

    python benchmarks/prepare.py [--patients 8] [--workdir /tmp/rggan_bench_prepare] [--out prepare.json]

Targets (2-core machine): >= 2 patients/s cold, <= 1 s for a warm re-run with unchanged inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from rggan.data.demo import generate_demo_dataset
from rggan.data.prepare import prepare_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=8, help="GAN-cohort patients in the download (default 8)")
    parser.add_argument("--workdir", default="/tmp/rggan_bench_prepare", help="scratch folder (replaced)")
    parser.add_argument("--workers", type=int, default=None, help="prepare worker processes (default: CPU count)")
    parser.add_argument("--keep-download", action="store_true", help="reuse an existing download in --workdir")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    work = Path(args.workdir)
    download, prepared = work / "download", work / "prepared"
    if not (args.keep_download and download.is_dir()):
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        summary = generate_demo_dataset(download, patients=args.patients, seed=7, realistic=True, progress=True)
        print(f"wrote {summary.n_files} DICOM files {summary.ct_shape} in {time.perf_counter() - t0:.1f} s")
    shutil.rmtree(prepared, ignore_errors=True)
    size_gb = sum(p.stat().st_size for p in download.rglob("*") if p.is_file()) / 1e9

    t0 = time.perf_counter()
    cold = prepare_dataset(download, prepared, workers=args.workers, progress=True)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = prepare_dataset(download, prepared, workers=args.workers, progress=False)
    warm_s = time.perf_counter() - t0
    assert warm.no_op, "the warm re-run should be a no-op"

    seen = len(cold.patients)
    results = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "download_gb": round(size_gb, 2),
        "patients_seen": seen,
        "patients_included": len(cold.included),
        "cold_seconds": round(cold_s, 2),
        "cold_patients_per_s": round(seen / cold_s, 2),
        "cold_included_per_s": round(len(cold.included) / cold_s, 2),
        "warm_seconds": round(warm_s, 3),
        "targets": {"cold_patients_per_s": ">= 2", "warm_seconds": "<= 1"},
    }
    print(f"\n{'metric':<28}{'value':>12}")
    for key in ("download_gb", "patients_seen", "patients_included", "cold_seconds", "cold_patients_per_s",
                "cold_included_per_s", "warm_seconds"):  # fmt: skip
        print(f"{key:<28}{results[key]:>12}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
