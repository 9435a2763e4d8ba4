"""The prepare step on real DICOM written by the demo generator: contents, idempotence, bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from rggan.cli import main as cli_main
from rggan.data import dicom
from rggan.data.demo import write_seg
from rggan.data.prepare import PrepareConfig, nodule_crop_box, prepare_dataset
from rggan.errors import InputError, OutputError
from tests.conftest import tree_snapshot

SMALL = PrepareConfig(image_size=32, num_bases=4)


def _truth(summary) -> dict:
    return json.loads(Path(summary.truth_file).read_text())


# ----------------------------------------------------------------------------------------------------------------------
# Contents on the default demo data
# ----------------------------------------------------------------------------------------------------------------------


def test_demo_cohort_included_and_distractors_excluded(prepared_demo, demo_download):
    result = prepared_demo
    assert sorted(result.included) == sorted(demo_download.gan_cohort)
    excluded = result.excluded
    for p in demo_download.no_rna:
        assert "no RNA-seq column" in excluded[p]
    for p in demo_download.no_seg + demo_download.ct_only:
        assert "no DICOM SEG" in excluded[p]
    for p in demo_download.rna_only:
        assert "no DICOM files" in excluded[p]
    report_txt = (result.output_dir / "report.txt").read_text()
    for p, reason in excluded.items():
        assert f"{p}" in report_txt and reason in report_txt
    report = json.loads(result.report.read_text())
    assert report["counts"]["included"] == len(demo_download.gan_cohort)
    assert report["counts"]["excluded"] == len(excluded)


def test_demo_samples_match_ground_truth(prepared_demo, demo_download):
    root = prepared_demo.output_dir
    datalist = json.loads((root / "datalist.json").read_text())
    truth = _truth(demo_download)
    masks = np.load(demo_download.masks_file)
    entries = datalist["training"] + datalist["validation"]
    assert len(entries) == len(demo_download.gan_cohort)
    assert {e["patient"] for e in datalist["training"]}.isdisjoint(e["patient"] for e in datalist["validation"])
    s = datalist["image_size"]
    rna = []
    for e in entries:
        p = e["patient"]
        image, mask, bases = (np.load(root / e[k]) for k in ("image", "mask", "bases"))
        assert image.shape == mask.shape == (1, s, s) and bases.shape == (10, s, s)
        assert image.dtype == np.float32 and -1 <= image.min() and image.max() <= 1
        assert -1 <= bases.min() and bases.max() <= 1
        assert set(np.unique(mask)) == {-1.0, 1.0}
        # The nodule slice is the truth's largest-area slice; the crop holds the whole nodule, centred.
        m = masks[p]
        z = e["slice_index"]
        assert m[z].sum() == m.reshape(m.shape[0], -1).sum(1).max()
        y0, x0, y1, x1 = e["crop_box"]
        assert m[z, y0:y1, x0:x1].sum() == m[z].sum()
        fg = np.argwhere(mask[0] > 0)
        assert len(fg) > 0
        centre = (fg.min(0) + fg.max(0)) / 2
        assert np.all(np.abs(centre - (s - 1) / 2) <= 0.1 * s), (p, centre)
        # Background patches lie where the truth mask is empty.
        details = next(r.details for r in prepared_demo.patients if r.patient == p)
        h, w = y1 - y0, x1 - x0
        for zz, py, px in details["base_patches"]:
            assert m[zz, py : py + h, px : px + w].sum() == 0
        # Crop spacing: physical side preserved.
        assert np.allclose(np.asarray(e["spacing"]) * s, np.asarray(truth["spacing_zyx_mm"][1:]) * (h, w))
        rna.append(np.load(root / e["rna"]))
    genes = json.loads((root / "gene_transform.json").read_text())["genes"]
    assert np.stack(rna).shape == (len(entries), len(genes)) == (len(entries), datalist["num_genes"])


def test_crop_box_is_square_of_twice_the_box_and_stays_inside():
    m = np.zeros((64, 64), np.uint8)
    m[10:16, 20:24] = 1  # h 6, w 4 -> side 12
    assert nodule_crop_box(m) == (7, 16, 19, 28)
    m[:] = 0
    m[0:4, 60:64] = 1  # at the corner: shifted inside, still square
    y0, x0, y1, x1 = nodule_crop_box(m)
    assert (y1 - y0, x1 - x0) == (8, 8) and y0 == 0 and x1 == 64


# ----------------------------------------------------------------------------------------------------------------------
# Idempotence, atomicity, input protection
# ----------------------------------------------------------------------------------------------------------------------


def test_rerun_is_noop_and_only_changed_patient_is_prepared_again(small_copy, tmp_path):
    download, summary = small_copy
    out = tmp_path / "prepared"
    first = prepare_dataset(download, out, config=SMALL, workers=1, progress=False)
    assert not first.no_op and sorted(first.prepared) == sorted(first.included)
    before = tree_snapshot(out)
    second = prepare_dataset(download, out, config=SMALL, workers=1, progress=False)
    assert second.no_op and tree_snapshot(out) == before
    assert second.included == first.included

    # Rewrite one patient's SEG (same content, new file): only that patient is prepared again.
    patient = first.included[0]
    seg = dicom.find_patient_segs(dicom.index_dicom_tree(download), patient)[0].files[0]
    data = seg.read_bytes()
    seg.unlink()
    seg.write_bytes(data)
    images = {p: np.load(out / f"samples/{p}/image.npy") for p in first.included}
    third = prepare_dataset(download, out, config=SMALL, workers=1, progress=False)
    assert not third.no_op
    assert third.prepared == [patient]
    assert sorted(third.reused) == sorted(set(first.included) - {patient})
    for p in first.included:  # same inputs, same arrays (the re-prepared patient included)
        assert np.array_equal(np.load(out / f"samples/{p}/image.npy"), images[p])

    # A changed setting re-prepares everything.
    fourth = prepare_dataset(download, out, config=PrepareConfig(image_size=32, num_bases=3), workers=1, progress=False)
    assert sorted(fourth.prepared) == sorted(first.included)
    assert np.load(out / f"samples/{patient}/bases.npy").shape[0] == 3


def test_interrupted_run_leaves_no_partial_file_and_resumes(small_copy, tmp_path, monkeypatch):
    import rggan.data.prepare.run as prep

    download, _ = small_copy
    out = tmp_path / "prepared"
    real_write = prep._write_patient
    calls = []

    def interrupt_on_third(job, crops):
        calls.append(job.patient)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(job, crops)

    monkeypatch.setattr(prep, "_write_patient", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(download, out, config=SMALL, workers=1, progress=False)
    assert not list(out.rglob("*.tmp")) and not (out / "datalist.json").exists()
    monkeypatch.setattr(prep, "_write_patient", real_write)
    result = prepare_dataset(download, out, config=SMALL, workers=1, progress=False)
    assert sorted(result.reused) == sorted(calls[:2])
    assert len(result.included) == 4


def test_worker_processes_write_the_same_files_as_one_process(small_download, tmp_path, monkeypatch):
    """The parallel path (spawned workers import the per-patient work by module path) gives identical files."""
    import rggan.data.prepare.run as run

    serial = prepare_dataset(small_download.output, tmp_path / "serial", config=SMALL, workers=1, progress=False)
    monkeypatch.setattr(run, "PARALLEL_MIN_SLICES", 0)  # the demo CTs are far below the real-size threshold
    parallel = prepare_dataset(small_download.output, tmp_path / "parallel", config=SMALL, workers=2, progress=False)
    assert parallel.included == serial.included and len(serial.included) == 4
    names = sorted(
        str(f.relative_to(serial.output_dir))
        for f in serial.output_dir.rglob("*")
        if f.suffix == ".npy" or f.name in ("datalist.json", "gene_transform.json", "fingerprint.json", "report.txt")
    )
    assert len(names) == 4 * 5 + 3
    for name in names:
        assert (parallel.output_dir / name).read_bytes() == (serial.output_dir / name).read_bytes(), name


def test_input_is_never_written_and_output_inside_input_is_refused(small_copy, tmp_path):
    download, _ = small_copy
    before = tree_snapshot(download)
    prepare_dataset(download, tmp_path / "prepared", config=SMALL, workers=1, progress=False)
    assert tree_snapshot(download) == before
    with pytest.raises(OutputError, match="inside the input"):
        prepare_dataset(download, download / "prepared", config=SMALL, progress=False)
    assert cli_main(["prepare", "--input", str(download), "--output", str(download / "x"), "--quiet"]) == 5
    assert tree_snapshot(download) == before


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: per-patient problems are excluded with a reason, global problems stop with one clear error
# ----------------------------------------------------------------------------------------------------------------------


def _ct_of(download: Path, patient: str) -> dicom.CTGeometry:
    index = dicom.index_dicom_tree(download)
    return dicom.read_ct_geometry(dicom.resolve_referenced_ct(index, dicom.find_patient_segs(index, patient)[0]))


def _run(download: Path, tmp_path: Path):
    return prepare_dataset(download, tmp_path / "prepared", config=SMALL, workers=1, progress=False)


def test_truncated_and_foreign_files(small_copy, tmp_path):
    download, summary = small_copy
    victim = summary.gan_cohort[0]
    masks = np.load(summary.masks_file)
    z = int(np.argmax(masks[victim].reshape(masks[victim].shape[0], -1).sum(1)))
    ct_file = _ct_of(download, victim).files[z]
    ct_file.write_bytes(ct_file.read_bytes()[: ct_file.stat().st_size // 2])  # pixel data cut short
    other = _ct_of(download, summary.gan_cohort[1]).files[0].parent
    (other / "notes.txt").write_text("not DICOM")
    (other / "1-999.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\2\0")  # header cut short

    result = _run(download, tmp_path)
    assert victim in result.excluded and ct_file.name in result.excluded[victim]
    assert sorted(result.included) == sorted(summary.gan_cohort[1:])
    skipped = {Path(p).name for p, _ in result.skipped_files}
    assert {"notes.txt", "1-999.dcm"} <= skipped


def test_seg_whose_ct_is_missing(small_copy, tmp_path):
    download, summary = small_copy
    victim = summary.gan_cohort[1]
    shutil.rmtree(_ct_of(download, victim).files[0].parent)
    result = _run(download, tmp_path)
    assert "CT" in result.excluded[victim]
    assert len(result.included) == len(summary.gan_cohort) - 1


def _ct_headers(geometry: dicom.CTGeometry) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in geometry.files]


def test_empty_seg_and_two_segs(small_copy, tmp_path):
    download, summary = small_copy
    empty, double = summary.gan_cohort[0], summary.gan_cohort[2]
    index = dicom.index_dicom_tree(download)
    seg = dicom.find_patient_segs(index, empty)[0]
    geometry = _ct_of(download, empty)
    zeros = np.zeros(geometry.shape, np.uint8)
    write_seg(seg.files[0], "slicer", zeros, _ct_headers(geometry), series_uid=seg.series_uid)
    geometry = _ct_of(download, double)
    second = geometry.files[0].parent.parent / "1001.000000-second SEG-00001" / "1-1.dcm"
    write_seg(
        second, "epad", np.load(summary.masks_file)[double], _ct_headers(geometry), series_uid="1.2.3.4.5.6.7.1",
        sop_uid="1.2.3.4.5.6.7.2",
    )

    result = _run(download, tmp_path)
    assert "no foreground" in result.excluded[empty]
    assert "2 SEG series" in result.excluded[double]
    assert len(result.included) == len(summary.gan_cohort) - 2


def test_ct_with_a_missing_slice_has_inconsistent_spacing(small_copy, tmp_path):
    download, summary = small_copy
    victim = summary.gan_cohort[3]
    files = _ct_of(download, victim).files
    files[len(files) // 4].unlink()
    result = _run(download, tmp_path)
    assert "spacing" in result.excluded[victim].lower()


def _rewrite_rna(path: Path, edit) -> None:
    table = pd.read_csv(path, sep="\t", index_col=0, na_values=["NA"], dtype=str, keep_default_na=False)
    table = edit(table)
    with gzip.open(path, "wt") as f:
        table.to_csv(f, sep="\t")


def test_rna_duplicate_patient_and_gene(small_copy, tmp_path):
    download, summary = small_copy
    victim = summary.gan_cohort[0]

    def edit(t: pd.DataFrame) -> pd.DataFrame:
        t = pd.concat([t, t[[victim]]], axis=1)  # the patient's column twice
        return pd.concat([t, t.iloc[[5]]])  # one gene twice

    _rewrite_rna(download / summary.rna_file.name, edit)
    result = _run(download, tmp_path)
    assert "several columns" in result.excluded[victim]
    report = json.loads(result.report.read_text())
    assert any("duplicate gene" in n for n in report["rna_notes"])


def test_global_input_errors_exit_codes(small_copy, tmp_path, capsys):
    download, summary = small_copy
    out = str(tmp_path / "o")
    assert cli_main(["prepare", "--input", str(tmp_path / "nope"), "--output", out, "--quiet"]) == 3
    assert "does not exist" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(download / summary.rna_file.name, empty)
    assert cli_main(["prepare", "--input", str(empty), "--output", out, "--quiet"]) == 3
    assert "No DICOM series" in capsys.readouterr().err

    rna = download / summary.rna_file.name
    rna.write_bytes(rna.read_bytes()[: rna.stat().st_size // 2])
    with pytest.raises(InputError, match=rna.name):
        _run(download, tmp_path)
    assert cli_main(["prepare", "--input", str(download), "--output", out, "--quiet"]) == 3

    rna.unlink()
    assert cli_main(["prepare", "--input", str(download), "--output", out, "--quiet"]) == 3
    assert "GSE103584" in capsys.readouterr().err


def test_no_usable_patient_exit_code(small_copy, tmp_path):
    download, summary = small_copy
    for p in summary.gan_cohort:
        for seg in dicom.find_patient_segs(dicom.index_dicom_tree(download), p):
            seg.files[0].unlink()
    assert cli_main(["prepare", "--input", str(download), "--output", str(tmp_path / "o"), "--quiet"]) == 4
    assert (tmp_path / "o" / "report.txt").is_file()


def test_fixed_field_of_view_crop_keeps_nodule_size_in_pixels(small_copy, tmp_path):
    download, summary = small_copy
    config = PrepareConfig(image_size=32, num_bases=4, crop_mm=80.0)
    result = prepare_dataset(download, tmp_path / "prepared", config=config, workers=1, progress=False)
    truth = _truth(summary)
    pixel = truth["spacing_zyx_mm"][1]
    side = round(80.0 / pixel)
    areas = []
    for r in result.patients:
        if r.status != "included":
            continue
        y0, x0, y1, x1 = r.details["crop_box"]
        assert (y1 - y0, x1 - x0) == (side, side)
        assert np.allclose(r.details["spacing"], [pixel * side / 32] * 2)
        mask = np.load(tmp_path / "prepared" / f"samples/{r.patient}/mask.npy")
        areas.append(((mask > 0).sum(), truth["patients"][r.patient]["measured"]["max_area"]))
    # with a fixed field of view the nodule's area in the crop follows its real area
    pixels, real = np.array(areas, float).T
    assert np.corrcoef(pixels, real)[0, 1] > 0.9


def test_permute_rna_shuffles_whole_profiles_among_patients(small_download, tmp_path):
    """The negative control: every patient gets another patient's whole expression profile."""
    import json

    from rggan.data.prepare import PrepareConfig, prepare_dataset

    def vectors(folder):
        dl = json.loads((folder / "datalist.json").read_text())
        items = dl["training"] + dl["validation"]
        return dl, {it["patient"]: np.load(folder / it["rna"]) for it in items}

    plain = prepare_dataset(small_download.output, tmp_path / "plain", config=PrepareConfig(image_size=32),
                            workers=1, progress=False)  # fmt: skip
    config = PrepareConfig(image_size=32, permute_rna=3)
    shuffled = prepare_dataset(small_download.output, tmp_path / "perm", config=config, workers=1, progress=False)
    dl_a, a = vectors(plain.output_dir)
    dl_b, b = vectors(shuffled.output_dir)
    assert dl_a["permute_rna"] is None and dl_b["permute_rna"] == 3
    assert sorted(a) == sorted(b)
    moved = [p for p in a if not np.array_equal(a[p], b[p])]
    assert len(moved) >= 2
    # each shuffled profile is one patient's raw profile through the (refitted) transform, and not its own
    from rggan.data.prepare import find_rna_file
    from rggan.data.rna import GeneTransform, read_rna_table

    raw = read_rna_table(find_rna_file(small_download.output)).expression
    transform = GeneTransform.load(shuffled.output_dir / "gene_transform.json")
    donors = {
        p: [q for q in a if np.allclose(transform.transform(raw.loc[[q]])[0], v, atol=1e-5)] for p, v in b.items()
    }
    assert all(len(d) == 1 for d in donors.values())
    assert sorted(d[0] for d in donors.values()) == sorted(a)
    assert sum(donors[p][0] != p for p in b) == len(moved)
    # images are untouched
    for p in a:
        assert np.array_equal(np.load(plain.output_dir / "samples" / p / "image.npy"),
                              np.load(shuffled.output_dir / "samples" / p / "image.npy"))  # fmt: skip


