"""Tests of rggan.data.dicom on real third-party DICOM files and on NBIA-shaped trees written by rggan.demo."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import pack_bits

from rggan import demo as demo_writers
from rggan.data import dicom
from rggan.errors import PatientDataError

SHAPE = (10, 24, 20)  # (Z, rows, cols): non-square so a transposition fails
SPACING = (2.5, 0.8, 0.7)  # (dz, dy, dx)
ORIGIN = (-8.0, -9.5, -120.0)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------


def truth_mask(shift: int = 0) -> np.ndarray:
    """A tumour off-centre in z (a z flip gives a different mask) plus one asymmetric in-plane pixel."""
    m = np.zeros(SHAPE, np.uint8)
    m[2 + shift : 5 + shift, 5:12, 8:16] = 1
    m[3 + shift, 20, 2] = 1
    return m


def phantom(seed: int = 0) -> np.ndarray:
    """Integer HU values with a z gradient, so slice order is visible in the pixels too."""
    rng = np.random.default_rng(seed)
    vol = np.rint(rng.normal(-400, 200, SHAPE))
    return vol + 10 * np.arange(SHAPE[0])[:, None, None]


@pytest.fixture(scope="module")
def demo():
    """The demo writers (:mod:`rggan.demo`): CT/PET series, SEGs of every producer, NBIA folder names."""
    return demo_writers


def series_dir(demo, base: Path, layout: str, patient: str, study, number: int, desc: str, uid: str) -> Path:
    """Folder of a series in the NBIA descriptive or classic layout."""
    coll = base / "NSCLC Radiogenomics" / patient
    if layout == "classic":
        return coll / study.study_uid / uid
    return coll / demo.nbia_study_folder(study) / demo.nbia_series_folder(number, desc, uid)


def write_ct(demo, folder: Path, patient: str, study, uid: str, vol=None, **kw):
    kw.setdefault("spacing", SPACING)
    kw.setdefault("origin", ORIGIN)
    kw.setdefault("description", "THORAX 1.0 B45f")
    kw.setdefault("series_number", 3)
    return demo.write_ct_series(
        folder, phantom() if vol is None else vol, patient_id=patient, study=study, series_uid=uid, **kw
    )


def make_patient(demo, base: Path, patient: str, seg_kind: str | None, **ct_kw):
    """One study with one CT (+ a SEG of truth_mask()) in the descriptive layout; returns (headers, seg path, study)."""
    study = demo.StudyInfo(study_uid=demo.demo_uid("study", base, patient))
    ct_uid = demo.demo_uid("ct", base, patient)
    headers = write_ct(
        demo, series_dir(demo, base, "descriptive", patient, study, 3, "CT", ct_uid), patient, study, ct_uid, **ct_kw
    )
    seg_path = None
    if seg_kind:
        seg_uid = demo.demo_uid("seg", base, patient)
        seg_path = series_dir(demo, base, "descriptive", patient, study, 1000, "SEG", seg_uid) / "1-1.dcm"
        demo.write_seg(seg_path, seg_kind, truth_mask(), headers, series_uid=seg_uid)
    return headers, seg_path, study


def rewrite(path: Path, edit) -> None:
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path, enforce_file_format=True)


def only(items):
    assert len(items) == 1, items
    return items[0]


# ----------------------------------------------------------------------------------------------------------------------
# Real third-party files
# ----------------------------------------------------------------------------------------------------------------------


def test_ct_small_index_geometry_and_hu(tmp_path):
    src = get_testdata_file("CT_small.dcm")
    shutil.copy(src, tmp_path / "1-1.dcm")
    index = dicom.index_dicom_tree(tmp_path)
    assert index.problems == []
    series = only(list(index.series.values()))
    assert (series.kind, series.modality, series.n_files) == ("CT", "CT", 1)
    ref = pydicom.dcmread(src)
    assert index.series_of_instance(ref.SOPInstanceUID) is series
    assert list(index.patients) == [ref.PatientID]

    geo = dicom.read_ct_geometry(series)
    assert geo.shape == (1, 128, 128)
    assert geo.pixel_spacing == pytest.approx((0.661468, 0.661468))
    assert geo.slice_spacing == pytest.approx(5.0)  # single slice: SliceThickness
    np.testing.assert_allclose(geo.positions[0], [float(v) for v in ref.ImagePositionPatient])

    hu = dicom.read_ct_slices(geo, [0])
    assert hu.dtype == np.float32 and hu.shape == (1, 128, 128)
    expected = ref.pixel_array.astype(np.float64) * float(ref.RescaleSlope) + float(ref.RescaleIntercept)
    padded = ref.pixel_array == int(ref.PixelPaddingValue)
    np.testing.assert_array_equal(hu[0][~padded], expected[~padded])
    assert np.all(hu[0][padded] == dicom.PADDING_HU)


def test_liver_1frame_seg_without_number_of_frames(tmp_path, caplog):
    src = get_testdata_file("liver_1frame.dcm")
    ds = pydicom.dcmread(src)
    assert "NumberOfFrames" not in ds and len(ds.PerFrameFunctionalGroupsSequence) == 3
    shutil.copy(src, tmp_path / "1-1.dcm")
    index = dicom.index_dicom_tree(tmp_path)
    seg = only(list(index.series.values()))
    assert seg.kind == "SEG" and dicom.find_patient_segs(index, seg.patient_id) == [seg]
    with caplog.at_level(logging.WARNING, logger="rggan.data.dicom"):
        frames = dicom.decode_seg_frames(ds)
    assert "using the frames present" in caplog.text
    assert frames.shape == (1, 512, 512) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], ds.pixel_array)
    assert len(dicom.seg_references(ds).instance_uids) == 3


def test_liver_dcmqi_seg_references_and_mask():
    path = get_testdata_file("liver.dcm")  # from pydicom-data
    assert path is not None, "pydicom-data is not installed"
    ds = pydicom.dcmread(path)
    refs = dicom.seg_references(ds)
    rss = ds.ReferencedSeriesSequence[0]
    assert refs.series_uids == [rss.SeriesInstanceUID]
    assert refs.instance_uids == sorted(i.ReferencedSOPInstanceUID for i in rss.ReferencedInstanceSequence)
    per_frame = sorted(
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in ds.PerFrameFunctionalGroupsSequence
    )
    assert per_frame == refs.instance_uids

    # The referenced CT is not shipped: build its geometry from the frames' positions, in reverse
    # order so the reader has to place frames by position, not by index.
    ipps = np.array(
        [
            [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
            for f in ds.PerFrameFunctionalGroupsSequence
        ]
    )
    iop = np.array(
        [float(v) for v in ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient]
    )
    normal = np.cross(iop[:3], iop[3:])
    order = np.argsort(ipps @ normal)
    spacing = [float(v) for v in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    geo = dicom.CTGeometry(
        patient_id=ds.PatientID, series_uid=rss.SeriesInstanceUID, study_uid=ds.StudyInstanceUID,
        frame_of_reference_uid=ds.FrameOfReferenceUID, files=[Path(f"{k}.dcm") for k in range(3)],
        sop_instance_uids=[f"1.2.3.{k}" for k in range(3)], positions=ipps[order], orientation=iop, normal=normal,
        slice_positions=(ipps @ normal)[order], rows=ds.Rows, cols=ds.Columns, pixel_spacing=tuple(spacing),
        slice_spacing=float(np.diff((ipps @ normal)[order]).mean()),
    )  # fmt: skip
    mask = dicom.read_seg_mask(path, geo)
    pixels = ds.pixel_array
    assert mask.shape == (3, 512, 512) and mask.dtype == np.uint8
    assert int(mask.sum()) == int(pixels.sum()) > 0
    np.testing.assert_array_equal(mask, pixels[order])


def test_seg_references_from_every_location():
    def item(**kw):
        ds = pydicom.Dataset()
        for k, v in kw.items():
            setattr(ds, k, v)
        return ds

    def source(uid):
        return item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.2", ReferencedSOPInstanceUID=uid)

    seg = item(
        ReferencedSeriesSequence=[item(SeriesInstanceUID="9.1", ReferencedInstanceSequence=[source("1.1")])],
        ReferencedImageSequence=[source("1.2")],
        SharedFunctionalGroupsSequence=[item(DerivationImageSequence=[item(SourceImageSequence=[source("1.3")])])],
        PerFrameFunctionalGroupsSequence=[
            item(DerivationImageSequence=[item(SourceImageSequence=[source("1.4"), source("1.1")])]),
            item(ReferencedImageSequence=[source("1.5")]),
        ],
    )
    refs = dicom.seg_references(seg)
    assert refs.instance_uids == ["1.1", "1.2", "1.3", "1.4", "1.5"]
    assert refs.series_uids == ["9.1"]


# ----------------------------------------------------------------------------------------------------------------------
# Problems are recorded, never raised
# ----------------------------------------------------------------------------------------------------------------------


def test_bad_files_are_recorded(tmp_path):
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "good.dcm").write_bytes(data)
    (tmp_path / "copy_of_good.dcm").write_bytes(data)
    (tmp_path / "pixels_cut.dcm").write_bytes(data[:-1000])
    (tmp_path / "header_cut.dcm").write_bytes(data[:3000])
    (tmp_path / "preamble_only.dcm").write_bytes(data[:140])
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "metadata.csv").write_text("Series UID,Collection\n1.2.3,NSCLC Radiogenomics\n")
    (tmp_path / "empty_folder").mkdir()
    index = dicom.index_dicom_tree(tmp_path)
    assert only(list(index.series.values())).n_files == 1
    kinds = {p.path.name: p.kind for p in index.problems}
    # exactly one of the two identical files is kept; the other is a duplicate
    assert sorted(k for k in kinds if kinds[k] == "duplicate") in (["copy_of_good.dcm"], ["good.dcm"])
    assert {k: v for k, v in kinds.items() if v != "duplicate"} == {
        "pixels_cut.dcm": "truncated",
        "header_cut.dcm": "truncated",
        "preamble_only.dcm": "incomplete",
        "empty.dcm": "not_dicom",
        "metadata.csv": "not_dicom",
    }
    assert all(p.reason for p in index.problems)


def test_file_without_preamble_and_file_meta_is_read(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    ds.preamble = None
    del ds.file_meta
    ds.save_as(tmp_path / "raw_dataset", implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert (tmp_path / "raw_dataset").read_bytes()[:2] == b"\x08\x00"
    index = dicom.index_dicom_tree(tmp_path)
    assert index.problems == []
    geo = dicom.read_ct_geometry(only(list(index.series.values())))
    np.testing.assert_array_equal(dicom.read_ct_slices(geo)[0], expected)


def test_empty_and_missing_folders(tmp_path):
    index = dicom.index_dicom_tree(tmp_path)
    assert index.series == {} and index.problems == [] and index.patients == {}
    missing = dicom.index_dicom_tree(tmp_path / "nope")
    assert missing.series == {} and only(missing.problems).kind == "unreadable"


# ----------------------------------------------------------------------------------------------------------------------
# NBIA-shaped downloads written with rggan.demo
# ----------------------------------------------------------------------------------------------------------------------

PATIENTS = {  # patient: (SEG kind, feet-first numbering, z shift of the truth mask)
    "R01-001": ("slicer", False, 0),
    "R01-002": ("slicer", True, 1),
    "R01-003": ("epad", False, 2),
    "R01-004": ("epad", True, 3),
    "R01-005": ("highdicom", False, 4),
    "R01-006": ("highdicom", True, 5),
    "AMC-001": (None, False, 0),
}


@pytest.fixture(scope="module")
def download(demo, tmp_path_factory):
    """Both NBIA layouts of one download: every SEG kind, feet-first numbering, a scout, a PET/CT study."""
    base = tmp_path_factory.mktemp("nbia")
    trees = {layout: base / layout / "manifest-1700000000000" for layout in ("descriptive", "classic")}
    expected = {}
    for patient, (kind, feet_first, shift) in PATIENTS.items():
        study = demo.StudyInfo(study_uid=demo.demo_uid("study", patient), description="CT CHEST W/O, CONTRAST")
        pet_study = demo.StudyInfo(study_uid=demo.demo_uid("pet-study", patient), description="PET IMAGE W/CT, SKULL-")
        folders = []  # (study, number, description, uid) of each series written, in a scratch folder

        def put(study_, number, desc, uid, _folders=folders):
            _folders.append((study_, number, desc, uid))
            return base / "scratch" / uid

        ct_uid = demo.demo_uid("ct", patient)
        headers = write_ct(
            demo, put(study, 3, "THORAX 1.0 B45f", ct_uid), patient, study, ct_uid, vol=phantom(len(expected)),
            feet_first=feet_first,
        )  # fmt: skip
        scout_uid = demo.demo_uid("scout", patient)
        write_ct(
            demo, put(study, 1, "SCOUT", scout_uid), patient, study, scout_uid, vol=phantom()[:1],
            orientation=CORONAL, description="SCOUT", series_number=1,
        )  # fmt: skip
        pet_ct_uid = demo.demo_uid("pet-ct", patient)
        write_ct(
            demo, put(pet_study, 2, "CT_SLICES", pet_ct_uid), patient, pet_study, pet_ct_uid, signed=False,
            description="CT_SLICES", series_number=2,
        )  # fmt: skip
        pet_uid = demo.demo_uid("pet", patient)
        write_ct(
            demo, put(pet_study, 4, "PET AC", pet_uid), patient, pet_study, pet_uid, vol=np.abs(phantom()),
            modality="PT", description="PET AC", series_number=4,
        )  # fmt: skip
        seg_uid = None
        if kind:
            seg_uid = demo.demo_uid("seg", patient)
            truth = truth_mask(shift)
            demo.write_seg(put(study, 1000, "SEG", seg_uid) / "1-1.dcm", kind, truth, headers, series_uid=seg_uid)
            expected[patient] = (truth, ct_uid, seg_uid)
        for layout, root in trees.items():
            for study_, number, desc, uid in folders:
                shutil.copytree(
                    base / "scratch" / uid, series_dir(demo, root, layout, patient, study_, number, desc, uid)
                )
        shutil.rmtree(base / "scratch")
    for root in trees.values():
        (root / "metadata.csv").write_text("Series UID,Study Description\n1.2.3,PET IMAGE W/CT, SKULL-\r\n")
        (root / "NSCLC Radiogenomics" / "LICENSE").write_text("CC BY 3.0\n")
    return trees, expected


@pytest.mark.parametrize("layout", ["descriptive", "classic"])
def test_index_classifies_series_by_header(download, layout):
    trees, expected = download
    index = dicom.index_dicom_tree(trees[layout])
    assert sorted(p.path.name for p in index.problems) == ["LICENSE", "metadata.csv"]
    assert {p.kind for p in index.problems} == {"not_dicom"}
    assert list(index.patients) == sorted(PATIENTS)
    for patient, series in index.patients.items():
        kinds = sorted(s.kind for s in series)
        assert kinds == sorted(["CT", "CT", "CT", "PT"] + (["SEG"] if PATIENTS[patient][0] else []))
        assert len({s.study_uid for s in series}) == 2
        for s in series:
            for inst in s.instances:
                assert index.series_of_instance(inst.sop_instance_uid) is s
    assert {s.n_files for s in index.series.values() if s.kind == "CT"} == {1, SHAPE[0]}
    scout = only([s for s in index.patients["R01-001"] if s.description == "SCOUT"])
    assert not scout.is_axial and scout.n_files == 1


@pytest.mark.parametrize("layout", ["descriptive", "classic"])
def test_every_seg_kind_reproduces_the_truth_exactly(download, layout, caplog):
    trees, expected = download
    index = dicom.index_dicom_tree(trees[layout])
    assert dicom.find_patient_segs(index, "AMC-001") == []
    for patient, (truth, ct_uid, seg_uid) in expected.items():
        seg = only(dicom.find_patient_segs(index, patient))
        assert seg.series_uid == seg_uid
        refs = dicom.seg_references(pydicom.dcmread(seg.files[0], stop_before_pixels=True))
        assert refs.instance_uids == sorted(i.sop_instance_uid for i in index.series[ct_uid].instances)
        with caplog.at_level(logging.WARNING, logger="rggan.data.dicom"):
            ct = dicom.resolve_referenced_ct(index, seg)
        assert caplog.records == []  # found through the references, not a fallback
        assert ct.series_uid == ct_uid  # not the scout, not the PET/CT's CT
        geo = dicom.read_ct_geometry(ct)
        assert geo.shape == SHAPE and geo.spacing == pytest.approx(SPACING)
        assert np.all(np.diff(geo.slice_positions) > 0)
        mask = dicom.read_seg_mask(seg.files[0], geo)
        assert mask.dtype == np.uint8 and mask.shape == SHAPE
        np.testing.assert_array_equal(mask, truth, err_msg=f"{patient} ({PATIENTS[patient][:2]})")


@pytest.mark.parametrize("layout", ["descriptive", "classic"])
def test_generated_demo_download_matches_its_ground_truth(demo, tmp_path, layout):
    """The demo generator's own download (all SEG kinds, scouts, PET/CT, NumberOfFrames mismatches) and truth."""
    summary = demo.generate_demo_dataset(tmp_path, patients=4, seed=1, layout=layout, ct_shape=(12, 40, 36), n_genes=20)
    truth = json.loads(Path(summary.truth_file).read_text())
    masks = np.load(summary.masks_file)
    index = dicom.index_dicom_tree(summary.output)
    assert {p.kind for p in index.problems} == {"not_dicom"}  # metadata.csv, LICENSE, RNA table, truth files
    assert set(index.patients) == set(summary.imaging_patients)
    n_checked = 0
    for patient, info in truth["patients"].items():
        segs = dicom.find_patient_segs(index, patient)
        if not info["has_seg"]:
            assert segs == []
            continue
        seg = only(segs)
        assert seg.series_uid == info["series"]["seg"]["series_uid"]
        ct = dicom.resolve_referenced_ct(index, seg)
        assert ct.series_uid == info["series"]["ct"]["series_uid"]
        mask = dicom.read_seg_mask(seg.files[0], dicom.read_ct_geometry(ct))
        np.testing.assert_array_equal(mask, masks[patient], err_msg=f"{patient} {info['seg_kind']}")
        n_checked += 1
    assert n_checked >= 4


