"""CT geometry from the indexed headers: slice order, spacing, and the slices a damaged download lost.

Slices are sorted by ascending ``dot(IPP, n)`` with ``n = cross(IOP[:3], IOP[3:])``; a CT volume is
``(Z, Y, X)`` in that order (see ``docs/architecture.md``). No pixel data is read here.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rggan.data.dicom.records import FileProblem, InstanceInfo, SeriesInfo
from rggan.data.dicom.values import slice_normal
from rggan.errors import PatientDataError

__all__ = ["CTGeometry", "read_ct_geometry"]


@dataclass
class CTGeometry:
    """Geometry of a CT series read from headers, slices in ascending ``dot(IPP, normal)`` order.

    Attributes:
        patient_id: PatientID.
        series_uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID.
        frame_of_reference_uid: FrameOfReferenceUID ('' when absent).
        files: one file per slice, sorted (None for a slice listed in ``missing``).
        sop_instance_uids: SOPInstanceUID per slice, sorted.
        positions: ``(Z, 3)`` ImagePositionPatient per slice, sorted.
        orientation: ``(6,)`` ImageOrientationPatient (row direction, column direction).
        normal: ``(3,)`` unit slice normal ``cross(IOP[:3], IOP[3:])``.
        slice_positions: ``(Z,)`` ``dot(IPP, normal)`` per slice, ascending.
        rows: Rows.
        cols: Columns.
        pixel_spacing: (row spacing, column spacing) in mm, i.e. the Y and X spacing.
        slice_spacing: distance between adjacent slices in mm (SpacingBetweenSlices, then SliceThickness,
            then 1.0 for a single slice).
        missing: slice index -> why that slice has no usable file (an unreadable or damaged file left a hole in
            the otherwise regular grid of slices); ``files[i]`` is None and ``sop_instance_uids[i]`` '' there.
        set_aside: ``(file, reason)`` of CT files of the series left out because their header disagrees with
            the rest of the series (damaged header).
    """

    patient_id: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    files: list[Path | None]
    sop_instance_uids: list[str]
    positions: np.ndarray
    orientation: np.ndarray
    normal: np.ndarray
    slice_positions: np.ndarray
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    missing: dict[int, str] = field(default_factory=dict)
    set_aside: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, rows, cols)``."""
        return (len(self.files), self.rows, self.cols)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """``(slice spacing, row spacing, column spacing)`` in mm, matching :attr:`shape`."""
        return (self.slice_spacing, self.pixel_spacing[0], self.pixel_spacing[1])

    def nearest_slice(self, position: Sequence[float]) -> tuple[int, float]:
        """Return the slice closest to a patient-space point along the normal.

        Args:
            position: an (x, y, z) point in mm, e.g. a SEG frame's ImagePositionPatient.

        Returns:
            (slice index, absolute distance in mm along the normal).
        """
        z = float(np.dot(np.asarray(position, dtype=float), self.normal))
        i = int(np.argmin(np.abs(self.slice_positions - z)))
        return i, abs(float(self.slice_positions[i]) - z)


