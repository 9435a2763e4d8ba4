"""RNA-seq expression: the GEO GSE103584 table reader and the fitted gene transform.

``read_rna_table`` turns ``GSE103584_R01_NSCLC_RNAseq.txt.gz`` (genes in rows, patients in columns,
Cufflinks FPKM, ``NA`` for missing values) into a patients × genes frame and reports what it had to
repair. ``GeneTransform`` is fitted on the training patients only, saved as JSON beside the prepared
dataset, and applied unchanged to every other patient (spec §2.2, data_formats §3).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from rggan import __version__
from rggan.errors import InputError, OutputError
from rggan.io import atomic_write_text

__all__ = ["ZHOU_METAGENES", "RNATable", "read_rna_table", "GeneTransformConfig", "GeneTransform"]

logger = logging.getLogger(__name__)

#: The 21 metagene-representative genes of Zhou et al., Radiology 2018 (Bakr/Gevaert metagenes).
ZHOU_METAGENES: tuple[str, ...] = (
    "LRIG1", "HPGD", "GDF15", "CDH2", "POSTN", "VCAN", "PDGFRA", "VCAM1", "CD44", "CD48", "CD4",
    "LYL1", "SPI1", "CD37", "VIM", "LMO2", "EGR2", "BGN", "COL4A1", "COL5A1", "COL5A2",
)  # fmt: skip

_EXCEL_DATE = re.compile(
    r"^(\d{1,2}-(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)|(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)-\d{1,2})$",
    re.IGNORECASE,
)
_FORMAT = "rggan.GeneTransform"
_FORMAT_VERSION = 1
_MAX_LISTED = 20


def _listing(items: Sequence[str]) -> str:
    """Comma-separated items, cut after ``_MAX_LISTED`` with a count of the rest."""
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


@dataclass
class RNATable:
    """A parsed expression table.

    Attributes:
        expression: FPKM values, index = patient IDs (str), columns = gene symbols (str), NaN = missing.
            Patients listed in ``duplicate_patients`` are NOT in it.
        path: the file read.
        duplicate_genes: symbols that occurred on several rows (their rows were averaged, NA-aware).
        duplicate_patients: patient IDs that occurred in several columns; they are left out of
            ``expression`` and must be excluded by the caller with a reason.
        notes: human-readable remarks on everything repaired or suspicious.
    """

    expression: pd.DataFrame
    path: Path
    duplicate_genes: list[str] = field(default_factory=list)
    duplicate_patients: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_frame(path: Path, sep: str, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` with every way a damaged file fails turned into an :class:`InputError`."""
    try:
        return pd.read_csv(path, sep=sep, **kwargs)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(
            f"RNA table {path} is damaged or incomplete ({exc}); download it again or unpack it and pass the .txt"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"RNA table {path} is empty; pass the GEO file GSE103584_R01_NSCLC_RNAseq.txt.gz") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"RNA table {path} cannot be parsed as a {sep!r}-separated table: {exc}") from exc
    except OSError as exc:
        raise InputError(f"RNA table {path} cannot be read: {exc}") from exc