def test_hu_slices_signed_unsigned_padding_and_feet_first(demo, tmp_path):
    vol = np.maximum(phantom(3), -1000.0)  # unsigned 12-bit storage cannot hold less than -1024 HU
    vol[:, 0, :4] = np.nan  # outside the field of view -> PixelPaddingValue
    for name, kw in {
        "signed": {},
        "unsigned": {"signed": False, "padding_value": 0},
        "ff": {"feet_first": True},
    }.items():
        study = demo.StudyInfo(study_uid=demo.demo_uid("hu", name))
        write_ct(demo, tmp_path / name, "R01-009", study, demo.demo_uid("hu-ct", name), vol=vol, **kw)
        geo = dicom.read_ct_geometry(only(list(dicom.index_dicom_tree(tmp_path / name).series.values())))
        hu = dicom.read_ct_slices(geo, [0, 7, -1])
        expected = np.where(np.isnan(vol), dicom.PADDING_HU, vol)[[0, 7, -1]]
        np.testing.assert_array_equal(hu, expected.astype(np.float32), err_msg=name)
        np.testing.assert_array_equal(dicom.read_ct_volume(geo), np.where(np.isnan(vol), dicom.PADDING_HU, vol))


def test_seg_frames_shuffled_wrong_number_of_frames_and_fractional(demo, tmp_path):
    headers, seg_path, _ = make_patient(demo, tmp_path, "R01-010", "slicer", feet_first=True)
    index = dicom.index_dicom_tree(tmp_path)
    geo = dicom.read_ct_geometry(only([s for s in index.series.values() if s.kind == "CT"]))
    truth = truth_mask()
    np.testing.assert_array_equal(dicom.read_seg_mask(seg_path, geo), truth)

    def shuffle(ds):
        frames = ds.pixel_array
        perm = np.random.default_rng(1).permutation(len(frames))
        ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence([ds.PerFrameFunctionalGroupsSequence[i] for i in perm])
        ds.PixelData = pack_bits(frames[perm].reshape(-1))
        ds.NumberOfFrames = 999  # too large: pydicom itself would refuse to decode

    rewrite(seg_path, shuffle)
    np.testing.assert_array_equal(dicom.read_seg_mask(seg_path, geo), truth)
    rewrite(seg_path, lambda ds: delattr(ds, "NumberOfFrames"))
    np.testing.assert_array_equal(dicom.read_seg_mask(seg_path, geo), truth)

    def fractional(ds):
        frames = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")[: len(headers) * 24 * 20]
        frac = frames.reshape(-1, 24, 20).astype(np.uint8) * 200
        frac[frac == 0] = 99  # below half of 200: background
        ds.SegmentationType = "FRACTIONAL"
        ds.SegmentationFractionalType = "PROBABILITY"
        ds.MaximumFractionalValue = 200
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = frac.tobytes()

    rewrite(seg_path, fractional)
    np.testing.assert_array_equal(dicom.read_seg_mask(seg_path, geo), truth)