def test_margin_slices_store_the_margin_averaged_over_the_tumour_slices(small_download, tmp_path):
    """``margin_slices``: each patient's margin irregularity measured on the tumour's slices near the nodule
    slice, as the evaluation measures the nodule crop; the crops and the earlier fingerprints do not change."""
    import dataclasses

    import torch

    from rggan.data.prepare.manifest import sha
    from rggan.data.prepare.samples import margin_irregularity
    from rggan.features import nodule_features

    plain_cfg = PrepareConfig(image_size=32, num_bases=2, crop_mm=80.0)
    legacy = {k: v for k, v in dataclasses.asdict(plain_cfg).items() if k not in ("margin_slices", "margin_mm")}
    assert plain_cfg.fingerprint() == sha(json.dumps(legacy, sort_keys=True, default=str))  # folders stay valid
    ms_cfg = dataclasses.replace(plain_cfg, margin_slices=2)
    assert ms_cfg.fingerprint() != plain_cfg.fingerprint()
    assert ms_cfg.image_fingerprint() != plain_cfg.image_fingerprint()
    with pytest.raises(ValueError, match="margin_slices"):
        PrepareConfig(margin_slices=-1)

    plain = prepare_dataset(small_download.output, tmp_path / "plain", config=plain_cfg, workers=1, progress=False)
    ms = prepare_dataset(small_download.output, tmp_path / "ms", config=ms_cfg, workers=1, progress=False)
    dl_plain = json.loads(plain.datalist.read_text())
    dl = json.loads(ms.datalist.read_text())
    assert dl_plain["margin_slices"] == 0 and dl["margin_slices"] == 2
    assert not any("margin" in it for it in dl_plain["training"] + dl_plain["validation"])
    truth = _truth(small_download)["patients"]
    records = {r.patient: r for r in ms.patients}
    index = dicom.index_dicom_tree(small_download.output)
    moved = []
    items = dl["training"] + dl["validation"]
    assert len(items) >= 3
    for item in items:
        p, d = item["patient"], records[item["patient"]].details
        for key in ("image", "mask", "bases"):  # the crops are those of a plain prepare
            assert np.array_equal(np.load(tmp_path / "plain" / item[key]), np.load(tmp_path / "ms" / item[key]))
        z = d["slice_index"]
        lo, hi = truth[p]["measured"]["slices"]  # the tumour's slices in the CT
        expected = [s for s in range(z - 2, z + 3) if lo <= s <= hi]
        used = d["margin_slices"]
        assert used[0] == z and set(used) <= set(expected) and len(used) >= min(2, len(expected)), (p, used, expected)
        # the nodule slice alone, measured from the DICOM again, is the evaluation's reading of the saved crop
        ct, seg = index.series[d["ct_series"]], index.series[d["seg_series"]]
        geometry = dicom.read_ct_geometry(ct)
        y0, x0, y1, x1 = d["crop_box"]
        seg_mask = dicom.read_seg_mask(seg.files[0], geometry)[:, y0:y1, x0:x1]
        hu = dicom.read_ct_slices(geometry, used)[:, y0:y1, x0:x1]
        per_slice = margin_irregularity(hu, seg_mask[used], ms_cfg, d["spacing"])
        img = torch.from_numpy(np.load(tmp_path / "ms" / item["image"]))[None]
        msk = torch.from_numpy(np.load(tmp_path / "ms" / item["mask"]))[None]
        saved = nodule_features(img, msk, torch.tensor([d["spacing"]]))["irregularity"].item()
        assert per_slice[0] == pytest.approx(saved, abs=1e-6)
        assert item["margin"] == pytest.approx(float(np.mean(per_slice)), abs=1e-9)
        moved.append(abs(item["margin"] - saved))
    assert max(moved) > 1e-3  # the other slices' outlines differ: the average is not the nodule slice's value