def _set_aside(insts: list[InstanceInfo]) -> tuple[list[InstanceInfo], list[tuple[InstanceInfo, str]]]:
    """Split CT instances into those agreeing with the series and those whose header disagrees with it.

    An instance is set aside when it lacks IPP, IOP, pixel spacing or rows/cols, is multi-frame, or when its
    orientation, size or pixel spacing differs from that of most instances.
    """
    bad: list[tuple[InstanceInfo, str]] = []
    complete = []
    for inst in insts:
        missing = [
            name
            for name, v in (
                ("ImagePositionPatient", inst.position),
                ("ImageOrientationPatient", inst.orientation),
                ("PixelSpacing", inst.pixel_spacing),
            )
            if v is None
        ]
        if not inst.rows or not inst.cols:
            missing.append("Rows/Columns")
        if inst.number_of_frames != 1:
            bad.append((inst, "multi-frame (enhanced) CT is not supported"))
        elif missing:
            bad.append((inst, f"CT slice lacks {', '.join(missing)}"))
        else:
            complete.append(inst)
    if not complete:
        return [], bad

    def key(inst: InstanceInfo) -> tuple:
        return (
            tuple(np.round(inst.orientation, 4)),  # type: ignore[arg-type]
            (inst.rows, inst.cols),
            tuple(np.round(inst.pixel_spacing, 4)),  # type: ignore[arg-type]
        )

    ref = Counter(key(i) for i in complete).most_common(1)[0][0]
    good = []
    for inst in complete:
        k = key(inst)
        if k == ref:
            good.append(inst)
        elif k[0] != ref[0]:
            bad.append((inst, f"CT slices have different orientations ({list(ref[0])} vs {list(inst.orientation)})"))  # type: ignore[arg-type]
        elif k[1] != ref[1]:
            bad.append((inst, f"CT slices have different sizes ({ref[1][0]}x{ref[1][1]} vs {inst.rows}x{inst.cols})"))
        else:
            bad.append((inst, f"CT slices have different pixel spacings ({ref[2]} vs {inst.pixel_spacing})"))
    return good, bad


def read_ct_geometry(
    series: SeriesInfo,
    spacing_rtol: float = 0.01,
    spacing_atol: float = 0.01,
    unusable: Sequence[FileProblem] = (),
    cover: Sequence[Sequence[float]] | np.ndarray = (),
) -> CTGeometry:
    """Build a CT series' geometry from the indexed headers (no pixel data is read).

    Slices are sorted by ascending ``dot(IPP, normal)``. Checked: every slice is a single-frame CT image
    with IPP, IOP, rows/cols and pixel spacing; orientation, rows, cols and pixel spacing are the same on all
    slices; no two slices share a position; the spacing between adjacent slices is uniform within
    ``spacing_atol + spacing_rtol * median``.

    A damaged download is tolerated where the damage can be accounted for: a file whose header disagrees with
    the rest of the series is set aside (:attr:`CTGeometry.set_aside`), and a gap of a whole number of slices is
    accepted as missing slices (:attr:`CTGeometry.missing`) when there are at least as many set-aside or
    ``unusable`` files as missing slices (likewise slices lost at either end, when ``cover`` reaches them). A gap
    that no unusable file explains (a file absent from the download) still fails the spacing check.

    Args:
        series: a CT series from :func:`index_dicom_tree`.
        spacing_rtol: relative tolerance on slice-spacing uniformity.
        spacing_atol: absolute tolerance in mm on slice-spacing uniformity.
        unusable: files of the download that could belong to this series but were not indexed (unreadable,
            truncated, damaged; e.g. the :attr:`DicomIndex.problems` in the series' folder).
        cover: patient-space points the volume must reach (the SEG frames' positions, see
            :func:`seg_frame_positions`): with unusable files to account for them, slices lost at either end are
            added as missing slices.

    Returns:
        The :class:`CTGeometry`.

    Raises:
        PatientDataError: the series is not a usable CT volume; the reason says why.
    """
    patient = series.patient_id
    where = series.folder
    insts = [i for i in series.instances if i.kind == "CT"]
    if not insts:
        raise PatientDataError(patient, f"series {series.series_uid} holds no CT image", where)
    good, bad = _set_aside(insts)
    fail = functools.partial(_failure, patient, bad, path=where)
    if not good:
        raise fail(bad[0][1], path=bad[0][0].path)
    ref = good[0]
    iop, normal, pos, z, sorted_insts = _sort_along_normal(good, patient)
    missing: dict[int, str] = {}
    budget = len(bad) + len(unusable)
    if len(z) > 1:
        step, steps = _slice_steps(z, sorted_insts, budget, spacing_rtol, spacing_atol, fail)
    else:
        step = ref.spacing_between_slices or ref.slice_thickness or 1.0
        steps = np.zeros(0)
    n_missing = int(steps.sum() - len(steps))
    before, after = _end_gaps(cover, normal, z, step, n_missing, budget)
    if n_missing or before or after:
        sorted_insts, pos, z, missing = _fill_gaps(
            sorted_insts, pos, steps, (pos[-1] - pos[0]) / steps.sum() if len(steps) else normal * step, before, after,
            normal, bad, unusable,
        )  # fmt: skip
    return CTGeometry(
        patient_id=patient,
        series_uid=series.series_uid,
        study_uid=series.study_uid,
        frame_of_reference_uid=series.frame_of_reference_uid,
        files=[None if i is None else i.path for i in sorted_insts],
        sop_instance_uids=["" if i is None else i.sop_instance_uid for i in sorted_insts],
        positions=pos,
        orientation=iop,
        normal=normal,
        slice_positions=z,
        rows=ref.rows,
        cols=ref.cols,
        pixel_spacing=(float(ref.pixel_spacing[0]), float(ref.pixel_spacing[1])),  # type: ignore[index]
        slice_spacing=float(step),
        missing=missing,
        set_aside=[(i.path, why) for i, why in bad],
    )


