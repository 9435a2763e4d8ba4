"""The demo's DICOM SEG writer: a single-segment BINARY SEG in the style of one of three producers.

The collection's SEGs come from 3D Slicer's Reporting module and from ePAD, and both break readers that trust
the standard's optional references (see "DICOM SEG readers" in ``docs/spec.md``); ``"highdicom"`` writes a
conformant SEG for comparison.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence as DicomSequence

from rggan.demo.headers import file_meta, set_dates, set_equipment
from rggan.demo.identifiers import SEGMENTATION_STORAGE, demo_uid

__all__ = ["SegKind", "write_seg", "epad_description"]

SegKind = Literal["slicer", "epad", "highdicom"]
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def epad_description(creation_date: str, creation_time: str) -> str:
    """ePAD's SeriesDescription: ``ePAD Generated DSO <Mon>-<DD>-<HHMM>`` of the creation date and time."""
    month = _MONTHS[int(creation_date[4:6]) - 1]
    return f"ePAD Generated DSO {month}-{creation_date[6:8]}-{creation_time[:4]}"


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _seq(*items: Dataset) -> DicomSequence:
    return DicomSequence(list(items))


def _sorted_ct(ct: Sequence[Dataset]) -> list[Dataset]:
    iop = np.asarray(ct[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(ct, key=lambda d: float(np.dot(np.asarray(d.ImagePositionPatient, dtype=float), normal)))


def _segment_item(label: str, algorithm: str = "MANUAL") -> Dataset:
    seg = Dataset()
    seg.SegmentNumber = 1
    seg.SegmentLabel = label
    seg.SegmentAlgorithmType = algorithm
    seg.SegmentedPropertyCategoryCodeSequence = _seq(_code_item("49755003", "SCT", "Morphologically Altered Structure"))
    seg.SegmentedPropertyTypeCodeSequence = _seq(_code_item("4147007", "SCT", "Mass"))
    seg.RecommendedDisplayCIELabValue = [43803, 26565, 37722]
    return seg


def _source_item(ct: Dataset) -> Dataset:
    src = Dataset()
    src.ReferencedSOPClassUID = ct.SOPClassUID
    src.ReferencedSOPInstanceUID = ct.SOPInstanceUID
    purpose = _code_item("121322", "DCM", "Source image for image processing operation")
    src.PurposeOfReferenceCodeSequence = _seq(purpose)
    return src


def _derivation_item(sources: Sequence[Dataset]) -> Dataset:
    der = Dataset()
    der.DerivationCodeSequence = _seq(_code_item("113076", "DCM", "Segmentation"))
    der.SourceImageSequence = DicomSequence([_source_item(c) for c in sources])
    return der


def _legacy_seg_base(ct0: Dataset, series_uid: str, sop_uid: str, meta_impl_uid: str) -> Dataset:
    """The attributes Slicer and ePAD SEGs share: patient/study copied from the CT, a 1-bit BINARY image."""
    ds = Dataset()
    ds.file_meta = file_meta(SEGMENTATION_STORAGE, sop_uid, meta_impl_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SOPClassUID = SEGMENTATION_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "SEG"
    for kw in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
        "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID",
    ):  # fmt: skip
        if kw in ct0:
            setattr(ds, kw, getattr(ct0, kw))
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1000
    ds.InstanceNumber = 1
    ds.StudyID = "1"
    ds.ContentLabel = "ROI"
    ds.ContentDescription = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ct0.Rows
    ds.Columns = ct0.Columns
    ds.BitsAllocated = 1
    ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    ds.SegmentationType = "BINARY"
    return ds


def _dimensions(ds: Dataset, series_uid: str, with_segment: bool) -> None:
    """DimensionOrganizationSequence and DimensionIndexSequence (StackID, InStackPositionNumber[, segment])."""
    org_uid = demo_uid("dim-org", series_uid)
    ds.DimensionOrganizationSequence = _seq(Dataset())
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = org_uid
    items = []
    for pointer, group, label in (
        (0x00209056, 0x00209111, "StackID"),
        (0x00209057, 0x00209111, "InStackPositionNumber"),
        (0x0062000B, 0x0062000A, "ReferencedSegmentNumber"),
    ):
        if label == "ReferencedSegmentNumber" and not with_segment:
            continue
        it = Dataset()
        it.DimensionOrganizationUID = org_uid
        it.DimensionIndexPointer = pointer
        it.FunctionalGroupPointer = group
        it.DimensionDescriptionLabel = label
        items.append(it)
    ds.DimensionIndexSequence = DicomSequence(items)


def _shared_group(ct0: Dataset, cts: Sequence[Dataset]) -> Dataset:
    """Shared functional group: pixel measures and orientation of the CT, one derivation item listing ``cts``."""
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = ct0.PixelSpacing
    pm.SliceThickness = ct0.SliceThickness
    shared.PixelMeasuresSequence = _seq(pm)
    po = Dataset()
    po.ImageOrientationPatient = ct0.ImageOrientationPatient
    shared.PlaneOrientationSequence = _seq(po)
    shared.DerivationImageSequence = _seq(_derivation_item(cts))
    return shared


def _segment_identification() -> DicomSequence:
    sid = Dataset()
    sid.ReferencedSegmentNumber = 1
    return _seq(sid)


def _frame(rank: int, index_values: list[int], ct: Dataset) -> Dataset:
    """A per-frame functional group item: frame content (stack 1, position ``rank``) and the plane position."""
    pf = Dataset()
    fc = Dataset()
    fc.StackID = "1"
    fc.InStackPositionNumber = rank
    fc.DimensionIndexValues = index_values
    pf.FrameContentSequence = _seq(fc)
    pp = Dataset()
    pp.ImagePositionPatient = ct.ImagePositionPatient
    pf.PlanePositionSequence = _seq(pp)
    return pf


def _slicer_seg(
    cts: list[Dataset], m: np.ndarray, uids: tuple[str, str], created: tuple[str, str], label: str | None
) -> tuple[Dataset, np.ndarray]:
    """3D Slicer Reporting SEG and its frames: one frame per CT slice, shared references only."""
    ct0 = cts[0]
    (series_uid, sop_uid), (cdate, ctime) = uids, created
    ds = _legacy_seg_base(ct0, series_uid, sop_uid, "1.2.40.0.13.1.1.1")
    ds.StudyDate = cdate
    set_dates(ds, cdate, ctime)
    set_equipment(ds, "3D Slicer Community", "https://github.com/fedorov/Reporting", "0.0.1", "1")
    ds.SeriesDescription = "3D Slicer segmentation result"
    ds.ContentCreatorName = "3DSlicer"
    ds.PixelSpacing = ct0.PixelSpacing
    ds.SliceThickness = ct0.SliceThickness
    _dimensions(ds, series_uid, with_segment=False)
    ds.SegmentSequence = _seq(_segment_item(label or "Heart"))
    ds.SharedFunctionalGroupsSequence = _seq(_shared_group(ct0, cts))
    frames = []
    for i, c in enumerate(cts):
        pf = _frame(i + 1, [1, i + 1], c)
        pf.SegmentIdentificationSequence = _segment_identification()
        frames.append(pf)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    return ds, m


def _epad_seg(
    cts: list[Dataset], m: np.ndarray, uids: tuple[str, str], created: tuple[str, str], label: str | None
) -> tuple[Dataset, np.ndarray]:
    """ePAD DSO and its frames: non-empty frames in InstanceNumber order, a new frame of reference."""
    ct0 = cts[0]
    (series_uid, sop_uid), (cdate, ctime) = uids, created
    ds = _legacy_seg_base(ct0, series_uid, sop_uid, SEGMENTATION_STORAGE)
    set_dates(ds, cdate, ctime)
    ds.FrameOfReferenceUID = demo_uid("seg-for", series_uid)
    set_equipment(ds, "Stanford University", "ePAD", "1.1", "1")
    ds.SeriesDescription = epad_description(cdate, ctime)
    ds.ContentCreatorName = "ePAD^User"
    _dimensions(ds, series_uid, with_segment=True)
    ds.SegmentSequence = _seq(_segment_item(label or "Lesion1"))
    rs = Dataset()
    rs.SeriesInstanceUID = str(ct0.SeriesInstanceUID)
    rs.ReferencedInstanceSequence = DicomSequence([Dataset() for _ in cts])
    for item, c in zip(rs.ReferencedInstanceSequence, cts):
        item.ReferencedSOPClassUID = c.SOPClassUID
        item.ReferencedSOPInstanceUID = c.SOPInstanceUID
    ds.ReferencedSeriesSequence = _seq(rs)
    shared = _shared_group(ct0, cts)
    shared.SegmentIdentificationSequence = _segment_identification()
    ds.SharedFunctionalGroupsSequence = _seq(shared)
    nonempty = [k for k in range(len(cts)) if m[k].any()]
    nonempty.sort(key=lambda k: int(getattr(cts[k], "InstanceNumber", k + 1)))
    frames = []
    for i, k in enumerate(nonempty):
        pf = _frame(i + 1, [1, i + 1, 1], cts[k])
        pf.DerivationImageSequence = _seq(_derivation_item([cts[k]]))
        frames.append(pf)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    return ds, (m[nonempty] if nonempty else np.zeros((0,) + m.shape[1:], np.uint8))


def _highdicom_seg(
    cts: list[Dataset], m: np.ndarray, uids: tuple[str, str], created: tuple[str, str], label: str | None
) -> Dataset:
    """A conformant ``highdicom.seg.Segmentation`` (empty frames omitted), with fixed dates and UIDs."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    (series_uid, sop_uid), (cdate, ctime) = uids, created
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label or "Nodule",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "PatientName ... unlikely to represent the intended person name"
        seg = hd.seg.Segmentation(
            source_images=cts, pixel_array=m, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[desc], series_instance_uid=series_uid, series_number=1000,
            sop_instance_uid=sop_uid, instance_number=1, manufacturer="rggan", manufacturer_model_name="rggan demo",
            software_versions="0.1.0", device_serial_number="1", series_description="Segmentation",
        )  # fmt: skip
    # determinism: highdicom stamps "now" and random UIDs
    for kw in ("SeriesDate", "ContentDate", "InstanceCreationDate"):
        if kw in seg:
            setattr(seg, kw, cdate)
    for kw in ("SeriesTime", "ContentTime", "InstanceCreationTime"):
        if kw in seg:
            setattr(seg, kw, ctime)
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = cdate + ctime
    org_uid = demo_uid("dim-org", series_uid)
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = org_uid
    for item in seg.get("DimensionIndexSequence", []):
        item.DimensionOrganizationUID = org_uid
    return seg


def write_seg(
    path: Path,
    kind: SegKind,
    mask: np.ndarray,
    ct: Sequence[Dataset],
    *,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    number_of_frames: int | None = None,
    creation_date: str = "20170425",
    creation_time: str = "173900",
    segment_label: str | None = None,
) -> Path:
    """Write a single-segment BINARY SEG of ``mask`` (``(Z, Y, X)`` in ascending-normal order, like ``ct``).

    ``ct`` are the CT headers (e.g. the return value of :func:`write_ct_series`); they are re-sorted by geometry
    so any order works, but ``mask[k]`` always refers to the k-th slice in ascending-normal order.

    * ``"slicer"`` (3D Slicer Reporting): one frame per CT slice incl. empty ones, ascending;
      one DerivationImageSequence listing all CT instances in the *shared* group; no per-frame source references;
      no ReferencedSeriesSequence; DimensionIndexSequence (StackID, InStackPositionNumber); SegmentLabel ``Heart``;
      StudyDate/SeriesDate/ContentDate = the creation date; StudyID ``1``; FoR of the CT.
    * ``"epad"`` (ePAD DSO): only non-empty frames, in the CT's InstanceNumber order; per-frame + shared
      derivation references; ReferencedSeriesSequence; SegmentIdentificationSequence only in the shared group;
      no top-level SliceThickness; file meta ImplementationClassUID = the SEG storage UID; a new FoR.
    * ``"highdicom"``: a conformant ``highdicom.seg.Segmentation`` (empty frames omitted).

    ``number_of_frames`` overrides the NumberOfFrames written (to mimic headers that disagree with the frames
    present; pydicom warns and decodes all frames when the value is too small). UIDs default to values derived
    from the CT series UID and ``kind``, so output is deterministic. Saved with ``enforce_file_format=True``.
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cts = _sorted_ct(ct)
    m = (np.asarray(mask) > 0).astype(np.uint8)
    if m.shape != (len(cts), int(cts[0].Rows), int(cts[0].Columns)):
        raise ValueError(f"mask shape {m.shape} does not match the CT ({len(cts)}, {cts[0].Rows}, {cts[0].Columns})")
    ct_series = str(cts[0].SeriesInstanceUID)
    uids = (series_uid or demo_uid("seg-series", ct_series, kind), sop_uid or demo_uid("seg-sop", ct_series, kind))
    created = (creation_date, creation_time)
    if kind == "highdicom":
        ds = _highdicom_seg(cts, m, uids, created, segment_label)
    elif kind in ("slicer", "epad"):
        ds, pixels = (_slicer_seg if kind == "slicer" else _epad_seg)(cts, m, uids, created, segment_label)
        ds.NumberOfFrames = int(pixels.shape[0])
        ds.PixelData = pack_bits(pixels.reshape(-1)) if pixels.size else b""
    else:
        raise ValueError(f"unknown SEG kind {kind!r} (use 'slicer', 'epad' or 'highdicom')")
    if number_of_frames is not None:
        ds.NumberOfFrames = int(number_of_frames)
    ds.save_as(path, enforce_file_format=True)
    return path