def test_seg_segment_selection_and_errors(demo, tmp_path):
    _, seg_path, _ = make_patient(demo, tmp_path, "R01-011", "epad")
    index = dicom.index_dicom_tree(tmp_path)
    geo = dicom.read_ct_geometry(only([s for s in index.series.values() if s.kind == "CT"]))
    np.testing.assert_array_equal(dicom.read_seg_mask(seg_path, geo, segments=[1]), truth_mask())
    with pytest.raises(PatientDataError, match="no foreground"):
        dicom.read_seg_mask(seg_path, geo, segments=[2])  # ePAD: segment number only in the shared group

    def renumber(ds):  # segment 2, named only in the shared group
        ds.SegmentSequence[0].SegmentNumber = 2
        ds.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence[0].ReferencedSegmentNumber = 2

    rewrite(seg_path, renumber)
    np.testing.assert_array_equal(dicom.read_seg_mask(seg_path, geo, segments=[2]), truth_mask())
    with pytest.raises(PatientDataError, match="no foreground"):
        dicom.read_seg_mask(seg_path, geo, segments=[1])
    with pytest.raises(PatientDataError, match="matches no CT slice"):
        dicom.read_seg_mask(
            seg_path, replace(geo, slice_positions=geo.slice_positions + 0.5 * SPACING[0], slice_spacing=1.0)
        )
    with pytest.raises(PatientDataError, match="SEG frames are 24x20 but the CT slices are 24x24"):
        dicom.read_seg_mask(seg_path, replace(geo, cols=24))
    with pytest.raises(PatientDataError, match="pixel spacing"):
        dicom.read_seg_mask(seg_path, replace(geo, pixel_spacing=(0.8, 0.8)))
    with pytest.raises(PatientDataError, match="shifted in-plane"):
        dicom.read_seg_mask(seg_path, replace(geo, positions=geo.positions + np.array([2.0, 0.0, 0.0])))

    headers, empty_seg, _ = make_patient(demo, tmp_path / "empty", "R01-012", None)
    empty_seg = tmp_path / "empty" / "seg.dcm"
    demo.write_seg(empty_seg, "slicer", np.zeros(SHAPE, np.uint8), headers)
    geo2 = dicom.read_ct_geometry(
        only(list(dicom.index_dicom_tree(tmp_path / "empty" / "NSCLC Radiogenomics").series.values()))
    )
    with pytest.raises(PatientDataError, match="SEG has no foreground pixels") as err:
        dicom.read_seg_mask(empty_seg, geo2)
    assert err.value.patient == "R01-012" and err.value.path == str(empty_seg)


