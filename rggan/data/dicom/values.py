"""Typed access to DICOM header values, shared by the readers of :mod:`rggan.data.dicom`.

A damaged download holds values of the wrong type or length; every helper here returns None (or '') for such
a value instead of raising, so the caller can report the file and go on.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = ["quiet", "slice_normal", "to_floats", "to_float", "to_int", "get_text", "read_dataset"]

P = ParamSpec("P")
R = TypeVar("R")


def quiet(func: Callable[P, R]) -> Callable[P, R]:
    """Silence pydicom's warnings on invalid values while ``func`` runs: damaged values are reported per file.

    Args:
        func: the function to wrap.

    Returns:
        The wrapped function.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return func(*args, **kwargs)

    return wrapper


def slice_normal(iop: Sequence[float]) -> np.ndarray:
    """The unit slice normal ``cross(IOP[:3], IOP[3:])`` of an ImageOrientationPatient.

    Args:
        iop: the 6 direction cosines (row direction, column direction).

    Returns:
        ``(3,)`` unit normal; the zero vector for a degenerate orientation.
    """
    r = np.asarray(iop[:3], dtype=float)
    c = np.asarray(iop[3:6], dtype=float)
    n = np.cross(r, c)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


def to_floats(value: Any, n: int | None = None) -> tuple[float, ...] | None:
    """A multi-valued number as a tuple of floats.

    Args:
        value: a header value (a single number, a string or a sequence).
        n: the required number of values; None accepts any.

    Returns:
        The floats, or None when the value is absent, not numeric or of another length.
    """
    if value is None:
        return None
    try:
        seq = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
        vals = tuple(float(v) for v in seq)
    except (TypeError, ValueError):
        return None
    if n is not None and len(vals) != n:
        return None
    return vals


def _number(value: Any, kind: Callable[[Any], R]) -> R | None:
    """``kind(value)``, or None when the value is absent, empty or not convertible."""
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def to_float(value: Any) -> float | None:
    """A header value as a float, or None when absent, empty or not numeric."""
    return _number(value, float)


def to_int(value: Any) -> int | None:
    """A header value as an int, or None when absent, empty or not an integer."""
    return _number(value, int)


def get_text(ds: Dataset, keyword: str) -> str:
    """A header value as a stripped string ('' when absent).

    Args:
        ds: the dataset.
        keyword: the DICOM keyword, e.g. ``"PatientID"``.

    Returns:
        The value's text.
    """
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def read_dataset(path: Path) -> Dataset:
    """Read a whole file; for a file without File Meta, set the transfer syntax it was read with.

    Args:
        path: an indexed DICOM file (with or without preamble).

    Returns:
        The dataset, pixel data included.
    """
    ds = pydicom.dcmread(path, force=True)  # indexed files are DICOM, with or without preamble
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        implicit, little = ds.original_encoding
        if implicit is not None:
            if not hasattr(ds, "file_meta"):
                ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            )
    return ds
