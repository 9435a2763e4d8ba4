"""DICOM SEG -> binary mask aligned with the sorted CT, frames placed by geometry.

Works for the SEGs of 3D Slicer, ePAD and conformant producers (see ``docs/spec.md``, "DICOM SEG readers").
Documented choices:

* All segments of a SEG are OR-ed into one binary mask (labels are meaningless in this collection);
  pass ``segments=`` to :func:`read_seg_mask` to keep only some segment numbers.
* FRACTIONAL SEGs are thresholded at half of MaximumFractionalValue (``value >= max / 2``).
* The SEG frame count is ``len(PerFrameFunctionalGroupsSequence)``, not NumberOfFrames. If the
  pixel data holds fewer frames than that but exactly the declared NumberOfFrames (pydicom's
  ``liver_1frame.dcm``), the frames present are used and the extra per-frame items are ignored
  with a warning; any other shortfall is an error (truncated file).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from rggan.data.dicom.geometry import CTGeometry
from rggan.data.dicom.headers import SEG_SOP_CLASS
from rggan.data.dicom.references import collect_referenced_uids, frame_position
from rggan.data.dicom.values import get_text, quiet, read_dataset, to_float, to_floats, to_int
from rggan.errors import PatientDataError

__all__ = ["decode_seg_frames", "read_seg_mask"]

logger = logging.getLogger(__name__)

# Transfer syntaxes whose pixel data is stored natively (not encapsulated).
_NATIVE_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
)


def decode_seg_frames(ds: Dataset, patient: str = "", path: str | Path | None = None) -> np.ndarray:
    """Decode a SEG's frames to a binary ``(frames, rows, cols)`` uint8 array.

    The frame count is ``len(PerFrameFunctionalGroupsSequence)`` (NumberOfFrames when absent), see the module
    docstring for a pixel data shorter than that. BINARY native data is unpacked here (bits packed across frames,
    LSB first), so a wrong NumberOfFrames does not matter. FRACTIONAL frames are thresholded at half of
    MaximumFractionalValue. Encapsulated data is decoded by pydicom after fixing NumberOfFrames in memory.

    Args:
        ds: the SEG dataset, pixel data included.
        patient: PatientID for errors.
        path: file for errors.

    Returns:
        uint8 array of 0/1, one frame per per-frame functional group item actually present.

    Raises:
        PatientDataError: no pixel data, an unsupported encoding or a truncated pixel data.
    """
    patient = patient or get_text(ds, "PatientID")
    if "PixelData" not in ds:
        raise PatientDataError(patient, "SEG has no pixel data", path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    declared = to_int(ds.get("NumberOfFrames"))
    declared = 1 if declared is None else declared
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    n = len(per_frame) if per_frame is not None else declared
    if n == 0:
        return np.zeros((0, rows, cols), dtype=np.uint8)
    seg_type = get_text(ds, "SegmentationType").upper() or "BINARY"
    bits = int(ds.get("BitsAllocated", 1))
    file_meta = getattr(ds, "file_meta", None)
    syntax = str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else ""
    data = ds.PixelData
    if syntax in _NATIVE_SYNTAXES or not syntax:
        frame_px = rows * cols
        if bits == 1:
            available = len(data) * 8 // frame_px
        elif bits == 8:
            available = len(data) // frame_px
        else:
            raise PatientDataError(patient, f"unsupported SEG BitsAllocated {bits}", path)
        if available < n:
            if available >= min(declared, n) and available > 0:
                logger.warning(
                    "%s: SEG has %d per-frame items but pixel data for %d frame(s) (NumberOfFrames %s); "
                    "using the frames present",
                    patient,
                    n,
                    available,
                    ds.get("NumberOfFrames"),
                )
                n = available
            else:
                raise PatientDataError(
                    patient, f"SEG pixel data holds {available} frames but {n} are described (truncated file?)", path
                )
        if bits == 1:
            flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: n * frame_px]
            frames = flat.reshape(n, rows, cols)
        else:
            frames = np.frombuffer(data, dtype=np.uint8)[: n * frame_px].reshape(n, rows, cols)
    else:
        try:
            ds.NumberOfFrames = n
            frames = np.asarray(ds.pixel_array).reshape(n, rows, cols)
        except Exception as e:  # noqa: BLE001
            raise PatientDataError(patient, f"cannot decode SEG pixel data ({type(e).__name__}: {e})", path) from e
    if seg_type == "FRACTIONAL":
        max_value = to_float(ds.get("MaximumFractionalValue")) or 255.0
        return (frames.astype(np.float32) >= max_value / 2.0).astype(np.uint8)
    return (frames != 0).astype(np.uint8)


def _segment_number(item: Dataset | None, shared: Dataset | None) -> int:
    """A frame's ReferencedSegmentNumber: per-frame, else shared, else 1."""
    for group in (item, shared):
        if group is not None and group.get("SegmentIdentificationSequence"):
            num = to_int(group.SegmentIdentificationSequence[0].get("ReferencedSegmentNumber"))
            if num is not None:
                return num
    return 1