def _failure(patient: str, bad: list[tuple[InstanceInfo, str]], reason: str, path: Path) -> PatientDataError:
    """The error for an unusable CT series; it names the set-aside files, which may be the cause."""
    if bad:
        reason += "; set aside: " + ", ".join(f"{i.path.name} ({why})" for i, why in bad)
    return PatientDataError(patient, reason, path)


def _sort_along_normal(
    good: list[InstanceInfo], patient: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[InstanceInfo | None]]:
    """Sort the slices by ascending position along the slice normal of the first one.

    Args:
        good: CT instances that agree on orientation, size and pixel spacing.
        patient: PatientID for errors.

    Returns:
        ``(IOP (6,), unit normal (3,), IPP (Z, 3), position along the normal (Z,), instances)``, sorted.

    Raises:
        PatientDataError: a degenerate ImageOrientationPatient.
    """
    iop = np.asarray(good[0].orientation, dtype=float)
    normal = slice_normal(iop)
    if np.linalg.norm(normal) == 0:
        raise PatientDataError(patient, f"degenerate ImageOrientationPatient {list(iop)}", good[0].path)
    pos = np.array([i.position for i in good], dtype=float)
    z = pos @ normal
    order = np.argsort(z, kind="stable")
    return iop, normal, pos[order], z[order], [good[k] for k in order]


def _slice_steps(
    z: np.ndarray,
    insts: list[InstanceInfo | None],
    budget: int,
    spacing_rtol: float,
    spacing_atol: float,
    fail: Callable[[str], PatientDataError],
) -> tuple[float, np.ndarray]:
    """The slice step and the number of steps between adjacent slices (more than 1 where slices are missing).

    Args:
        z: ascending slice positions along the normal (at least two).
        insts: the instances in that order.
        budget: how many missing slices the set-aside and unusable files can account for.
        spacing_rtol: relative tolerance on slice-spacing uniformity.
        spacing_atol: absolute tolerance in mm on slice-spacing uniformity.
        fail: builds the error for a reason.

    Returns:
        ``(median spacing in mm, steps per gap)``.

    Raises:
        PatientDataError: two slices at one position, a gap of no whole number of steps, or more missing slices
            than the budget.
    """
    d = np.diff(z)
    if np.min(d) < 1e-3:
        k = int(np.argmin(d))
        raise fail(
            f"two CT slices at the same position {z[k]:.3f} mm (several acquisitions in one series?): "
            f"{insts[k].path.name}, {insts[k + 1].path.name}",  # type: ignore[union-attr]
        )
    step = float(np.median(d))
    steps = np.maximum(np.round(d / step), 1)
    bad_gap = np.abs(d - steps * step) > spacing_atol + spacing_rtol * step * steps
    n_missing = int(steps.sum() - len(d))
    if np.any(bad_gap) or n_missing > budget:
        k = int(np.argmax(bad_gap | (steps > 1)))
        explained = f", {budget} unusable file(s) in the series" if n_missing else ""
        raise fail(
            f"non-uniform CT slice spacing: {d[k]:.3f} mm between slices {k} and {k + 1} "
            f"(median {step:.3f} mm; missing slices?{explained})",
        )
    return step, steps


