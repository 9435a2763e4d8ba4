"""SEG -> CT: the source references of a SEG header and the CT series the SEG was drawn on."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from rggan.data.dicom.records import DicomIndex, SeriesInfo
from rggan.data.dicom.values import get_text, quiet, to_floats
from rggan.errors import PatientDataError

__all__ = [
    "SegReferences",
    "seg_references",
    "seg_frame_positions",
    "dataset_frame_positions",
    "frame_position",
    "collect_referenced_uids",
    "resolve_referenced_ct",
]

logger = logging.getLogger(__name__)


@dataclass
class SegReferences:
    """Source references found in a SEG header.

    Attributes:
        instance_uids: every ReferencedSOPInstanceUID found (any location), sorted.
        series_uids: SeriesInstanceUIDs named by ReferencedSeriesSequence, sorted.
    """

    instance_uids: list[str]
    series_uids: list[str]


def collect_referenced_uids(items: Iterable[Dataset] | None, out: set[str]) -> None:
    """Collect ReferencedSOPInstanceUIDs from Derivation/Source/ReferencedImage sequence items.

    Args:
        items: sequence items (None or empty: nothing to collect).
        out: the set the UIDs are added to.
    """
    for item in items or []:
        for keyword in ("SourceImageSequence", "ReferencedImageSequence"):
            for ref in item.get(keyword) or []:
                uid = get_text(ref, "ReferencedSOPInstanceUID")
                if uid:
                    out.add(uid)
        uid = get_text(item, "ReferencedSOPInstanceUID")
        if uid:
            out.add(uid)


def seg_references(ds: Dataset) -> SegReferences:
    """Collect a SEG's source references from every location producers use.

    Looked at: ReferencedSeriesSequence (series UIDs and their ReferencedInstanceSequence), top-level
    SourceImageSequence and ReferencedImageSequence, Shared and per-frame functional groups'
    DerivationImageSequence > SourceImageSequence and ReferencedImageSequence.

    Args:
        ds: the SEG dataset (pixel data not needed).

    Returns:
        The :class:`SegReferences`.
    """
    instances: set[str] = set()
    series: set[str] = set()
    for item in ds.get("ReferencedSeriesSequence") or []:
        uid = get_text(item, "SeriesInstanceUID")
        if uid:
            series.add(uid)
        for ref in item.get("ReferencedInstanceSequence") or []:
            uid = get_text(ref, "ReferencedSOPInstanceUID")
            if uid:
                instances.add(uid)
    collect_referenced_uids([ds], instances)
    groups = list(ds.get("SharedFunctionalGroupsSequence") or []) + list(
        ds.get("PerFrameFunctionalGroupsSequence") or []
    )
    for group in groups:
        collect_referenced_uids(group.get("DerivationImageSequence"), instances)
        collect_referenced_uids(group.get("ReferencedImageSequence"), instances)
    return SegReferences(sorted(instances), sorted(series))


@quiet
def seg_frame_positions(path: str | Path) -> list[tuple[float, float, float]]:
    """The ImagePositionPatient of every frame of a SEG file, read from its header ([] when unreadable).

    Args:
        path: a DICOM SEG file.

    Returns:
        One (x, y, z) per frame that has a position.
    """
    try:
        return dataset_frame_positions(pydicom.dcmread(path, stop_before_pixels=True, force=True))
    except Exception:  # noqa: BLE001 - the SEG is read again (and its problem reported) by read_seg_mask
        return []


def dataset_frame_positions(ds: Dataset) -> list[tuple[float, float, float]]:
    """The ImagePositionPatient of every frame of a SEG dataset (see :func:`seg_frame_positions`).

    Args:
        ds: the SEG dataset (pixel data not needed).

    Returns:
        One (x, y, z) per frame that has a position.
    """
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    out = []
    for item in ds.get("PerFrameFunctionalGroupsSequence") or []:
        pos = frame_position(item, shared)
        if pos is not None:
            out.append(pos)
    return out


def frame_position(item: Dataset | None, shared: Dataset | None) -> tuple[float, float, float] | None:
    """A SEG frame's ImagePositionPatient: per-frame PlanePositionSequence, else the shared one.

    Args:
        item: the frame's PerFrameFunctionalGroupsSequence item (None when absent).
        shared: the SharedFunctionalGroupsSequence item (None when absent).

    Returns:
        (x, y, z) in mm, or None when neither group holds a valid position.
    """
    for group in (item, shared):
        if group is not None and group.get("PlanePositionSequence"):
            pos = to_floats(group.PlanePositionSequence[0].get("ImagePositionPatient"), 3)
            if pos is not None:
                return pos  # type: ignore[return-value]
    return None


def _series_list(uids: Iterable[str]) -> str:
    """Sorted, comma-separated UIDs for a message."""
    return ", ".join(sorted(uids))


@quiet
def resolve_referenced_ct(index: DicomIndex, seg: SeriesInfo) -> SeriesInfo:
    """Find the CT series a SEG was drawn on.

    Order: (1) CT series holding the SEG's referenced SOP instances (every location, see
    :func:`seg_references`), (2) CT series named by ReferencedSeriesSequence, (3) fallback within the
    SEG's study: the only CT series; else the only multi-slice axial CT series; else the only one sharing
    the SEG's FrameOfReferenceUID; else the only one whose slice positions contain every SEG frame
    position.

    Args:
        index: the download index.
        seg: a SEG series of that index.

    Returns:
        The CT :class:`SeriesInfo`.

    Raises:
        PatientDataError: no unique CT series can be determined; the reason says why.
    """
    patient = seg.patient_id
    seg_path = seg.files[0] if seg.files else seg.folder
    if seg.n_files != 1:
        logger.warning("%s: SEG series %s has %d files; using the first", patient, seg.series_uid, seg.n_files)
    try:
        ds = pydicom.dcmread(seg_path, stop_before_pixels=True, force=True)
        refs = seg_references(ds)
    except Exception as e:  # noqa: BLE001
        raise PatientDataError(patient, f"cannot read SEG header ({type(e).__name__}: {e})", seg_path) from e

    found = _named_ct(index, refs, patient, seg_path)
    if found is not None:
        return found
    return _study_fallback(index, seg, ds, _unresolved_reason(index, refs), seg_path)


def _named_ct(index: DicomIndex, refs: SegReferences, patient: str, seg_path: Path) -> SeriesInfo | None:
    """Steps (1) and (2) of :func:`resolve_referenced_ct`: the CT series the SEG's references name.

    Args:
        index: the download index.
        refs: the SEG's references.
        patient: PatientID for errors.
        seg_path: the SEG file for errors.

    Returns:
        The CT series, or None when the references name no CT series of the download.

    Raises:
        PatientDataError: the references name several CT series.
    """
    # (1) referenced instances
    ct_hits: Counter[str] = Counter()
    for uid in refs.instance_uids:
        s = index.series_of_instance(uid)
        if s is not None and s.kind == "CT":
            ct_hits[s.series_uid] += 1
    if len(ct_hits) == 1:
        return index.series[next(iter(ct_hits))]
    if len(ct_hits) > 1:
        raise PatientDataError(
            patient, f"SEG references instances of {len(ct_hits)} CT series: {_series_list(ct_hits)}", seg_path
        )
    # (2) referenced series
    named_ct = [u for u in refs.series_uids if u in index.series and index.series[u].kind == "CT"]
    if len(named_ct) == 1:
        return index.series[named_ct[0]]
    if len(named_ct) > 1:
        raise PatientDataError(patient, f"SEG references {len(named_ct)} CT series: {_series_list(named_ct)}", seg_path)
    return None


def _unresolved_reason(index: DicomIndex, refs: SegReferences) -> str:
    """Why the SEG's references name no CT series of the download."""
    missing_series = [u for u in refs.series_uids if u not in index.series]
    if missing_series:
        return f"SEG references CT series {_series_list(missing_series)} which is not in the download"
    if refs.instance_uids:
        return f"none of the {len(refs.instance_uids)} CT instances the SEG references is in the download"
    return "SEG holds no source references"


