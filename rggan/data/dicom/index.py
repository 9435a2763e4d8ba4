"""Index a download: walk the tree, read every header, group the files by series and set bad files aside."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

from rggan.data.dicom.headers import read_header
from rggan.data.dicom.records import DicomIndex, FileProblem, InstanceInfo, SeriesInfo
from rggan.data.dicom.values import to_int

__all__ = ["index_dicom_tree", "find_patient_segs"]

_Read = tuple[InstanceInfo, dict[str, str]]


def index_dicom_tree(root: str | Path) -> DicomIndex:
    """Walk a download and index every DICOM file by header (pixels are not read).

    Folder and file names are never interpreted (both NBIA layouts work); ``metadata.csv``, LICENSE and
    other non-DICOM files end up in :attr:`DicomIndex.problems` with kind ``"not_dicom"``. Truncated,
    unreadable, damaged (an invalid UID or PatientID, or a PatientID that differs from the one of the other files
    of its study) and duplicate files are recorded there too, by path; nothing raises.

    Args:
        root: folder to walk (recursively, following no symlinked folders).

    Returns:
        The :class:`DicomIndex`.
    """
    root = Path(root)
    index = DicomIndex(root=root)
    if not root.is_dir():
        index.problems.append(FileProblem(root, "unreadable", "not a folder"))
        return index
    paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        paths.extend(Path(dirpath) / name for name in sorted(filenames))
    read = _read_unique(paths, index)
    fields_of, members = _group_by_series(read, index)
    for uid, insts in members.items():
        index.series[uid] = _series_of(uid, fields_of[uid], insts)
        for inst in insts:
            index.sop_to_series[inst.sop_instance_uid] = uid
    return index


def _read_unique(paths: list[Path], index: DicomIndex) -> list[_Read]:
    """Read every file's header; unusable files and second copies of an instance go to ``index.problems``.

    Args:
        paths: the files, in walk order.
        index: the index being built (its problems are appended to).

    Returns:
        ``(instance, series fields)`` of every usable file, in walk order.
    """
    read: list[_Read] = []
    seen: dict[str, Path] = {}
    for path in paths:
        result = read_header(path)
        if isinstance(result, FileProblem):
            index.problems.append(result)
            continue
        inst = result[0]
        if inst.sop_instance_uid in seen:
            index.problems.append(
                FileProblem(
                    path,
                    "duplicate",
                    f"SOPInstanceUID {inst.sop_instance_uid} already read from {seen[inst.sop_instance_uid]}",
                )
            )
            continue
        seen[inst.sop_instance_uid] = path
        read.append(result)
    return read


def _group_by_series(
    read: list[_Read], index: DicomIndex
) -> tuple[dict[str, dict[str, str]], dict[str, list[InstanceInfo]]]:
    """Group the instances by series, setting aside those whose PatientID disagrees with their study.

    One patient per study: a file whose PatientID differs from that of most files of its study has a
    damaged header (a flipped byte in the value or in the tag); it is set aside, reported by its path.

    Args:
        read: from :func:`_read_unique`.
        index: the index being built (its problems are appended to).

    Returns:
        ``(series UID -> series fields of its first file, series UID -> its instances)``.
    """
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for inst, _ in read:
        votes[inst.study_uid][inst.patient_id] += 1
    fields_of: dict[str, dict[str, str]] = {}
    members: dict[str, list[InstanceInfo]] = defaultdict(list)
    for inst, fields in read:
        (majority, n_major), *rest = votes[inst.study_uid].most_common()
        if inst.patient_id != majority and n_major > 1 and (not rest or n_major > rest[0][1]):
            index.problems.append(
                FileProblem(
                    inst.path,
                    "damaged",
                    f"damaged DICOM header: PatientID {inst.patient_id!r} differs from the {majority!r} of the other "
                    f"{n_major} files of its study",
                    fields["series_uid"],
                    inst.position,
                )
            )
            continue
        uid = fields["series_uid"]
        fields_of.setdefault(uid, fields)
        members[uid].append(inst)
    return fields_of, members


def _series_of(uid: str, f: dict[str, str], insts: list[InstanceInfo]) -> SeriesInfo:
    """The :class:`SeriesInfo` of one series: kind and SOP class by majority, instances sorted by path."""
    kind = Counter(i.kind for i in insts).most_common(1)[0][0]
    sop_class = Counter(i.sop_class_uid for i in insts).most_common(1)[0][0]
    return SeriesInfo(
        patient_id=f["patient_id"],
        study_uid=f["study_uid"],
        series_uid=uid,
        modality=f["modality"],
        kind=kind,
        sop_class_uid=sop_class,
        description=f["description"],
        frame_of_reference_uid=f["frame_of_reference_uid"],
        series_number=to_int(f["series_number"]),
        instances=sorted(insts, key=lambda i: str(i.path)),
    )


def find_patient_segs(index: DicomIndex, patient: str) -> list[SeriesInfo]:
    """Return a patient's SEG series (found by SOP class, not by description).

    Args:
        index: the download index.
        patient: PatientID.

    Returns:
        The SEG series, sorted by SeriesInstanceUID (empty when the patient has none).
    """
    return sorted(
        (s for s in index.series.values() if s.patient_id == patient and s.kind == "SEG"), key=lambda s: s.series_uid
    )
