"""Exception types with the process exit code each one maps to.

Per-patient problems (:class:`PatientDataError`) never escape a batch job: the prepare
step records them in its report and goes on. Global problems stop the job with one clear
message and a distinct exit code.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RGGANError", "InputError", "OutputError", "NoUsableDataError", "PatientDataError", "DependencyError"]


class RGGANError(Exception):
    """Base class of every error rggan raises on purpose."""

    exit_code = 1


class InputError(RGGANError):
    """Unusable global input: a wrong ``--input`` folder, an unreadable RNA table, ..."""

    exit_code = 3


class NoUsableDataError(RGGANError):
    """Every patient was excluded, or a dataset folder holds no usable sample."""

    exit_code = 4


class OutputError(RGGANError):
    """The output location is unsafe (e.g. inside the input) or cannot be written."""

    exit_code = 5


class DependencyError(RGGANError):
    """An optional package a command needs is not installed (e.g. ONNX for ``rggan export``)."""

    exit_code = 7


class PatientDataError(RGGANError):
    """A problem confined to one patient; the patient is excluded with this reason.

    Args:
        patient: patient ID, e.g. ``R01-023``.
        reason: what is wrong and, where possible, what to do.
        path: the file or folder the problem was found in.
    """

    exit_code = 6

    def __init__(self, patient: str, reason: str, path: str | Path | None = None) -> None:
        self.patient = patient
        self.reason = reason
        self.path = str(path) if path is not None else None
        where = f" ({self.path})" if self.path else ""
        super().__init__(f"{patient}: {reason}{where}")