def read_rna_table(path: str | Path, layout: Literal["geo", "patients_by_genes"] = "geo") -> RNATable:
    """Read an RNA-seq expression table.

    Args:
        path: ``.txt``/``.txt.gz`` (tab-separated) or ``.csv``/``.csv.gz`` (comma-separated); gzip is
            detected from the name.
        layout: ``"geo"`` (default): genes in rows, patients in columns, as GSE103584; the first header
            cell may be empty, a label, or absent. ``"patients_by_genes"``: patients in rows, genes in columns.

    Returns:
        An :class:`RNATable` with the expression as patients × genes.

    Raises:
        InputError: missing, empty, damaged or unparsable file; a non-numeric value; no patients or genes.
    """
    path = Path(path)
    if layout not in ("geo", "patients_by_genes"):
        raise InputError(f"unknown RNA table layout {layout!r}; use 'geo' or 'patients_by_genes'")
    if not path.is_file():
        raise InputError(f"RNA table {path} not found; pass the GEO file GSE103584_R01_NSCLC_RNAseq.txt.gz (or .txt)")
    if path.stat().st_size == 0:
        raise InputError(f"RNA table {path} is empty (0 bytes); download it again")
    sep = "," if path.name.lower().removesuffix(".gz").endswith(".csv") else "\t"

    # pandas renames duplicate header cells (R01-005 -> R01-005.1): read the raw header ourselves.
    header = _read_frame(path, sep, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
    frame = _read_frame(path, sep, index_col=0, na_values=["NA"])
    if len(header) < frame.shape[1]:
        raise InputError(f"RNA table {path}: the header has fewer cells than the data rows; the file is malformed")
    frame.columns = pd.Index([str(c).strip() for c in header[len(header) - frame.shape[1] :]])  # drop a label cell
    _check_numeric(frame, path, layout)
    if layout == "patients_by_genes":
        frame = frame.T
        frame.columns = pd.Index([str(c).strip() for c in frame.columns])
    notes: list[str] = []

    # Genes (rows of `frame` now): drop empty / '_'-prefixed symbols, average duplicates, note Excel dates.
    symbols = pd.Series(frame.index, dtype=object).map(lambda s: "" if pd.isna(s) else str(s).strip())
    bad = (symbols == "") | symbols.str.startswith("_")
    if bad.any():
        notes.append(f"dropped {int(bad.sum())} rows with an empty or '_'-prefixed gene symbol")
    frame = frame.loc[~bad.to_numpy()]
    frame.index = pd.Index(symbols[~bad].tolist())
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InputError(
            f"RNA table {path} has no patient columns or no gene rows; expected a {sep!r}-separated table with "
            + ("genes in rows and patients in columns" if layout == "geo" else "patients in rows and genes in columns")
        )
    frame = frame.astype(np.float64)
    if np.isinf(frame.to_numpy()).any():
        raise InputError(f"RNA table {path} holds infinite values; expression values must be finite numbers or NA")
    dup_genes = sorted(frame.index[frame.index.duplicated()].unique().tolist())
    if dup_genes:
        frame = frame.groupby(level=0, sort=False).mean()
        notes.append(f"{len(dup_genes)} duplicate gene symbols averaged (NA-aware): {_listing(dup_genes)}")
    mangled = [g for g in frame.index if _EXCEL_DATE.match(g)]
    if mangled:
        notes.append(f"{len(mangled)} gene symbols look Excel-mangled into dates (kept as is): {_listing(mangled)}")

    # Patients (columns of `frame` now): duplicated IDs are ambiguous, leave them out and report them.
    patients = pd.Index(frame.columns)
    dup_patients = sorted(patients[patients.duplicated()].unique().tolist())
    if dup_patients:
        frame = frame.loc[:, ~patients.isin(dup_patients)]
        notes.append(f"{len(dup_patients)} patient IDs occur in several columns, left out: {_listing(dup_patients)}")
    if frame.shape[1] == 0:
        raise InputError(f"RNA table {path} has no patient left: every patient ID occurs in several columns")

    expression = frame.T
    expression.index.name, expression.columns.name = "patient", "gene"
    for note in notes:
        logger.warning("%s: %s", path, note)
    return RNATable(expression, path, dup_genes, dup_patients, notes)


def _check_numeric(frame: pd.DataFrame, path: Path, layout: str) -> None:
    """Raise an :class:`InputError` naming the first non-numeric cell of the table as read (rows from 1)."""
    for col_pos, (col_label, column) in enumerate(frame.items()):
        if pd.api.types.is_bool_dtype(column):
            bad = column.notna()
        elif pd.api.types.is_numeric_dtype(column):
            continue
        else:
            bad = column.notna() & pd.to_numeric(column, errors="coerce").isna()
        if not bad.any():
            continue
        row_pos = int(np.flatnonzero(bad.to_numpy())[0])
        row_label, value = frame.index[row_pos], column.iloc[row_pos]
        gene, patient = (row_label, col_label) if layout == "geo" else (col_label, row_label)
        raise InputError(
            f"RNA table {path}: non-numeric value {value!r} for gene {gene!r}, patient {patient!r} "
            f"(data row {row_pos + 1}, column {col_pos + 2}); values must be numbers or NA"
        )


@dataclass
class GeneTransformConfig:
    """How expression becomes the generator's gene vector (spec §2.2).

    Attributes:
        max_na_fraction: drop genes whose NA fraction over the training patients exceeds this
            (0.0 = the prototype's rule: drop any gene with an NA).
        log2: apply ``log2(x + 1)`` to FPKM.
        zscore: per-gene z-score with training mean / std (std 0 -> 1).
        impute: remaining NAs become the gene's training median (``"median"``) or 0 (``"zero"``).
        genes: explicit gene subset, in this order (e.g. :data:`ZHOU_METAGENES`).
        top_n_variance: keep the N genes with the largest training variance (after the steps above).
    """

    max_na_fraction: float = 0.0
    log2: bool = True
    zscore: bool = True
    impute: str = "median"
    genes: list[str] | None = None
    top_n_variance: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_na_fraction <= 1.0:
            raise InputError(f"max_na_fraction must be in [0, 1], got {self.max_na_fraction}")
        if self.impute not in ("median", "zero"):
            raise InputError(f"impute must be 'median' or 'zero', got {self.impute!r}")
        if self.top_n_variance is not None and self.top_n_variance < 1:
            raise InputError(f"top_n_variance must be >= 1, got {self.top_n_variance}")
        if self.genes is not None:
            self.genes = list(dict.fromkeys(str(g) for g in self.genes))
            if not self.genes:
                raise InputError("the gene subset is empty")

    @classmethod
    def prototype(cls) -> GeneTransformConfig:
        """The 2020 prototype: drop genes with any NA, raw FPKM (no log, no z-score)."""
        return cls(max_na_fraction=0.0, log2=False, zscore=False)


class GeneTransform:
    """Gene selection + log + imputation + z-score, fitted on training patients and applied to any patient.

    Build with :meth:`fit` or :meth:`load`. Statistics are in the (optionally log2) expression space:
    ``fill`` is the per-gene imputation value, ``mean``/``std`` the z-score statistics.
    """

    def __init__(
        self,
        config: GeneTransformConfig,
        genes: Sequence[str],
        fill: np.ndarray,
        median: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        train_patients: Sequence[str] = (),
        notes: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.genes = list(genes)
        self.fill = np.asarray(fill, dtype=np.float64)
        self.median = np.asarray(median, dtype=np.float64)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.train_patients = list(train_patients)
        self.notes = list(notes)

    @property
    def num_genes(self) -> int:
        """Length of the transformed vector."""
        return len(self.genes)

    @classmethod
    def fit(
        cls, expression: pd.DataFrame, train_patients: Sequence[str], config: GeneTransformConfig | None = None
    ) -> GeneTransform:
        """Fit every statistic (NA filter, variance ranking, medians, mean/std) on the training patients only.

        Args:
            expression: patients × genes FPKM (``RNATable.expression``).
            train_patients: IDs of the training patients; all must be in ``expression``.
            config: the preprocessing; default :class:`GeneTransformConfig`.

        Returns:
            The fitted transform.

        Raises:
            InputError: unknown training patients or subset genes, negative FPKM with ``log2``, no gene left.
        """
        config = config or GeneTransformConfig()
        train = list(dict.fromkeys(str(p) for p in train_patients))
        if not train:
            raise InputError("cannot fit the gene transform: no training patient")
        missing = [p for p in train if p not in expression.index]
        if missing:
            raise InputError(f"training patients not in the RNA table: {_listing(missing)}")
        genes = list(expression.columns) if config.genes is None else config.genes
        absent = [g for g in genes if g not in expression.columns]
        if absent:
            raise InputError(f"{len(absent)} requested genes are not in the RNA table: {_listing(absent)}")
        values = _as_float(expression.loc[train, genes])
        if config.log2:
            values = _log2p1(values, "training")
        notes: list[str] = []

        na_fraction = np.isnan(values).mean(axis=0)
        keep = (na_fraction <= config.max_na_fraction) & (na_fraction < 1.0)
        if not keep.all():
            notes.append(
                f"dropped {int((~keep).sum())} of {len(genes)} genes with NA fraction > {config.max_na_fraction}"
                " (or no training value)"
            )
        genes, values = [g for g, k in zip(genes, keep) if k], values[:, keep]
        if not genes:
            raise InputError(
                f"no gene left after dropping genes with NA fraction > {config.max_na_fraction} in the "
                f"{len(train)} training patients; raise max_na_fraction"
            )
        median = np.nanmedian(values, axis=0)
        fill = median if config.impute == "median" else np.zeros_like(median)
        values = np.where(np.isnan(values), fill, values)

        if config.top_n_variance is not None:
            if config.top_n_variance < len(genes):
                order = np.argsort(-values.var(axis=0), kind="stable")[: config.top_n_variance]
                chosen = np.sort(order)  # keep table / subset order
                genes = [genes[i] for i in chosen]
                values, median, fill = values[:, chosen], median[chosen], fill[chosen]
                notes.append(f"kept the {len(genes)} genes of highest training variance")
            else:
                notes.append(f"top_n_variance={config.top_n_variance} >= {len(genes)} genes left: kept all")

        if config.zscore:
            mean, std = values.mean(axis=0), values.std(axis=0)
            std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        else:
            mean, std = np.zeros(len(genes)), np.ones(len(genes))
        return cls(config, genes, fill, median, mean, std, train, notes)

    def transform(self, expression: pd.DataFrame, fill_missing: str | None = None) -> np.ndarray:
        """Apply the fitted transform.

        Args:
            expression: patients × genes FPKM; extra genes are ignored.
            fill_missing: ``None`` (a fitted gene absent from ``expression`` is an error) or ``"median"``
                (absent genes take the training median).

        Returns:
            float32 array (patients × ``num_genes``), rows in ``expression.index`` order.

        Raises:
            InputError: absent genes (without ``fill_missing``), duplicated gene columns, bad values.
        """
        if fill_missing not in (None, "median"):
            raise InputError(f"fill_missing must be None or 'median', got {fill_missing!r}")
        if expression.columns.duplicated().any():
            dups = sorted(set(expression.columns[expression.columns.duplicated()]))
            raise InputError(f"duplicated gene columns in the expression to transform: {_listing(dups)}")
        absent = [g for g in self.genes if g not in expression.columns]
        if absent and fill_missing is None:
            raise InputError(
                f"{len(absent)} of the {self.num_genes} fitted genes are missing from the expression: "
                f"{_listing(absent)} (pass fill_missing='median' to use the training medians)"
            )
        values = _as_float(expression.reindex(columns=self.genes))
        if self.config.log2:
            values = _log2p1(values, "input")
        fill = np.where(np.isin(self.genes, absent), self.median, self.fill)
        values = np.where(np.isnan(values), fill, values)
        return ((values - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (what :meth:`save` writes)."""
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "rggan_version": __version__,
            "config": asdict(self.config),
            "genes": self.genes,
            "fill": self.fill.tolist(),
            "median": self.median.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "train_patients": self.train_patients,
            "notes": self.notes,
        }

    def save(self, path: str | Path) -> None:
        """Write the transform as JSON atomically (temporary file in the same folder, then ``os.replace``).

        Raises:
            OutputError: the file cannot be written.
        """
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise OutputError(f"cannot write the gene transform to {path}: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> GeneTransform:
        """Read a transform written by :meth:`save`.

        Raises:
            InputError: missing, unreadable or malformed file.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the gene transform {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise InputError(f"{path} is not an rggan gene transform file")
        if data.get("format_version", 0) > _FORMAT_VERSION:
            raise InputError(f"{path} was written by a newer rggan ({data.get('rggan_version')}); upgrade rggan")
        try:
            transform = cls(
                GeneTransformConfig(**data["config"]),
                data["genes"],
                data["fill"],
                data["median"],
                data["mean"],
                data["std"],
                data.get("train_patients", ()),
                data.get("notes", ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"gene transform {path} is malformed: {exc!r}") from exc
        n = transform.num_genes
        if not all(a.shape == (n,) for a in (transform.fill, transform.median, transform.mean, transform.std)):
            raise InputError(f"gene transform {path} is malformed: statistics do not match its {n} genes")
        return transform


def _as_float(frame: pd.DataFrame) -> np.ndarray:
    """Frame values as float64, or an :class:`InputError`."""
    try:
        return frame.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise InputError(f"expression values must be numbers or NA: {exc}") from exc


def _log2p1(values: np.ndarray, what: str) -> np.ndarray:
    """``log2(x + 1)``; negative FPKM means the data is already log-scaled."""
    if (values < 0).any():
        raise InputError(
            f"negative expression values in the {what} data: FPKM cannot be negative; if the table is "
            "already log-transformed, set log2=False"
        )
    return np.log2(values + 1.0)
