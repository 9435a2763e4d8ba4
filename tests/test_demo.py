"""Tests of the built-in demo download (rggan.demo, also importable as rggan.data.demo)."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from rggan.demo import (
    CT_IMAGE_STORAGE,
    METAGENES,
    PET_IMAGE_STORAGE,
    SEGMENTATION_STORAGE,
    StudyInfo,
    demo_uid,
    generate_demo_dataset,
    write_ct_series,
    write_seg,
)

SOP_BY_MODALITY = {"CT": CT_IMAGE_STORAGE, "PT": PET_IMAGE_STORAGE, "SEG": SEGMENTATION_STORAGE}
METADATA_HEADER = (
    "Series UID,Collection,3rd Party Analysis,Data Description URI,Subject ID,Study UID,Study Description,Study Date,"
    "Series Description,Manufacturer,Modality,SOP Class Name,SOP Class UID,Number of Images,File Size,File Location,"
    "Download Timestamp"
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = generate_demo_dataset(out, patients=20, seed=7)
    truth = json.loads(summary.truth_file.read_text())
    return summary, truth


@pytest.fixture(scope="module")
def headers(demo):
    """Every DICOM file of the demo: path -> header (no pixels)."""
    summary, _ = demo
    return {p: pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(summary.collection.rglob("*.dcm"))}


def spearmanr(x, y) -> tuple[float]:
    """Spearman's rho via pandas (no scipy dependency)."""
    return (float(pd.Series(np.asarray(x, float)).corr(pd.Series(np.asarray(y, float)), method="spearman")),)


def _nbia(text: str) -> str:
    return text[:53].replace("/", "-")


def _ct_volume_headers(folder: Path) -> list[pydicom.Dataset]:
    dss = [pydicom.dcmread(p) for p in folder.iterdir()]
    return sorted(dss, key=lambda d: float(d.ImagePositionPatient[2]))  # IOP is axial 1\0\0\0\1\0


