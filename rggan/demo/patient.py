"""One demo patient: its scanner and SEG variant, its phantom, its studies and series, and its truth entry.

A patient has a diagnostic CT study (CT, sometimes a thick reconstruction, a SEG for the R01 patients with a
segmentation) and sometimes a PET/CT study (a coronal scout and a PET series), as in the collection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from rggan.demo.ct_writer import write_ct_series
from rggan.demo.headers import StudyInfo
from rggan.demo.identifiers import CT_IMAGE_STORAGE, PET_IMAGE_STORAGE, SEGMENTATION_STORAGE, demo_uid
from rggan.demo.nbia import NbiaLayout, SeriesRecord
from rggan.demo.phantom import Phantom, pet_activity, render, sample_phantom
from rggan.demo.seg_writer import SegKind, epad_description, write_seg
from rggan.demo.truth import measure_nodule

__all__ = ["DemoContext", "PatientPlan", "plan_patient", "write_patient"]

_DIAG_STUDY_DESCRIPTIONS = (
    "CT CHEST WO CONTRAST", "CT CHEST ABD PELVIS WITH CON", "CT THORAX", "CT THORAX WDYE", "CHEST CT W/O CONTRAST",
    "CT CHEST ABDOMEN PELVIS W/WO CONTRAST WITH 3D RECONSTRUCTION",
)  # fmt: skip
_CT_DESCRIPTIONS = (
    "THORAX 1.0 B45f", "CHEST 1.25 MM", "THIN LUNG WINDOW", "Recon 2: CHEST", "1.25MM CHEST BONE PLUS",
    "Thorax  1.0  B45f", "LUNG 1.25MM W/O",
)  # fmt: skip
_PET_STUDY_DESCRIPTIONS = ("PET IMAGE W/CT, SKULL-", "PET/CT LUNG CA", "PET/CT Lung Cancer")
_PET_DESCRIPTIONS = ("PET AC", "AXIAL PET", "TORSO_3D_AC")
_MANUFACTURERS = (("GE MEDICAL SYSTEMS", "LightSpeed16"), ("SIEMENS", "Sensation 64"), ("Philips", "Brilliance 64"))
_SEG_KINDS: tuple[SegKind, ...] = ("slicer", "epad", "highdicom")
_SEG_MANUFACTURERS = {"slicer": "3D Slicer Community", "epad": "Stanford University", "highdicom": "rggan"}


@dataclass
class DemoContext:
    """What every patient of one download shares, and the running counts."""

    output: Path
    seed: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    layout: NbiaLayout
    n_files: int = 0
    pet_index: int = 0


@dataclass
class PatientPlan:
    """The variant a patient gets: category, SEG producer, slice numbering, pixel format, extra series."""

    patient: str
    category: str
    index: int  # rank among the imaging patients
    phenotypes: dict[str, float]
    seg_kind: SegKind | None
    feet_first: bool
    signed: bool
    with_pet: bool
    thick_recon: bool
    nof_mismatch: bool
    manufacturer: str
    model: str
    series: dict[str, Any] = field(default_factory=dict)  # truth entries of the written series


def plan_patient(
    patient: str, category: str, index: int, phenotypes: dict[str, float], rng: np.random.Generator
) -> PatientPlan:
    """Choose a patient's variants; they cycle with ``index`` so every variant occurs in small downloads.

    Args:
        patient: patient ID.
        category: ``gan_cohort``, ``no_rna``, ``no_seg`` or ``ct_only``.
        index: rank of the patient among the imaging patients.
        phenotypes: the nodule's phenotypes.
        rng: the patient's generator (draws the CT manufacturer of signed series).

    Returns:
        the plan.
    """
    seg_kind: SegKind | None = None
    if category == "gan_cohort":
        seg_kind = _SEG_KINDS[index % 3]
    elif category == "no_rna":
        seg_kind = "slicer"
    signed = index % 5 != 2
    manufacturer, model = _MANUFACTURERS[int(rng.integers(0, 3))] if signed else _MANUFACTURERS[2]
    return PatientPlan(
        patient=patient, category=category, index=index, phenotypes=phenotypes, seg_kind=seg_kind,
        feet_first=index % 4 == 1, signed=signed,
        with_pet=category in ("gan_cohort", "no_seg") and index % 5 in (0, 3),
        thick_recon=category == "gan_cohort" and index % 7 == 3,
        nof_mismatch=seg_kind == "epad" and index == 4, manufacturer=manufacturer, model=model,
    )  # fmt: skip


def _date_str(base: np.datetime64) -> str:
    return str(base).replace("-", "")


def _diagnostic_study(ctx: DemoContext, patient: str, rng: np.random.Generator) -> tuple[StudyInfo, np.datetime64]:
    """The diagnostic CT study (random date 1989-1996, time, description, sex) and its date."""
    d0 = np.datetime64("1989-01-01") + np.timedelta64(int(rng.integers(0, 8 * 365)), "D")
    study = StudyInfo(
        study_uid=demo_uid(ctx.seed, patient, "study", "diag"),
        date=_date_str(d0),
        time=f"{int(rng.integers(7, 18)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}",
        description=_DIAG_STUDY_DESCRIPTIONS[int(rng.integers(0, len(_DIAG_STUDY_DESCRIPTIONS)))],
        patient_birth_date="",
        patient_sex="M" if rng.random() < 0.6 else "F",
    )
    return study, d0


_Record = tuple[int, str, str, str, str, str]  # series number, description, UID, manufacturer, modality, SOP class


def _write_series(
    ctx: DemoContext, plan: PatientPlan, study: StudyInfo, record: _Record, **kw: Any
) -> tuple[list[Dataset], Path]:
    """Write an image series (:func:`write_ct_series` arguments ``kw``) into its layout folder.

    The series is recorded for ``metadata.csv`` and its files counted. Returns the headers and the folder.
    """
    number, desc, uid, manufacturer, modality, sop_class = record
    folder = ctx.layout.series_folder(plan.patient, study, number, desc, uid)
    headers = write_ct_series(
        folder, patient_id=plan.patient, study=study, series_uid=uid, description=desc, series_number=number,
        manufacturer=manufacturer, **kw,
    )  # fmt: skip
    ctx.layout.add(SeriesRecord(plan.patient, study, uid, desc, manufacturer, modality, sop_class, folder))
    ctx.n_files += len(headers)
    return headers, folder


def _write_diagnostic_ct(
    ctx: DemoContext,
    plan: PatientPlan,
    study: StudyInfo,
    hu: np.ndarray,
    origin: tuple[float, float, float],
    rng: np.random.Generator,
) -> list[Dataset]:
    """The diagnostic CT series, and a thick (2-slice average) reconstruction for some patients."""
    seed, pid = ctx.seed, plan.patient
    dz, dy, dx = ctx.spacing
    ct_uid = demo_uid(seed, pid, "series", "ct")
    ct_num = int(rng.integers(2, 6))
    ct_desc = _CT_DESCRIPTIONS[int(rng.integers(0, len(_CT_DESCRIPTIONS)))]
    scanner = dict(
        feet_first=plan.feet_first, signed=plan.signed, padding_value=-2000 if plan.signed else 0,
        frame_of_reference_uid=demo_uid(seed, pid, "for", "diag"), model=plan.model,
    )  # fmt: skip
    record = (ct_num, ct_desc, ct_uid, plan.manufacturer, "CT", CT_IMAGE_STORAGE)
    ct, folder = _write_series(ctx, plan, study, record, volume_hu=hu, spacing=ctx.spacing, origin=origin, **scanner)
    plan.series["ct"] = {
        "series_uid": ct_uid, "description": ct_desc, "series_number": ct_num,
        "folder": str(folder.relative_to(ctx.output)),
    }  # fmt: skip
    nz = hu.shape[0]
    if plan.thick_recon and nz >= 4:
        th_uid, th_desc, m2 = demo_uid(seed, pid, "series", "thick"), "CHEST 5MM", nz // 2 * 2
        thick = (hu[0:m2:2] + hu[1:m2:2]) / 2.0
        record = (ct_num + 1, th_desc, th_uid, plan.manufacturer, "CT", CT_IMAGE_STORAGE)
        _, th_folder = _write_series(
            ctx, plan, study, record, volume_hu=thick, spacing=(2 * dz, dy, dx),
            origin=(origin[0], origin[1], origin[2] + dz / 2), **scanner,
        )  # fmt: skip
        plan.series["thick_ct"] = {
            "series_uid": th_uid,
            "description": th_desc,
            "folder": str(th_folder.relative_to(ctx.output)),
        }
    return ct


def _write_seg_series(
    ctx: DemoContext, plan: PatientPlan, study: StudyInfo, mask: np.ndarray, ct: list[Dataset]
) -> None:
    """The SEG of the nodule, dated like its producer's files; one ePAD SEG under-reports NumberOfFrames."""
    kind, i, pid = plan.seg_kind, plan.index, plan.patient
    assert kind is not None
    seg_uid = demo_uid(ctx.seed, pid, "series", "seg")
    if kind == "slicer":
        cdate, ctime = _date_str(np.datetime64("2017-04-01") + np.timedelta64(i, "D")), "101500"
    elif kind == "epad":
        cdate, ctime = _date_str(np.datetime64("2016-11-01") + np.timedelta64(i % 28, "D")), f"17{i % 60:02d}00"
    else:
        cdate, ctime = "20240102", "120000"
    seg_desc = {"slicer": "3D Slicer segmentation result", "highdicom": "Segmentation"}.get(kind)
    if seg_desc is None:
        seg_desc = epad_description(cdate, ctime)
    seg_folder = ctx.layout.series_folder(pid, study, 1000, seg_desc, seg_uid)
    n_present = int(mask.any(axis=(1, 2)).sum()) if kind != "slicer" else mask.shape[0]
    nof = max(1, n_present // 2) if plan.nof_mismatch else None
    seg_path = write_seg(
        seg_folder / "1-1.dcm", kind, mask, ct, series_uid=seg_uid, number_of_frames=nof,
        creation_date=cdate, creation_time=ctime,
    )  # fmt: skip
    man = _SEG_MANUFACTURERS[kind]
    ctx.layout.add(SeriesRecord(pid, study, seg_uid, seg_desc, man, "SEG", SEGMENTATION_STORAGE, seg_folder, "YES"))
    ctx.n_files += 1
    plan.series["seg"] = {
        "series_uid": seg_uid, "kind": kind, "description": seg_desc,
        "file": str(seg_path.relative_to(ctx.output)),
        "number_of_frames_written": nof,
    }  # fmt: skip


def _write_pet_study(
    ctx: DemoContext,
    plan: PatientPlan,
    diag: tuple[StudyInfo, np.datetime64],
    volumes: tuple[np.ndarray, np.ndarray, np.ndarray],
    origin: tuple[float, float, float],
    rng: np.random.Generator,
) -> None:
    """A PET/CT study some days after the diagnostic CT: a coronal scout and a PET series of the phantom."""
    (study, d0), (hu, lung, mask), pid = diag, volumes, plan.patient
    nz = hu.shape[0]
    dz, dy, dx = ctx.spacing
    pet_date = d0 + np.timedelta64(int(rng.integers(3, 40)), "D")
    pick = 0 if ctx.pet_index == 0 else int(rng.integers(0, len(_PET_STUDY_DESCRIPTIONS)))
    pdesc = _PET_STUDY_DESCRIPTIONS[pick]
    ctx.pet_index += 1
    pet_study = StudyInfo(
        study_uid=demo_uid(ctx.seed, pid, "study", "pet"), date=_date_str(pet_date), time="083000",
        description=pdesc, patient_sex=study.patient_sex,
    )  # fmt: skip
    pet_scanner = dict(frame_of_reference_uid=demo_uid(ctx.seed, pid, "for", "pet"), model="Discovery ST")
    # scout: one coronal localizer (mean projection along y), rows run from head to feet
    sc_uid = demo_uid(ctx.seed, pid, "series", "scout")
    _write_series(
        ctx, plan, pet_study, (1, "SCOUT", sc_uid, "GE MEDICAL SYSTEMS", "CT", CT_IMAGE_STORAGE),
        volume_hu=np.nanmean(np.clip(hu, -1000, None), axis=1)[::-1][None], spacing=(1.0, dz, dx),
        origin=(origin[0], 0.0, origin[2] + (nz - 1) * dz), image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        orientation=(1, 0, 0, 0, 0, -1), **pet_scanner,
    )  # fmt: skip
    act, fz, fxy = pet_activity(hu, lung, mask, plan.phenotypes["radius_mm"], rng)
    pt_uid = demo_uid(ctx.seed, pid, "series", "pt")
    pt_desc = _PET_DESCRIPTIONS[int(rng.integers(0, len(_PET_DESCRIPTIONS)))]
    _write_series(
        ctx, plan, pet_study, (4, pt_desc, pt_uid, "GE MEDICAL SYSTEMS", "PT", PET_IMAGE_STORAGE),
        volume_hu=act, spacing=(dz * fz, dy * fxy, dx * fxy),
        origin=(origin[0] + (fxy - 1) * dx / 2, origin[1] + (fxy - 1) * dy / 2, origin[2] + (fz - 1) * dz / 2),
        modality="PT", **pet_scanner,
    )  # fmt: skip
    plan.series["pet_study"] = {"study_uid": pet_study.study_uid, "description": pdesc}
    plan.series["scout"] = {"series_uid": sc_uid}
    plan.series["pt"] = {"series_uid": pt_uid, "description": pt_desc}


def _truth_entry(
    ctx: DemoContext, plan: PatientPlan, study: StudyInfo, phantom: Phantom, measured: dict[str, Any]
) -> dict[str, Any]:
    """The patient's entry of ``demo_truth.json``."""
    _, dy, dx = ctx.spacing
    nod, origin = phantom.nodule, phantom.origin
    return {
        "category": plan.category,
        "has_rna": plan.category in ("gan_cohort", "no_seg"),
        "has_seg": plan.seg_kind is not None,
        "seg_kind": plan.seg_kind,
        "feet_first": plan.feet_first,
        "signed": plan.signed,
        "manufacturer": plan.manufacturer,
        "study_uid": study.study_uid,
        "study_description": study.description,
        "series": plan.series,
        "phenotypes": {k: round(v, 6) for k, v in plan.phenotypes.items()},
        "nodule": {
            "side": nod.side,
            "center_mm": [round(float(v), 4) for v in nod.center],
            "center_index_zyx": [
                round(phantom.centre_slice, 4),
                round((float(nod.center[1]) - origin[1]) / dy, 4),
                round((float(nod.center[0]) - origin[0]) / dx, 4),
            ],
        },
        "measured": measured,
        "geometry": {"origin": list(origin), "spacing_zyx": list(ctx.spacing), "shape_zyx": list(ctx.shape)},
    }


def write_patient(ctx: DemoContext, plan: PatientPlan, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Render a patient's phantom and write all its series.

    Args:
        ctx: the download being written (its file and PET counts are updated).
        plan: the patient's variants (its ``series`` entries are filled in).
        rng: the patient's generator.

    Returns:
        ``(nodule mask, truth entry)``.
    """
    phantom = sample_phantom(rng, plan.phenotypes, ctx.shape, ctx.spacing)
    hu, lung, mask = render(ctx.shape, ctx.spacing, phantom.origin, phantom.anatomy, phantom.nodule, rng, True)
    if not mask.any():  # pragma: no cover - guarded by the placement in sample_phantom
        raise RuntimeError(f"demo: empty nodule mask for {plan.patient}")
    diag = _diagnostic_study(ctx, plan.patient, rng)
    ct = _write_diagnostic_ct(ctx, plan, diag[0], hu, phantom.origin, rng)
    if plan.seg_kind is not None:
        _write_seg_series(ctx, plan, diag[0], mask, ct)
    if plan.with_pet:
        _write_pet_study(ctx, plan, diag, (hu, lung, mask), phantom.origin, rng)
    measured = measure_nodule(hu, lung, mask, ctx.spacing)
    return mask, _truth_entry(ctx, plan, diag[0], phantom, measured)