def _frame_source_uid(item: Dataset | None) -> str | None:
    """The one source SOPInstanceUID of a frame's DerivationImageSequence, or None (none or several)."""
    if item is None:
        return None
    found: set[str] = set()
    collect_referenced_uids(item.get("DerivationImageSequence"), found)
    return next(iter(found)) if len(found) == 1 else None


def _group_attr(ds: Dataset, shared: Dataset | None, first: Dataset | None, seq: str, keyword: str) -> Any:
    """A functional-group value: shared group, else the first frame's group, else the top-level attribute."""
    for group in (shared, first):
        if group is not None and group.get(seq):
            value = group.get(seq)[0].get(keyword)
            if value is not None:
                return value
    return ds.get(keyword)


@quiet
def read_seg_mask(
    seg_path: str | Path, geometry: CTGeometry, segments: Iterable[int] | None = None, pos_tol: float | None = None
) -> np.ndarray:
    """Read a DICOM SEG as a binary mask aligned with the sorted CT.

    Each frame is placed by geometry: its ImagePositionPatient (per-frame PlanePositionSequence, else shared)
    projected on the CT normal is matched to the CT slice within half a slice spacing; a frame without any
    position is placed by its per-frame source SOPInstanceUID. Frame order, sparse frames and InstanceNumber
    order therefore do not matter. The segment number is per-frame, else shared, else 1; all segments are
    OR-ed unless ``segments`` is given.

    Args:
        seg_path: the SEG file.
        geometry: the referenced CT's geometry (:func:`read_ct_geometry`).
        segments: segment numbers to keep; None keeps all.
        pos_tol: maximal distance along the normal in mm; default half the slice spacing.

    Returns:
        uint8 array ``(Z, rows, cols)`` of 0/1.

    Raises:
        PatientDataError: unreadable SEG, rows/cols/pixel-spacing/orientation mismatch, frame matching no CT
            slice or lying off the CT grid in-plane, or no foreground pixel ("SEG has no foreground pixels").
    """
    seg_path = Path(seg_path)
    patient = geometry.patient_id
    try:
        ds = read_dataset(seg_path)
    except Exception as e:  # noqa: BLE001
        raise PatientDataError(patient, f"cannot read SEG ({type(e).__name__}: {e})", seg_path) from e
    shared, per_frame = _check_header(ds, geometry, seg_path)
    frames = decode_seg_frames(ds, patient, seg_path)
    keep = None if segments is None else {int(s) for s in segments}
    tol = 0.5 * geometry.slice_spacing if pos_tol is None else pos_tol
    uid_to_slice = {u: k for k, u in enumerate(geometry.sop_instance_uids)}
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    for f in range(frames.shape[0]):
        item = per_frame[f] if f < len(per_frame) else None
        if keep is not None and _segment_number(item, shared) not in keep:
            continue
        z = _frame_slice(f, item, shared, geometry, uid_to_slice, tol, seg_path)
        mask[z] |= frames[f]
    if not mask.any():
        raise PatientDataError(patient, "SEG has no foreground pixels", seg_path)
    return mask


