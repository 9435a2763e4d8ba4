"""Simulated gene expression for the demo's RNA table: gene symbols, co-expression modules, the gzipped table.

The table imitates the GEO series GSE103584 (see "RNA table" in ``docs/spec.md``): one row per gene symbol,
one column per patient, FPKM values with 6 significant digits, ``NA`` for missing values, Excel-mangled and
duplicated symbols.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["METAGENES", "Expression", "gene_names", "simulate_expression", "write_rna_table"]

#: The 21 metagene-representative genes of Zhou et al. (Radiology 2018), which the RNA table always holds.
METAGENES = (
    "LRIG1 HPGD GDF15 CDH2 POSTN VCAN PDGFRA VCAM1 CD44 CD48 CD4 LYL1 SPI1 CD37 VIM LMO2 EGR2 BGN COL4A1 COL5A1 COL5A2"
).split()

_REAL_GENES = (
    "EGFR KRAS TP53 ALK MET ERBB2 BRAF PIK3CA STK11 KEAP1 NKX2-1 SFTPC SFTPB NAPSA MKI67 TOP2A CCNB1 CDK1 BUB1 AURKA "
    "MYC CDKN2A RB1 PTEN SMAD4 NOTCH1 FGFR1 SOX2 TP63 KRT5 KRT7 MUC1 CEACAM5 EPCAM CDH1 SNAI2 ZEB1 TWIST1 FN1 SPARC "
    "COL1A1 COL1A2 COL3A1 FAP ACTA2 PTPRC CD3E CD8A MS4A1 CD68 CD163 LYZ HLA-DRA B2M GAPDH ACTB VEGFA HIF1A CA9 "
    "SLC2A1 LDHA PGK1 ENO1 ALDOA MMP2 MMP9 TIMP1 SERPINE1 THBS1 JUN FOS EGR1 DUSP1 KLF4 ATF3"
).split()
#: Excel-mangled / legacy symbols of the real table (SEPT2 appears twice: duplicate symbols occur).
_MANGLED = ("MARCH1", "SEPT2", "SEPT2", "1-Mar")

_MODULES: dict[str, tuple[str, ...]] = {
    "proliferation": ("MKI67", "TOP2A", "CCNB1", "CDK1", "BUB1", "AURKA", "MYC"),
    "stromal_ecm": ("POSTN", "VCAN", "BGN", "COL4A1", "COL5A1", "COL5A2", "PDGFRA", "COL1A1", "COL1A2", "COL3A1",
                    "FN1", "SPARC", "FAP"),
    "immune": ("CD48", "CD4", "LYL1", "SPI1", "CD37", "LMO2", "PTPRC", "CD3E", "CD8A", "MS4A1", "CD68", "CD163",
               "VCAM1", "CD44"),
    "emt_hypoxia": ("VIM", "CDH2", "SNAI2", "ZEB1", "TWIST1", "HIF1A", "CA9", "SLC2A1", "VEGFA"),
    "epithelial": ("LRIG1", "HPGD", "GDF15", "EGR2", "NKX2-1", "SFTPC", "SFTPB", "NAPSA", "CDH1", "EPCAM", "KRT7"),
}  # fmt: skip

# makers of plausible filler gene symbols, picked uniformly (each draws its numbers from the same rng)
_FILLER_GENE_NAMES: tuple[Callable[[np.random.Generator], str], ...] = (
    lambda rng: f"LOC{rng.integers(100000, 999999)}",
    lambda rng: f"KIAA{rng.integers(100, 2000):04d}",
    lambda rng: f"C{rng.integers(1, 23)}orf{rng.integers(10, 200)}",
    lambda rng: f"ZNF{rng.integers(100, 900)}",
    lambda rng: f"FAM{rng.integers(20, 230)}{'ABC'[int(rng.integers(0, 3))]}",
    lambda rng: f"TMEM{rng.integers(10, 260)}",
    lambda rng: f"SLC{rng.integers(1, 45)}A{rng.integers(1, 14)}",
    lambda rng: f"CCDC{rng.integers(10, 190)}",
    lambda rng: f"ANKRD{rng.integers(10, 60)}",
    lambda rng: f"LINC{rng.integers(0, 2700):05d}",
)


def gene_names(n_genes: int, rng: np.random.Generator, drivers: Sequence[str]) -> list[str]:
    """Gene symbols of the table (before shuffling): metagenes and drivers, real genes, mangled symbols, fillers.

    Args:
        n_genes: wanted number of rows; more are returned when the required symbols do not fit.
        rng: draws the filler symbols.
        drivers: the driver genes of the planted phenotypes (always included).

    Returns:
        the symbols, duplicates included.
    """
    required = list(dict.fromkeys(METAGENES + list(drivers)))
    names = list(required)
    for g in _REAL_GENES + [g for mod in _MODULES.values() for g in mod]:
        if g not in names:
            names.append(g)
    names += list(_MANGLED)
    names = names[: max(n_genes, len(required) + len(_MANGLED))]
    if "SEPT2" not in names:
        names += list(_MANGLED)
    seen = set(names)
    while len(names) < n_genes:
        g = _FILLER_GENE_NAMES[int(rng.integers(0, len(_FILLER_GENE_NAMES)))](rng)
        if g not in seen:
            seen.add(g)
            names.append(g)
    return names


@dataclass
class Expression:
    """Simulated expression of every simulated patient (columns: patients in simulation order)."""

    genes: list[str]  # row order of the written table
    log2: np.ndarray  # (G, P) log2(FPKM + 1) as written (after 6-digit rounding), all simulated patients
    na: np.ndarray  # (G, P) bool
    modules: dict[str, dict[str, float]]  # module -> gene -> loading
    noise_genes: list[str]


def _module_loadings(names: list[str], drivers: set[str], rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Module -> gene -> loading: each module's listed genes present in ``names`` plus six generated genes."""
    generated = [g for g in names if g not in _REAL_GENES and g not in METAGENES and g not in _MANGLED]
    generated = [generated[i] for i in rng.permutation(len(generated))]
    modules: dict[str, dict[str, float]] = {}
    gi = 0
    for m, members in _MODULES.items():
        extra = generated[gi : gi + 6]
        gi += 6
        modules[m] = {}
        for g in [x for x in members if x in names] + extra:
            sign = -1.0 if (g not in drivers and rng.random() < 0.2) else 1.0
            modules[m][g] = round(sign * float(rng.uniform(0.7, 1.1)), 4)
    return modules


