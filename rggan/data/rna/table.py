"""The GEO GSE103584 RNA-seq table reader.

``read_rna_table`` turns ``GSE103584_R01_NSCLC_RNAseq.txt.gz`` (genes in rows, patients in columns,
Cufflinks FPKM, ``NA`` for missing values) into a patients × genes frame and reports what it had to
repair (see ``docs/spec.md``, "RNA table").
"""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from rggan.data.rna.listing import listing
from rggan.errors import InputError

__all__ = ["RNATable", "read_rna_table"]

logger = logging.getLogger(__name__)

_EXCEL_DATE = re.compile(
    r"^(\d{1,2}-(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)|(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)-\d{1,2})$",
    re.IGNORECASE,
)


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
        notes.append(f"{len(dup_genes)} duplicate gene symbols averaged (NA-aware): {listing(dup_genes)}")
    mangled = [g for g in frame.index if _EXCEL_DATE.match(g)]
    if mangled:
        notes.append(f"{len(mangled)} gene symbols look Excel-mangled into dates (kept as is): {listing(mangled)}")

    # Patients (columns of `frame` now): duplicated IDs are ambiguous, leave them out and report them.
    patients = pd.Index(frame.columns)
    dup_patients = sorted(patients[patients.duplicated()].unique().tolist())
    if dup_patients:
        frame = frame.loc[:, ~patients.isin(dup_patients)]
        notes.append(f"{len(dup_patients)} patient IDs occur in several columns, left out: {listing(dup_patients)}")
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