def _check_header(ds: Dataset, geometry: CTGeometry, seg_path: Path) -> tuple[Dataset | None, list[Dataset]]:
    """Check that a SEG fits the CT: SOP class, rows/cols, pixel spacing and orientation.

    Args:
        ds: the SEG dataset.
        geometry: the referenced CT's geometry.
        seg_path: the SEG file for errors.

    Returns:
        ``(the shared functional group item or None, the per-frame functional group items)``.

    Raises:
        PatientDataError: not a SEG, or a mismatch with the CT.
    """
    patient = geometry.patient_id
    if get_text(ds, "SOPClassUID") != SEG_SOP_CLASS and get_text(ds, "Modality") != "SEG":
        raise PatientDataError(patient, "file is not a DICOM SEG", seg_path)
    rows, cols = to_int(ds.get("Rows")), to_int(ds.get("Columns"))
    if (rows, cols) != (geometry.rows, geometry.cols):
        raise PatientDataError(
            patient, f"SEG frames are {rows}x{cols} but the CT slices are {geometry.rows}x{geometry.cols}", seg_path
        )
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    first = per_frame[0] if per_frame else None
    spacing = to_floats(_group_attr(ds, shared, first, "PixelMeasuresSequence", "PixelSpacing"), 2)
    if spacing is not None and not np.allclose(spacing, geometry.pixel_spacing, rtol=1e-3, atol=1e-4):
        raise PatientDataError(
            patient, f"SEG pixel spacing {list(spacing)} differs from the CT's {list(geometry.pixel_spacing)}", seg_path
        )
    iop = to_floats(_group_attr(ds, shared, first, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    if iop is not None and not np.allclose(iop, geometry.orientation, atol=1e-3):
        raise PatientDataError(
            patient, f"SEG orientation {list(iop)} differs from the CT's {list(geometry.orientation)}", seg_path
        )
    return shared, per_frame


def _frame_slice(
    f: int,
    item: Dataset | None,
    shared: Dataset | None,
    geometry: CTGeometry,
    uid_to_slice: dict[str, int],
    tol: float,
    seg_path: Path,
) -> int:
    """The CT slice a SEG frame lies on: by its position, else by its source SOPInstanceUID.

    Args:
        f: the frame index (0-based).
        item: the frame's per-frame functional group item (None when absent).
        shared: the shared functional group item (None when absent).
        geometry: the referenced CT's geometry.
        uid_to_slice: SOPInstanceUID -> CT slice index.
        tol: maximal distance along the normal in mm.
        seg_path: the SEG file for errors.

    Returns:
        The slice index in the sorted CT.

    Raises:
        PatientDataError: the frame matches no CT slice, or lies off the CT grid in-plane.
    """
    patient = geometry.patient_id
    pos = frame_position(item, shared)
    if pos is None:
        src = _frame_source_uid(item)
        if src is None or src not in uid_to_slice:
            raise PatientDataError(
                patient, f"SEG frame {f + 1} has neither a position nor a known source slice", seg_path
            )
        return uid_to_slice[src]
    z, dist = geometry.nearest_slice(pos)
    if dist > tol:
        raise PatientDataError(
            patient,
            f"SEG frame {f + 1} at {float(np.dot(pos, geometry.normal)):.3f} mm along the slice normal matches "
            f"no CT slice (nearest is {dist:.3f} mm away, tolerance {tol:.3f} mm)",
            seg_path,
        )
    row_dir, col_dir = geometry.orientation[:3], geometry.orientation[3:]
    offset = np.asarray(pos) - geometry.positions[z]
    dx, dy = float(np.dot(offset, row_dir)), float(np.dot(offset, col_dir))
    if abs(dx) > 0.5 * geometry.pixel_spacing[1] or abs(dy) > 0.5 * geometry.pixel_spacing[0]:
        raise PatientDataError(
            patient,
            f"SEG frame {f + 1} is shifted in-plane by ({dy:.2f}, {dx:.2f}) mm (row, col) from CT slice {z}",
            seg_path,
        )
    return z