def test_seg_frame_placement_without_per_frame_positions(demo, tmp_path):
    headers, seg_path, _ = make_patient(demo, tmp_path, "R01-014", "epad")
    geo = dicom.read_ct_geometry(only([s for s in dicom.index_dicom_tree(tmp_path).series.values() if s.kind == "CT"]))

    def no_positions(ds):  # frames placed by their per-frame source SOPInstanceUID
        for item in ds.PerFrameFunctionalGroupsSequence:
            del item.PlanePositionSequence

    rewrite(seg_path, no_positions)
    np.testing.assert_array_equal(dicom.read_seg_mask(seg_path, geo), truth_mask())

    one = np.zeros(SHAPE, np.uint8)
    one[6, 3:9, 4:7] = 1
    demo.write_seg(seg_path, "epad", one, headers)

    def shared_position(ds):  # a single frame whose position is only in the shared group
        item = ds.PerFrameFunctionalGroupsSequence[0]
        ds.SharedFunctionalGroupsSequence[0].PlanePositionSequence = item.PlanePositionSequence
        del item.PlanePositionSequence
        del item.DerivationImageSequence

    rewrite(seg_path, shared_position)
    np.testing.assert_array_equal(dicom.read_seg_mask(seg_path, geo), one)


def test_ct_geometry_errors(demo, tmp_path):
    make_patient(demo, tmp_path, "R01-013", None)
    ct = only(list(dicom.index_dicom_tree(tmp_path).series.values()))
    by_z = dicom.read_ct_geometry(ct).files
    by_z[4].unlink()  # a missing slice
    with pytest.raises(PatientDataError, match="non-uniform CT slice spacing"):
        dicom.read_ct_geometry(only(list(dicom.index_dicom_tree(tmp_path).series.values())))

    def same_place(ds):  # a second acquisition at an existing position
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.99"
        ds.ImagePositionPatient = pydicom.dcmread(by_z[0]).ImagePositionPatient

    shutil.copy(by_z[5], tmp_path / "extra.dcm")
    rewrite(tmp_path / "extra.dcm", same_place)
    by_z[5].unlink()
    with pytest.raises(PatientDataError, match="same position"):
        dicom.read_ct_geometry(only(list(dicom.index_dicom_tree(tmp_path).series.values())))
    rewrite(tmp_path / "extra.dcm", lambda ds: setattr(ds, "ImageOrientationPatient", list(CORONAL)))
    with pytest.raises(PatientDataError, match="different orientations"):
        dicom.read_ct_geometry(only(list(dicom.index_dicom_tree(tmp_path).series.values())))



