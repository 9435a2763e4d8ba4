"""The gene transform: expression -> the generator's gene vector, fitted on the training patients only.

``GeneTransform`` selects genes, applies ``log2(x + 1)``, imputes and z-scores with statistics of the training
patients; it is saved as JSON beside the prepared dataset and applied unchanged to every other patient (see
``docs/spec.md``, "RNA table").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rggan import __version__
from rggan.data.rna.listing import listing
from rggan.errors import InputError, OutputError
from rggan.io import atomic_write_text

__all__ = ["ZHOU_METAGENES", "GeneTransformConfig", "GeneTransform"]

#: The 21 metagene-representative genes of Zhou et al., Radiology 2018 (Bakr/Gevaert metagenes).
ZHOU_METAGENES: tuple[str, ...] = (
    "LRIG1", "HPGD", "GDF15", "CDH2", "POSTN", "VCAN", "PDGFRA", "VCAM1", "CD44", "CD48", "CD4",
    "LYL1", "SPI1", "CD37", "VIM", "LMO2", "EGR2", "BGN", "COL4A1", "COL5A1", "COL5A2",
)  # fmt: skip

_FORMAT = "rggan.GeneTransform"
_FORMAT_VERSION = 1


@dataclass
class GeneTransformConfig:
    """How expression becomes the generator's gene vector (see ``docs/spec.md``, "RNA table").

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
            raise InputError(f"training patients not in the RNA table: {listing(missing)}")
        genes = list(expression.columns) if config.genes is None else config.genes
        absent = [g for g in genes if g not in expression.columns]
        if absent:
            raise InputError(f"{len(absent)} requested genes are not in the RNA table: {listing(absent)}")
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
            raise InputError(f"duplicated gene columns in the expression to transform: {listing(dups)}")
        absent = [g for g in self.genes if g not in expression.columns]
        if absent and fill_missing is None:
            raise InputError(
                f"{len(absent)} of the {self.num_genes} fitted genes are missing from the expression: "
                f"{listing(absent)} (pass fill_missing='median' to use the training medians)"
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