def _end_gaps(
    cover: Sequence[Sequence[float]] | np.ndarray,
    normal: np.ndarray,
    z: np.ndarray,
    step: float,
    n_missing: int,
    budget: int,
) -> tuple[int, int]:
    """Slices lost at either end: invisible in the spacing, revealed by the SEG frames (``cover``).

    Args:
        cover: patient-space points the volume must reach.
        normal: the slice normal.
        z: ascending slice positions along the normal.
        step: the slice spacing in mm.
        n_missing: slices already missing inside the volume.
        budget: how many missing slices the set-aside and unusable files can account for.

    Returns:
        ``(slices lost before the first, slices lost after the last)``; ``(0, 0)`` when the budget does not cover
        them.
    """
    before = after = 0
    if len(cover) and budget > n_missing:
        zc = np.asarray(cover, dtype=float).reshape(-1, 3) @ normal
        k_lo, k_hi = (z[0] - zc.min()) / step, (zc.max() - z[-1]) / step
        before = int(round(k_lo)) if k_lo > 0.5 and abs(k_lo - round(k_lo)) < 0.25 else 0
        after = int(round(k_hi)) if k_hi > 0.5 and abs(k_hi - round(k_hi)) < 0.25 else 0
        if n_missing + before + after > budget:
            before = after = 0
    return before, after


def _fill_gaps(
    insts: list[InstanceInfo | None],
    pos: np.ndarray,
    steps: np.ndarray,
    delta: np.ndarray,
    before: int,
    after: int,
    normal: np.ndarray,
    bad: list[tuple[InstanceInfo, str]],
    unusable: Sequence[FileProblem],
) -> tuple[list[InstanceInfo | None], np.ndarray, np.ndarray, dict[int, str]]:
    """Insert the lost slices: inside whole-slice gaps (positions interpolated) and ``before``/``after`` the ends
    (positions extrapolated by ``delta``, one slice step along the normal); say which file each one lost."""
    known = [(i.position, f"{i.path.name} set aside: {why}") for i, why in bad if i.position is not None]
    known += [(p.position, f"{p.path.name} unusable: {p.reason}") for p in unusable if p.position is not None]
    others = [f"{i.path.name}" for i, _ in bad if i.position is None] + [
        f"{p.path.name} ({p.reason})" for p in unusable if p.position is None
    ]
    tol = 0.25 * float(np.linalg.norm(delta))
    slots: list[tuple[InstanceInfo | None, np.ndarray]] = [(None, pos[0] - delta * j) for j in range(before, 0, -1)]
    slots.append((insts[0], pos[0]))
    for k in range(1, len(insts)):
        m = int(steps[k - 1])
        slots += [(None, pos[k - 1] + (pos[k] - pos[k - 1]) * j / m) for j in range(1, m)]
        slots.append((insts[k], pos[k]))
    slots += [(None, pos[-1] + delta * j) for j in range(1, after + 1)]
    missing: dict[int, str] = {}
    for i, (inst, p) in enumerate(slots):
        if inst is None:
            hit = [why for q, why in known if np.max(np.abs(np.asarray(q) - p)) < tol]
            missing[i] = hit[0] if hit else "no readable file at this position; unusable files in the series: " + (
                ", ".join(others) or "none with a known position"
            )
    new_pos = np.asarray([p for _, p in slots])
    return [inst for inst, _ in slots], new_pos, new_pos @ normal, missing