def test_ct_geometry_accounts_for_an_unreadable_slice(demo, tmp_path):
    """A gap left by an unreadable file of the series is a missing slice, not a broken volume."""
    make_patient(demo, tmp_path, "R01-013", None)
    full = dicom.read_ct_geometry(only(list(dicom.index_dicom_tree(tmp_path).series.values())))
    expected = dicom.read_ct_slices(full, [3, 5, -1])
    full.files[4].write_bytes(b"")  # emptied: unreadable, its position unknown
    index = dicom.index_dicom_tree(tmp_path)
    ct = only(list(index.series.values()))
    with pytest.raises(PatientDataError, match="non-uniform CT slice spacing"):
        dicom.read_ct_geometry(ct)  # nothing accounts for the gap (as for a file absent from the download)
    geo = dicom.read_ct_geometry(ct, unusable=index.problems)
    assert geo.shape == full.shape and list(geo.missing) == [4] and geo.files[4] is None
    assert full.files[4].name in geo.missing[4]
    np.testing.assert_allclose(geo.slice_positions, full.slice_positions)
    np.testing.assert_array_equal(dicom.read_ct_slices(geo, [3, 5, -1]), expected)
    with pytest.raises(PatientDataError, match="CT slice 4 is unusable"):
        dicom.read_ct_slices(geo, [4])
    full.files[-1].write_bytes(b"")  # the last slice too: invisible in the spacing, restored by the SEG's reach
    index = dicom.index_dicom_tree(tmp_path)
    geo = dicom.read_ct_geometry(only(list(index.series.values())), unusable=index.problems,
                                 cover=[full.positions[-1]])  # fmt: skip
    assert geo.shape == full.shape and sorted(geo.missing) == [4, full.shape[0] - 1]

