"""Shared helpers of the rggan benchmarks (not a test, not in CI).

* :func:`machine_info` — CPU model, cores, torch/monai versions, threads, load average;
* :func:`make_paper_prepared` — a synthetic *prepared dataset folder* (the documented format of
  ``docs/architecture.md``) at the paper's sizes (5172 genes, 128², 10 bases), so that the real
  product path (bundle config + ``RGGANDataset`` + ``DataLoader``) can be timed at paper size;
* :func:`peak_rss_mib`, :func:`median`, :func:`print_table`, :func:`write_json`;
* :func:`count_flops` — ``torch.utils.flop_counter.FlopCounterMode`` around one call.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: the paper's sizes and batch (docs/spec.md, section "Model"; the defaults of ``rggan train``)
PAPER = {
    "batch_size": 16,
    "image_size": 128,
    "g_n_feat": 32,
    "d_n_feat": 64,
    "embed_dim": 128,
    "g_ls": 10,
    "num_genes": 5172,
    "num_bases": 10,
}

REPO = Path(__file__).resolve().parent.parent


def paper_generator(num_genes: int, seed: int = 12345):
    """The paper-size ``RGGenerator`` with DCGAN init, seeded (shared by the benchmarks)."""
    import torch

    from rggan.networks import RGGenerator, init_weights

    torch.manual_seed(seed)
    return RGGenerator(
        num_genes,
        embed_dim=PAPER["embed_dim"],
        latent_size=PAPER["g_ls"],
        g_n_feat=PAPER["g_n_feat"],
        image_size=PAPER["image_size"],
    ).apply(init_weights)


def machine_info() -> dict[str, Any]:
    """Where the numbers come from (CPU model, cores, versions, threads, load)."""
    import torch

    try:
        import monai

        monai_version = monai.__version__
    except ImportError:  # pragma: no cover
        monai_version = None
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_gib, 1) if mem_gib else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai_version,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def make_paper_prepared(
    folder: str | os.PathLike,
    *,
    n_train: int = 64,
    n_val: int = 8,
    image_size: int = PAPER["image_size"],
    num_genes: int = PAPER["num_genes"],
    num_bases: int = PAPER["num_bases"],
    seed: int = 12345,
) -> Path:
    """Write (or reuse) a synthetic prepared folder in the format ``rggan prepare`` writes.

    Images are a noisy lung-like background with a disc "nodule", masks are {-1, +1}, bases are
    nodule-free noise patches, RNA vectors are N(0, 1) (the transformed expression scale).
    Re-used as is when a ``datalist.json`` with the same sizes is already there.
    """
    folder = Path(folder)
    dl = folder / "datalist.json"
    want = {"image_size": image_size, "num_genes": num_genes, "num_bases": num_bases, "seed": seed}
    if dl.is_file():
        try:
            have = json.loads(dl.read_text())
            if all(have.get(k) == v for k, v in want.items()) and len(have.get("training", [])) == n_train:
                return folder
        except ValueError:
            pass
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.mgrid[:s, :s]
    splits: dict[str, list] = {"training": [], "validation": []}
    for i in range(n_train + n_val):
        pid = f"SYN-{i:03d}"
        d = folder / "samples" / pid
        d.mkdir(parents=True, exist_ok=True)
        r = s / 10 + rng.random() * s / 6
        cy, cx = s / 2 + rng.normal(0, s / 16, 2)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        mask = np.where(inside, 1.0, -1.0).astype(np.float32)[None]
        image = np.clip(rng.normal(-0.7, 0.15, (1, s, s)) + 0.9 * (mask > 0), -1, 1).astype(np.float32)
        bases = np.clip(rng.normal(-0.7, 0.15, (num_bases, s, s)), -1, 1).astype(np.float32)
        rna = rng.normal(size=num_genes).astype(np.float32)
        for name, arr in (("image", image), ("mask", mask), ("bases", bases), ("rna", rna)):
            np.save(d / f"{name}.npy", arr)
        splits["training" if i < n_train else "validation"].append(
            {
                "patient": pid,
                **{k: f"samples/{pid}/{k}.npy" for k in ("image", "mask", "bases", "rna")},
                "spacing": [0.7, 0.7],
                "slice_index": 0,
                "crop_box": [0, 0, s, s],
            }
        )
    (folder / "gene_transform.json").write_text(json.dumps({"synthetic": True}))
    dl.write_text(json.dumps({**want, "gene_transform": "gene_transform.json", **splits}, indent=1))
    return folder


def peak_rss_mib() -> dict[str, float]:
    """Peak resident set size of this process and of its largest (waited-for) child, in MiB."""
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"self": round(self_kib / 1024, 1), "largest_child": round(child_kib / 1024, 1)}


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs that ``FlopCounterMode`` attributes to one call of ``fn`` (matmuls and convolutions, fwd+bwd)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Print (and return) a GitHub-markdown table."""

    def fmt(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text)
    return text


def write_json(path: str | os.PathLike | None, payload: dict) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {path}", file=sys.stderr)