def simulate_expression(n_genes: int, n_patients: int, rng: np.random.Generator, drivers: Sequence[str]) -> Expression:
    """Simulate log2 expression: per-gene level and noise plus module factors; FPKM rounded, some values NA.

    Args:
        n_genes: wanted number of genes (see :func:`gene_names`).
        n_patients: number of simulated patients (columns).
        rng: the generator every random draw comes from.
        drivers: the driver genes (higher, less noisy levels; never NA; never negatively loaded).

    Returns:
        the expression, rows in the (shuffled) order of the written table.
    """
    names = gene_names(n_genes, rng, drivers)
    driver_set = set(drivers)
    modules = _module_loadings(names, driver_set, rng)
    in_module = {g for mod in modules.values() for g in mod}
    noise_genes = [g for g in dict.fromkeys(names) if g not in in_module]

    factors = rng.standard_normal((len(modules), n_patients))
    log2 = np.empty((len(names), n_patients))
    module_names = list(modules)
    for i, g in enumerate(names):
        mu = float(rng.uniform(4.5, 8.5)) if g in driver_set else float(rng.uniform(0.3, 8.0))
        sd_noise = float(rng.uniform(0.35, 0.6)) if g in driver_set else float(rng.uniform(0.3, 1.2))
        lat = mu + sd_noise * rng.standard_normal(n_patients)
        for mi, m in enumerate(module_names):
            if g in modules[m]:
                lat = lat + 0.8 * modules[m][g] * factors[mi]
        log2[i] = lat
    fpkm = np.maximum(np.exp2(log2) - 1.0, 0.0)
    fpkm[fpkm < 0.05] = 0.0
    fpkm = np.array([[float(f"{v:.6g}") for v in row] for row in fpkm])
    na = np.zeros_like(fpkm, dtype=bool)
    for i, g in enumerate(names):
        if g in driver_set or g in METAGENES:
            continue
        if rng.random() < 0.3:
            na[i] = rng.random(n_patients) < rng.uniform(0.02, 0.3)
    order = rng.permutation(len(names))
    return Expression(
        genes=[names[i] for i in order],
        log2=np.log2(fpkm[order] + 1.0),
        na=na[order],
        modules=modules,
        noise_genes=noise_genes,
    )


def write_rna_table(path: Path, expr: Expression, cols: list[int], ids: list[str]) -> None:
    """Write the gzipped tab-separated FPKM table (gzip mtime 0, so the bytes are reproducible).

    Args:
        path: the ``.txt.gz`` file.
        expr: the simulated expression.
        cols: the simulated-patient columns to write, in table order.
        ids: patient IDs of the simulated patients.
    """
    lines = ["\t".join(["gene"] + [ids[c] for c in cols])]
    fpkm = np.exp2(expr.log2) - 1.0
    for i, g in enumerate(expr.genes):
        vals = ["NA" if expr.na[i, c] else f"{max(fpkm[i, c], 0.0):.6g}" for c in cols]
        lines.append("\t".join([g] + vals))
    data = ("\n".join(lines) + "\n").encode()
    with open(path, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
        gz.write(data)