def test_margin_mm_converts_to_each_series_slices(small_download, tmp_path, capsys):
    """``margin_mm``: the margin target's depth in mm becomes the nearest whole number of the CT's slices
    (the demo CT has 4 mm slices), so 8 mm stores what ``margin_slices=2`` does and 1 mm the nodule slice alone."""
    import dataclasses

    import torch

    from rggan.features import nodule_features

    base = PrepareConfig(image_size=32, num_bases=1, crop_mm=80.0)
    assert base.margin_radius(4.0) == 0 and not base.measures_margin
    assert PrepareConfig(margin_mm=8).margin_radius(4.0) == 2 and PrepareConfig(margin_mm=8).margin_radius(1.25) == 6
    assert PrepareConfig(margin_mm=1).margin_radius(4.0) == 0 and PrepareConfig(margin_mm=1).measures_margin
    for bad in ({"margin_mm": -1.0}, {"margin_mm": float("nan")}, {"margin_mm": 8.0, "margin_slices": 2}):
        with pytest.raises(ValueError, match="margin_mm"):
            PrepareConfig(**bad)
    out = tmp_path / "both"
    argv = ["prepare", "--input", str(small_download.output), "--output", str(out), "--margin-slices", "2"]
    assert cli_main([*argv, "--margin-mm", "8"]) == 3 and not out.exists()  # an error, no traceback, nothing written
    assert "margin_mm" in capsys.readouterr().err
    assert dataclasses.replace(base, margin_mm=8.0).fingerprint() not in (
        base.fingerprint(), dataclasses.replace(base, margin_slices=2).fingerprint()
    )  # fmt: skip

    def prepared(name: str, **kw) -> tuple[dict, dict]:
        cfg = dataclasses.replace(base, **kw)
        result = prepare_dataset(small_download.output, tmp_path / name, config=cfg, workers=1, progress=False)
        datalist = json.loads(result.datalist.read_text())
        details = {r.patient: r.details for r in result.patients}
        return {it["patient"]: it for it in datalist["training"] + datalist["validation"]}, details | {"": datalist}

    by_slices, d_slices = prepared("k2", margin_slices=2)
    by_mm, d_mm = prepared("mm8", margin_mm=8.0)
    near, d_near = prepared("mm1", margin_mm=1.0)
    assert d_mm[""]["margin_mm"] == 8.0 and d_mm[""]["margin_slices"] == 0
    assert by_mm.keys() == by_slices.keys() and len(by_mm) >= 3
    for p in by_mm:
        assert by_mm[p]["margin"] == by_slices[p]["margin"] and d_mm[p]["margin_slices"] == d_slices[p]["margin_slices"]
        assert d_near[p]["margin_slices"] == [d_near[p]["slice_index"]]  # 1 mm of a 4 mm CT: the nodule slice alone
        img = torch.from_numpy(np.load(tmp_path / "mm1" / near[p]["image"]))[None]
        msk = torch.from_numpy(np.load(tmp_path / "mm1" / near[p]["mask"]))[None]
        saved = nodule_features(img, msk, torch.tensor([near[p]["spacing"]]))["irregularity"].item()
        assert near[p]["margin"] == pytest.approx(saved, abs=1e-6)