def _strip_references(ds):
    shared = ds.SharedFunctionalGroupsSequence[0]
    if "DerivationImageSequence" in shared:
        del shared.DerivationImageSequence
    for item in ds.PerFrameFunctionalGroupsSequence:
        if "DerivationImageSequence" in item:
            del item.DerivationImageSequence
    if "ReferencedSeriesSequence" in ds:
        del ds.ReferencedSeriesSequence


def test_resolve_fallbacks_and_errors(demo, tmp_path, caplog):
    headers, seg_path, study = make_patient(demo, tmp_path, "R01-020", "slicer")
    ct_uid = headers[0].SeriesInstanceUID
    scout_dir = tmp_path / "scout"
    write_ct(demo, scout_dir, "R01-020", study, demo.demo_uid("scout"), vol=phantom()[:1], orientation=CORONAL)
    rewrite(seg_path, _strip_references)
    rewrite(seg_path, lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3.4"))
    index = dicom.index_dicom_tree(tmp_path)
    seg = only(dicom.find_patient_segs(index, "R01-020"))
    assert dicom.seg_references(pydicom.dcmread(seg.files[0])).instance_uids == []
    with caplog.at_level(logging.WARNING, logger="rggan.data.dicom"):
        assert dicom.resolve_referenced_ct(index, seg).series_uid == ct_uid  # the scout is skipped
    assert "only axial multi-slice CT series" in caplog.text

    # two more volumes in the study: the FrameOfReferenceUID picks the right one ...
    for k in (1, 2):
        write_ct(demo, tmp_path / f"other{k}", "R01-020", study, demo.demo_uid("other", k))
    rewrite(seg_path, lambda ds: setattr(ds, "FrameOfReferenceUID", headers[0].FrameOfReferenceUID))
    assert dicom.resolve_referenced_ct(dicom.index_dicom_tree(tmp_path), seg).series_uid == ct_uid
    # ... and with nothing to tell them apart, the error says why
    rewrite(seg_path, lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3.4"))
    with pytest.raises(PatientDataError, match="study holds 4 CT series and the SEG references none of them"):
        dicom.resolve_referenced_ct(dicom.index_dicom_tree(tmp_path), seg)


def test_resolve_missing_referenced_series(demo, tmp_path):
    headers, seg_path, _ = make_patient(demo, tmp_path, "R01-021", "epad")
    ct_uid = headers[0].SeriesInstanceUID
    index = dicom.index_dicom_tree(tmp_path)
    seg = only(dicom.find_patient_segs(index, "R01-021"))
    ct = dicom.resolve_referenced_ct(index, seg)
    assert ct.series_uid == ct_uid
    shutil.rmtree(ct.folder)
    index = dicom.index_dicom_tree(tmp_path)
    with pytest.raises(PatientDataError, match=f"SEG references CT series {ct_uid} which is not in the download"):
        dicom.resolve_referenced_ct(index, seg)
