"""The NBIA download layout: study/series folder names, slice file names and ``metadata.csv``.

The NBIA Data Retriever writes a collection either in the *descriptive* layout
(``<patient>/<MM-DD-YYYY-NA-description-uid5>/<series number-description-uid5>/1-01.dcm``) or the *classic*
one (``<patient>/<StudyInstanceUID>/<SeriesInstanceUID>/``), plus one ``metadata.csv`` row per series.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rggan.demo.headers import StudyInfo
from rggan.demo.identifiers import COLLECTION, DATA_DESCRIPTION_URI, SOP_CLASS_NAMES

__all__ = ["nbia_study_folder", "nbia_series_folder", "nbia_file_names", "SeriesRecord", "NbiaLayout"]

METADATA_HEADER = (
    "Series UID,Collection,3rd Party Analysis,Data Description URI,Subject ID,Study UID,Study Description,Study Date,"
    "Series Description,Manufacturer,Modality,SOP Class Name,SOP Class UID,Number of Images,File Size,File Location,"
    "Download Timestamp"
)


def _nbia_text(text: str) -> str:
    return text[:53].replace("/", "-")


def nbia_study_folder(study: StudyInfo) -> str:
    """Descriptive-layout study folder: ``MM-DD-YYYY-NA-<StudyDescription[:53]>-<last5 of StudyUID>``."""
    d = study.date
    parts = [f"{d[4:6]}-{d[6:8]}-{d[0:4]}", study.study_id or "NA"]
    if study.description:
        parts.append(_nbia_text(study.description))
    parts.append(study.study_uid[-5:])
    return "-".join(parts)


def nbia_series_folder(series_number: int | float, description: str, series_uid: str) -> str:
    """Descriptive-layout series folder: ``<SeriesNumber %.6f>-<SeriesDescription[:53]>-<last5>``."""
    parts = [f"{float(series_number):.6f}"]
    if description:
        parts.append(_nbia_text(description))
    parts.append(series_uid[-5:])
    return "-".join(parts)


def nbia_file_names(n: int, style: str = "nbia") -> list[str]:
    """File names by rank 1..n: ``1-001.dcm`` style (padded to the digits of n) or ``000000.dcm`` (``"legacy"``)."""
    if style == "nbia":
        width = len(str(n))
        return [f"1-{i:0{width}d}.dcm" for i in range(1, n + 1)]
    if style == "legacy":
        return [f"{i - 1:06d}.dcm" for i in range(1, n + 1)]
    raise ValueError(f"unknown file-name style {style!r} (use 'nbia' or 'legacy')")


def _human_size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.2f} KB"


@dataclass
class SeriesRecord:
    """One written series, as ``metadata.csv`` lists it."""

    patient: str
    study: StudyInfo
    series_uid: str
    description: str
    manufacturer: str
    modality: str
    sop_class: str
    folder: Path
    third_party: str = "NO"


class NbiaLayout:
    """Series folders of one collection folder in the ``"descriptive"`` or ``"classic"`` layout, and its metadata.

    Args:
        collection: the collection folder (``.../NSCLC Radiogenomics``).
        layout: ``"descriptive"`` or ``"classic"``.
    """

    def __init__(self, collection: Path, layout: str) -> None:
        if layout not in ("descriptive", "classic"):
            raise ValueError(f"layout must be 'descriptive' or 'classic', got {layout!r}")
        self.collection = collection
        self.layout = layout
        self.records: list[SeriesRecord] = []

    def series_folder(self, patient: str, study: StudyInfo, series_number: int, description: str, uid: str) -> Path:
        """The folder of a series of ``patient`` in ``study``."""
        if self.layout == "classic":
            return self.collection / patient / study.study_uid / uid
        series = nbia_series_folder(series_number, description, uid)
        return self.collection / patient / nbia_study_folder(study) / series

    def add(self, rec: SeriesRecord) -> None:
        """Record a written series (one ``metadata.csv`` row, in the order added)."""
        self.records.append(rec)

    def write_metadata(self, path: Path) -> None:
        """Write ``metadata.csv``: CRLF lines, unquoted fields (descriptions may hold commas), fixed timestamps."""
        rows = [METADATA_HEADER]
        for i, r in enumerate(self.records):
            files = sorted(p for p in r.folder.iterdir() if p.is_file())
            size = sum(p.stat().st_size for p in files)
            d = r.study.date
            ts = f"2021-09-30T21:{38 + i // 60 % 20:02d}:{i % 60:02d}.{(i * 37) % 1000:03d}"
            rows.append(",".join([
                r.series_uid, COLLECTION, r.third_party, DATA_DESCRIPTION_URI, r.patient, r.study.study_uid,
                r.study.description, f"{d[4:6]}-{d[6:8]}-{d[0:4]}", r.description, r.manufacturer, r.modality,
                SOP_CLASS_NAMES[r.sop_class], r.sop_class, str(len(files)), _human_size(size),
                "./" + r.folder.relative_to(self.collection.parent).as_posix(), ts,
            ]))  # fmt: skip
        path.write_bytes(("\r\n".join(rows) + "\r\n").encode())