def _seg_to_mask(seg: pydicom.Dataset, ct: list[pydicom.Dataset]) -> np.ndarray:
    """Plain pydicom: place each frame on the CT slice with the same z (per-frame IPP)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumberOfFrames too small on purpose for one patient
        frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    zs = np.array([float(d.ImagePositionPatient[2]) for d in ct])
    mask = np.zeros((len(ct), seg.Rows, seg.Columns), np.uint8)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        z = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        k = int(np.argmin(np.abs(zs - z)))
        assert abs(zs[k] - z) < 1e-3
        mask[k] |= frame
    return mask


# ---------------------------------------------------------------------------------------------------------------------


def test_determinism(tmp_path):
    kw = dict(patients=3, seed=3, ct_shape=(12, 48, 48), n_genes=60)
    a = generate_demo_dataset(tmp_path / "a", **kw)
    b = generate_demo_dataset(tmp_path / "b", **kw)
    assert a.truth_file.read_bytes() == b.truth_file.read_bytes()
    assert a.rna_file.read_bytes() == b.rna_file.read_bytes()
    assert a.masks_file.read_bytes() == b.masks_file.read_bytes()
    assert a.metadata_csv.read_bytes() == b.metadata_csv.read_bytes()
    files_a = sorted(p.relative_to(a.output) for p in a.collection.rglob("*.dcm"))
    files_b = sorted(p.relative_to(b.output) for p in b.collection.rglob("*.dcm"))
    assert files_a == files_b
    segs = [p for p in files_a if p.name == "1-1.dcm"]
    for rel in segs + files_a[:: max(1, len(files_a) // 10)]:
        assert (a.output / rel).read_bytes() == (b.output / rel).read_bytes(), rel
    c = generate_demo_dataset(tmp_path / "c", **{**kw, "seed": 4})
    assert c.truth_file.read_bytes() != a.truth_file.read_bytes()


def test_categories_and_summary(demo):
    summary, truth = demo
    assert len(summary.gan_cohort) == 20
    assert len(summary.no_rna) == 1 and len(summary.no_seg) == 1 and len(summary.rna_only) == 1
    assert len(summary.ct_only) == 2 and all(p.startswith("AMC-") for p in summary.ct_only)
    assert set(summary.seg_kinds.values()) == {"slicer", "epad", "highdicom"}
    assert set(summary.seg_kinds) == set(summary.gan_cohort) | set(summary.no_rna)
    assert summary.root.name.startswith("manifest-") and summary.collection == summary.root / "NSCLC Radiogenomics"
    assert summary.rna_file.parent == summary.truth_file.parent == summary.root.parent
    assert truth["categories"]["gan_cohort"] == summary.gan_cohort
    patient_dirs = sorted(p.name for p in summary.collection.iterdir() if p.is_dir())
    assert patient_dirs == summary.imaging_patients
    assert (summary.collection / "LICENSE").is_file()


def test_descriptive_layout_follows_nbia_rules(demo, headers):
    summary, truth = demo
    study_dates = {}
    for ds in headers.values():
        if ds.Modality != "SEG":  # Slicer SEGs stamp StudyDate with their creation date
            study_dates[ds.StudyInstanceUID] = ds.StudyDate
    series_files: dict[Path, list[str]] = {}
    for path, ds in headers.items():
        series_dir, study_dir, patient_dir = path.parent, path.parent.parent, path.parent.parent.parent
        assert patient_dir.name == ds.PatientID and patient_dir.parent == summary.collection
        d = study_dates[ds.StudyInstanceUID]
        assert study_dir.name == f"{d[4:6]}-{d[6:8]}-{d[:4]}-NA-{_nbia(ds.StudyDescription)}-{ds.StudyInstanceUID[-5:]}"
        assert series_dir.name == (
            f"{float(ds.SeriesNumber):.6f}-{_nbia(ds.SeriesDescription)}-{ds.SeriesInstanceUID[-5:]}"
        )
        series_files.setdefault(series_dir, []).append(path.name)
    for names in series_files.values():
        width = len(str(len(names)))
        assert sorted(names) == [f"1-{i:0{width}d}.dcm" for i in range(1, len(names) + 1)]
    all_dirs = {p.parent.parent.name for p in headers}
    assert any("PET IMAGE W-CT, SKULL-" in n and "," in n for n in all_dirs)  # comma kept, slash -> dash
    long = [ds.StudyDescription for ds in headers.values() if len(ds.StudyDescription) > 53]
    assert long, "want a study description longer than 53 characters"


def test_classic_layout(tmp_path):
    s = generate_demo_dataset(tmp_path, patients=2, seed=1, layout="classic", ct_shape=(12, 64, 64), n_genes=60)
    paths = sorted(s.collection.rglob("*.dcm"))
    assert paths
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        assert p.parent.name == ds.SeriesInstanceUID
        assert p.parent.parent.name == ds.StudyInstanceUID
        assert p.parent.parent.parent.name == ds.PatientID


def test_every_file_reads_with_right_class(demo, headers):
    summary, truth = demo
    modalities: dict[str, set[str]] = {}
    for path, ds in headers.items():
        assert ds.SOPClassUID == SOP_BY_MODALITY[ds.Modality], path
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.PatientName == ds.PatientID
        modalities.setdefault(ds.PatientID, set()).add(ds.Modality)
        if ds.Modality == "CT":
            assert ds.FrameOfReferenceUID and ds.StudyID == ""
            assert list(map(float, ds.ImageOrientationPatient))[:3] == [1.0, 0.0, 0.0] or "LOCALIZER" in ds.ImageType
        if ds.Modality == "SEG":
            assert ds.SeriesNumber == 1000 and path.name == "1-1.dcm"
    for p in summary.gan_cohort + summary.no_rna:
        assert {"CT", "SEG"} <= modalities[p]
    for p in summary.no_seg + summary.ct_only:
        assert "SEG" not in modalities[p]
    for p in summary.ct_only:
        assert modalities[p] == {"CT"}
    assert any("PT" in m for m in modalities.values())
    scouts = [ds for ds in headers.values() if ds.Modality == "CT" and "LOCALIZER" in ds.ImageType]
    assert scouts and all(
        sum(1 for d in headers.values() if d.SeriesInstanceUID == s.SeriesInstanceUID) == 1 for s in scouts
    )
    # CT variants: feet-first numbering and unsigned pixel data occur
    cts = [ds for ds in headers.values() if ds.Modality == "CT" and "LOCALIZER" not in ds.ImageType]
    assert {int(ds.PixelRepresentation) for ds in cts} == {0, 1}
    assert {ds.PatientPosition for ds in cts} == {"HFS", "FFS"}


def test_ct_geometry_and_hu(demo):
    summary, truth = demo
    masks = np.load(summary.masks_file)
    for pid in summary.gan_cohort[:8]:
        info = truth["patients"][pid]
        ct = _ct_volume_headers(summary.output / info["series"]["ct"]["folder"])
        vol = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in ct])
        assert list(vol.shape) == truth["ct_shape_zyx"]
        inst = [int(d.InstanceNumber) for d in ct]
        assert inst == (list(range(len(ct), 0, -1)) if info["feet_first"] else list(range(1, len(ct) + 1)))
        assert int(ct[0].PixelRepresentation) == (1 if info["signed"] else 0)
        mask = masks[pid]
        assert mask.shape == vol.shape and mask.dtype == np.uint8
        assert vol[mask > 0].mean() == pytest.approx(info["measured"]["mean_hu"], abs=0.6)
        # nodule off-centre in z: a z-flip would move it
        k0, k1 = info["measured"]["slices"]
        assert not np.array_equal(mask, mask[::-1])
        assert 0 < k0 <= k1 < len(ct) - 1
        assert info["measured"]["background_patches_in_lung"] >= 10
        assert info["phenotypes"]["radius_mm"] / float(ct[0].PixelSpacing[0]) >= 6.0 - 1e-6


@pytest.mark.parametrize("kind", ["slicer", "epad", "highdicom"])
def test_seg_frames_decode_to_truth(demo, kind):
    summary, truth = demo
    masks = np.load(summary.masks_file)
    pids = [p for p, k in summary.seg_kinds.items() if k == kind]
    assert pids
    for pid in pids:
        info = truth["patients"][pid]
        seg = pydicom.dcmread(summary.output / info["series"]["seg"]["file"])
        ct = _ct_volume_headers(summary.output / info["series"]["ct"]["folder"])
        ct_uids = {d.SOPInstanceUID for d in ct}
        assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY"
        shared = seg.SharedFunctionalGroupsSequence[0]
        per_frame = seg.PerFrameFunctionalGroupsSequence
        expected = masks[pid]
        if kind == "slicer":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frames = seg.pixel_array
            np.testing.assert_array_equal(frames, expected)  # one frame per CT slice, ascending
            assert seg.SegmentSequence[0].SegmentLabel == "Heart"
            assert "ReferencedSeriesSequence" not in seg
            sources = shared.DerivationImageSequence[0].SourceImageSequence
            assert {s.ReferencedSOPInstanceUID for s in sources} == ct_uids
            assert all("DerivationImageSequence" not in f for f in per_frame)
            assert seg.StudyDate != ct[0].StudyDate
        elif kind == "epad":
            assert len(per_frame) == int(expected.any(axis=(1, 2)).sum())
            assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct[0].SeriesInstanceUID
            assert "SegmentIdentificationSequence" in shared
            assert all("SegmentIdentificationSequence" not in f for f in per_frame)
            refs = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in per_frame}
            assert refs <= ct_uids
            assert seg.SeriesDescription.startswith("ePAD Generated DSO ")
        else:
            import highdicom as hd

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hseg = hd.seg.segread(summary.output / info["series"]["seg"]["file"])
                arr = hseg.get_pixels_by_source_instance(
                    [d.SOPInstanceUID for d in ct], combine_segments=True, assert_missing_frames_are_empty=True
                )
            np.testing.assert_array_equal(np.asarray(arr).reshape(expected.shape), expected)
        np.testing.assert_array_equal(_seg_to_mask(seg, ct), expected)
    if kind == "epad" and len(summary.gan_cohort) > 4:
        assert any(truth["patients"][p]["series"]["seg"]["number_of_frames_written"] is not None for p in pids), (
            "one ePAD SEG should carry a too-small NumberOfFrames"
        )


def test_rna_table(demo):
    summary, truth = demo
    rna = pd.read_csv(summary.rna_file, sep="\t", index_col=0, na_values=["NA"])
    assert rna.shape == (len(truth["genes"]), len(summary.rna_patients))
    assert list(rna.index) == truth["genes"]
    assert sorted(rna.columns) == summary.rna_patients
    assert list(rna.columns) != sorted(rna.columns)
    assert all(re.fullmatch(r"R01-\d{3}", c) for c in rna.columns)
    assert set(summary.rna_only) <= set(rna.columns) and not set(summary.no_rna) & set(rna.columns)
    assert rna.isna().any(axis=1).sum() > 0
    drivers = {d["gene"] for ph in truth["phenotypes"].values() for d in ph["drivers"]}
    assert drivers <= set(rna.index)
    assert not rna.loc[sorted(drivers)].isna().any().any()
    assert set(METAGENES) <= set(rna.index)
    assert {"MARCH1", "SEPT2"} <= set(rna.index)
    assert (rna.fillna(0) >= 0).all().all()
    with gzip.open(summary.rna_file, "rt") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        first = fh.readline().rstrip("\n").split("\t")
    assert header[0] and header[1:] == list(rna.columns)
    for v in first[1:]:
        if v != "NA":
            assert len(re.sub(r"[^0-9]", "", v.split("e")[0]).lstrip("0")) <= 6


def test_planted_phenotypes_follow_drivers(demo):
    """Spearman > 0.5 between each phenotype (measured on the written CT/SEG where possible) and its drivers."""
    summary, truth = demo
    rna = pd.read_csv(summary.rna_file, sep="\t", index_col=0, na_values=["NA"])
    cohort = summary.gan_cohort
    measured_key = {"radius_mm": "equivalent_radius_mm", "mean_hu": "mean_hu", "texture_hu": "std_hu"}
    for name, ph in truth["phenotypes"].items():
        key = measured_key.get(name)
        values = [
            truth["patients"][p]["measured"][key] if key else truth["patients"][p]["phenotypes"][name] for p in cohort
        ]
        score = np.zeros(len(cohort))
        for d in ph["drivers"]:
            assert truth["genes"].count(d["gene"]) == 1
            x = np.log2(rna.loc[d["gene"], cohort].to_numpy(float) + 1.0)
            score += d["weight"] * (x - d["mean_log2"]) / d["sd_log2"]
            rho = spearmanr(x, values)[0]
            assert np.sign(rho) == d["sign"] and abs(rho) > 0.5, (name, d["gene"], rho)
        assert spearmanr(score, values)[0] > 0.5, name
    members = {g for mod in truth["modules"].values() for g in mod}
    assert not members & set(truth["noise_genes"])


def test_metadata_csv(demo, headers):
    summary, _ = demo
    raw = summary.metadata_csv.read_bytes()
    lines = raw.decode().split("\r\n")
    assert lines[0] == METADATA_HEADER and lines[-1] == ""
    rows = lines[1:-1]
    assert len(rows) == len({ds.SeriesInstanceUID for ds in headers.values()})
    assert any(len(r.split(",")) > 17 for r in rows)  # unquoted comma, like the real file
    assert all('"' not in r for r in rows)
    for r in rows:  # anchored parse: the location is everything between ",./" and the last comma
        f = r.split(",")
        assert f[1] == "NSCLC Radiogenomics"
        head, location = r[: r.index(",./")], r[r.index(",./") + 1 : r.rindex(",")]
        assert re.fullmatch(r"\d+\.\d\d [KM]B", head.split(",")[-1])
        assert (summary.root / location).is_dir()


def test_low_level_writers(tmp_path):
    vol = np.full((6, 16, 16), -1000.0)
    vol[2:4, 5:9, 6:10] = 30.0
    vol[:, 0, 0] = np.nan
    mask = (vol > 0).astype(np.uint8)
    study = StudyInfo(study_uid=demo_uid("t", "study"), description="CT THORAX")
    ct = write_ct_series(
        tmp_path / "ct", vol, patient_id="R01-999", study=study, series_uid=demo_uid("t", "ct"),
        spacing=(2.5, 0.7, 0.7), origin=(-5.6, -5.6, -100.0), description="THORAX 1.0 B45f", series_number=3,
        feet_first=True, signed=False, padding_value=None, file_names="legacy",
    )  # fmt: skip
    assert [d.InstanceNumber for d in ct] == [6, 5, 4, 3, 2, 1]
    assert [float(d.ImagePositionPatient[2]) for d in ct] == [-100.0, -97.5, -95.0, -92.5, -90.0, -87.5]
    assert sorted(p.name for p in (tmp_path / "ct").iterdir()) == [f"{i:06d}.dcm" for i in range(6)]
    top = pydicom.dcmread(tmp_path / "ct" / "000000.dcm")
    assert float(top.ImagePositionPatient[2]) == -87.5 and top.PixelRepresentation == 0
    assert float(top.RescaleIntercept) == -1024 and "PixelPaddingValue" not in top
    hu = top.pixel_array * float(top.RescaleSlope) + float(top.RescaleIntercept)
    assert hu[1, 1] == -1000 and hu[0, 0] == -1024
    for kind in ("slicer", "epad", "highdicom"):
        path = write_seg(tmp_path / f"{kind}.dcm", kind, mask, list(reversed(ct)))
        seg = pydicom.dcmread(path)
        np.testing.assert_array_equal(_seg_to_mask(seg, sorted(ct, key=lambda d: d.InstanceNumber)[::-1]), mask)
    path = write_seg(tmp_path / "short.dcm", "slicer", mask, ct, number_of_frames=3)
    seg = pydicom.dcmread(path)
    assert seg.NumberOfFrames == 3 and len(seg.PerFrameFunctionalGroupsSequence) == 6
    with pytest.warns(UserWarning):
        assert seg.pixel_array.shape == (6, 16, 16)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    again = write_seg(tmp_path / "again.dcm", "slicer", mask, ct, number_of_frames=3)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == digest


def test_minimal_and_custom_shape(tmp_path):
    s = generate_demo_dataset(tmp_path, patients=1, extras=False, ct_shape=(12, 48, 48), n_genes=50)
    assert s.gan_cohort and not (s.no_rna or s.no_seg or s.rna_only or s.ct_only)
    assert s.ct_shape == (12, 48, 48) and s.spacing == (round(128 / 12, 6), round(358.4 / 48, 6), round(358.4 / 48, 6))
    masks = np.load(s.masks_file)
    assert masks[s.gan_cohort[0]].shape == (12, 48, 48) and masks[s.gan_cohort[0]].any()


def test_old_module_path_reexports_the_public_api():
    import rggan.data.demo as old
    import rggan.demo as new

    assert set(old.__all__) == set(new.__all__)
    for name in new.__all__:
        assert getattr(old, name) is getattr(new, name), name