def _study_fallback(index: DicomIndex, seg: SeriesInfo, ds: Dataset, why: str, seg_path: Path) -> SeriesInfo:
    """Step (3) of :func:`resolve_referenced_ct`: a CT series of the SEG's study, chosen without references.

    Args:
        index: the download index.
        seg: the SEG series.
        ds: the SEG header.
        why: why the references did not resolve (logged with the choice, or raised).
        seg_path: the SEG file for errors.

    Returns:
        The only CT series that fits.

    Raises:
        PatientDataError: no CT series fits, or several do.
    """
    patient = seg.patient_id
    study_cts = index.study_series(seg.study_uid, "CT")
    if len(study_cts) == 1:
        logger.warning("%s: %s; using the only CT series of the SEG's study", patient, why)
        return study_cts[0]
    if not study_cts:
        raise PatientDataError(patient, f"{why}, and the SEG's study holds no CT series", seg_path)
    volumes = [s for s in study_cts if s.n_files > 1 and s.is_axial]
    if len(volumes) == 1:
        logger.warning("%s: %s; using the only axial multi-slice CT series of the SEG's study", patient, why)
        return volumes[0]
    candidates = volumes or study_cts
    seg_for = get_text(ds, "FrameOfReferenceUID")
    same_for = [s for s in candidates if seg_for and s.frame_of_reference_uid == seg_for]
    if len(same_for) == 1:
        logger.warning("%s: %s; using the only CT series sharing the SEG's FrameOfReferenceUID", patient, why)
        return same_for[0]
    frame_pos = dataset_frame_positions(ds)
    if frame_pos:
        by_ipp = [s for s in candidates if _positions_contain(s, frame_pos)]
        if len(by_ipp) == 1:
            logger.warning("%s: %s; using the only CT series whose slice positions hold every SEG frame", patient, why)
            return by_ipp[0]
    raise PatientDataError(
        patient,
        f"{why}; the SEG's study holds {len(study_cts)} CT series and the SEG references none of them "
        f"({_series_list(s.series_uid for s in study_cts)})",
        seg_path,
    )


def _positions_contain(series: SeriesInfo, positions: list[tuple[float, float, float]], tol: float = 0.1) -> bool:
    """True when every position lies within ``tol`` mm (per axis) of a slice position of the series."""
    have = np.array([i.position for i in series.instances if i.position is not None], dtype=float)
    if have.size == 0:
        return False
    for p in positions:
        if np.min(np.max(np.abs(have - np.asarray(p)), axis=1)) > tol:
            return False
    return True
