"""The prepare step: an NBIA download + GEO RNA table → a prepared training dataset.

Per patient (spec §2.3): the axial slice with the largest tumour area; a square crop of side
``2 * max(w, h)`` of the mask's bounding box, centred on the box; ``num_bases`` nodule-free lung
patches of the same size from the same or neighbouring slices; everything resized to
``image_size`` and normalised to [-1, 1]. The gene transform is fitted on the training patients
only. The folder layout is documented in ``docs/architecture.md``.

Prepare once, train many times: a re-run with unchanged inputs and settings is a no-op, a patient
whose files changed is prepared again, and every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import zlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rggan import __version__
from rggan.data import dicom
from rggan.data.rna import GeneTransform, GeneTransformConfig, read_rna_table
from rggan.errors import InputError, NoUsableDataError, OutputError, PatientDataError
from rggan.intensity import DEFAULT_HU_RANGE, hu_to_unit, unit_to_hu
from rggan.io import atomic_save_npy, atomic_write_json, atomic_write_text

__all__ = [
    "PrepareConfig", "PatientRecord", "PrepareResult", "prepare_dataset", "find_rna_file", "hu_to_unit", "unit_to_hu",
]

logger = logging.getLogger(__name__)

RNA_PATTERNS = ("GSE103584*RNAseq*.txt.gz", "GSE103584*RNAseq*.txt")
MANIFEST_VERSION = 1
PARALLEL_MIN_SLICES = 2000


@dataclass
class PrepareConfig:
    """Settings of the prepare step; every field enters the output fingerprint.

    Args:
        image_size: side of the saved crops and patches in pixels (power of two for the networks).
        num_bases: background patches per patient.
        seed: seed of the train/validation split and of the patch positions.
        val_fraction: fraction of included patients held out for validation (patient level).
        hu_min: lower HU clip; maps to -1.
        hu_max: upper HU clip; maps to +1.
        lung_hu: HU threshold below which a pixel inside the body counts as lung.
        min_lung_fraction: minimal fraction of lung pixels in a background patch (halved when no patch
            qualifies, e.g. for a small lung): the patches should look like the parenchyma around a nodule.
        base_slice_radius: background patches come from slices within this many slices of the nodule slice.
        crop_mm: crop side in mm (a fixed field of view, so nodule size stays visible in pixels); None: the
            original research code's ``2 * max(w, h)`` of the tumour's bounding box, which scales every
            nodule to about the same size in pixels.
        genes: gene preprocessing (see :class:`rggan.data.rna.GeneTransformConfig`).
        permute_rna: negative control. A seed: the expression profiles are shuffled among the included
            patients (each patient gets another patient's whole RNA column), which breaks every true
            gene-image link while keeping the genes' joint distribution; None (default): no shuffling.
    """

    image_size: int = 128
    num_bases: int = 10
    seed: int = 12345
    val_fraction: float = 0.2
    hu_min: float = DEFAULT_HU_RANGE[0]
    hu_max: float = DEFAULT_HU_RANGE[1]
    lung_hu: float = -400.0
    min_lung_fraction: float = 0.9
    base_slice_radius: int = 2
    crop_mm: float | None = None
    genes: GeneTransformConfig = field(default_factory=GeneTransformConfig)
    permute_rna: int | None = None

    def image_fingerprint(self) -> str:
        """Hash of the settings that change the per-patient image files."""
        d = dataclasses.asdict(self)
        for key in ("genes", "val_fraction", "permute_rna"):
            d.pop(key)
        return _sha(json.dumps(d, sort_keys=True))

    def fingerprint(self) -> str:
        """Hash of every setting."""
        return _sha(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))


@dataclass
class PatientRecord:
    """What happened to one patient.

    Args:
        patient: PatientID.
        status: ``"included"`` or ``"excluded"``.
        reason: why a patient was excluded ('' when included).
        split: ``"training"`` / ``"validation"`` for included patients.
        details: facts about the sample (CT series, slice, crop, nodule area, ...).
    """

    patient: str
    status: str
    reason: str = ""
    split: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrepareResult:
    """Summary of a prepare run.

    Args:
        output_dir: the prepared dataset folder.
        datalist: path of ``datalist.json``.
        report: path of ``report.json`` (``report.txt`` beside it).
        patients: one record per patient seen in the imaging or the RNA table.
        skipped_files: ``(path, reason)`` of files that were not usable DICOM.
        prepared: patients whose images were (re)computed in this run.
        reused: patients whose images were up to date.
        no_op: True when nothing had changed and nothing was written.
        seconds: wall time.
    """

    output_dir: Path
    datalist: Path
    report: Path
    patients: list[PatientRecord]
    skipped_files: list[tuple[str, str]]
    prepared: list[str]
    reused: list[str]
    no_op: bool
    seconds: float

    @property
    def included(self) -> list[str]:
        """IDs of the included patients."""
        return [r.patient for r in self.patients if r.status == "included"]

    @property
    def excluded(self) -> dict[str, str]:
        """Excluded patient ID -> reason."""
        return {r.patient: r.reason for r in self.patients if r.status == "excluded"}




def find_rna_file(input_dir: Path) -> Path:
    """Find ``GSE103584_R01_NSCLC_RNAseq.txt.gz`` (or the unpacked ``.txt``) under ``input_dir``.

    Raises:
        InputError: none found, or several.
    """
    found = sorted({p for pattern in RNA_PATTERNS for p in input_dir.rglob(pattern) if p.is_file()})
    if not found:
        raise InputError(
            f"No RNA-seq table under {input_dir}: expected GSE103584_R01_NSCLC_RNAseq.txt.gz (from GEO "
            "series GSE103584) in the input folder, or pass its path explicitly (--rna)."
        )
    if len(found) > 1:
        names = ", ".join(str(p) for p in found)
        raise InputError(f"Several RNA-seq tables under {input_dir} ({names}): keep one or pass --rna.")
    return found[0]


# ----------------------------------------------------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stat_entry(path: Path, root: Path) -> str:
    st = path.stat()
    return f"{path.relative_to(root)}\t{st.st_size}\t{st.st_mtime_ns}"


def _tree_signature(root: Path) -> str:
    """Hash of every file's relative path, size and modification time under ``root``."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            entries.append(_stat_entry(Path(dirpath) / name, root))
    return _sha("\n".join(entries))


def _files_signature(files: Iterable[Path], root: Path) -> str:
    return _sha("\n".join(sorted(_stat_entry(Path(p), root) for p in files)))


# ----------------------------------------------------------------------------------------------------------------------
# Per-patient work (runs in worker processes)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    patient: str
    seg: dicom.SeriesInfo
    ct: dicom.SeriesInfo
    out_dir: Path
    fingerprint: str
    config: PrepareConfig
    unusable: list[dicom.FileProblem] = field(default_factory=list)


SAMPLE_FILES = ("image.npy", "mask.npy", "bases.npy")


def nodule_crop_box(mask2d: np.ndarray, side: int | None = None) -> tuple[int, int, int, int]:
    """Square crop around a 2-D mask, centred on its bounding box.

    Args:
        mask2d: the tumour mask of one slice.
        side: crop side in pixels; default ``2 * max(w, h)`` of the bounding box (the original research
            code's rule). A given side is enlarged when the nodule would not fit.

    The square is shifted to lie inside the image and clipped only when the image is smaller than the side.

    Returns:
        ``(y0, x0, y1, x1)`` with exclusive ends.
    """
    ys, xs = np.nonzero(mask2d)
    y_lo, y_hi, x_lo, x_hi = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    extent = int(max(y_hi - y_lo, x_hi - x_lo))
    side = 2 * extent if side is None else max(int(side), extent + 2)
    rows, cols = mask2d.shape

    def place(lo: int, hi: int, n: int) -> tuple[int, int]:
        start = (lo + hi) // 2 - side // 2
        start = max(0, min(start, n - side))
        return start, min(n, start + side)

    y0, y1 = place(y_lo, y_hi, rows)
    x0, x1 = place(x_lo, x_hi, cols)
    return int(y0), int(x0), int(y1), int(x1)


def _box_sums(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sum of ``a`` over every ``h × w`` window; entry ``[y, x]`` is the window with top-left ``(y, x)``."""
    c = np.pad(a.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def lung_mask(hu: np.ndarray, threshold: float = -400.0) -> np.ndarray:
    """Air inside the body on one axial slice: air components not connected to the image corners.

    The outside air reaches the corners of an axial chest CT; the lungs do not, even when the field of
    view cuts the body's sides.

    Args:
        hu: ``(rows, cols)`` HU.
        threshold: HU at or below which a pixel is air.

    Returns:
        Boolean mask of the lungs (and other internal air).
    """
    from scipy import ndimage

    labels, _ = ndimage.label(hu <= threshold)
    outside = {labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]} - {0}
    return (labels > 0) & ~np.isin(labels, list(outside))


def find_background_patches(
    hu: np.ndarray, mask: np.ndarray, slices: list[int], h: int, w: int, k: int, config: PrepareConfig, rng
) -> list[tuple[int, int, int]]:
    """Pick ``k`` nodule-free lung patches of ``h × w`` pixels.

    Args:
        hu: ``(n, rows, cols)`` HU of the candidate slices.
        mask: ``(n, rows, cols)`` tumour mask of the same slices.
        slices: the CT slice index of each of the ``n`` slices.
        h: patch height.
        w: patch width.
        k: number of patches.
        config: thresholds.
        rng: numpy Generator.

    Returns:
        ``(slice index, y0, x0)`` per patch; patches may repeat when fewer than ``k`` positions exist.

    Raises:
        ValueError: no position satisfies the constraints.
    """
    candidates = []
    for fraction in (config.min_lung_fraction, config.min_lung_fraction / 2):
        for i, z in enumerate(slices):
            lung = lung_mask(hu[i], config.lung_hu)
            ok = (_box_sums(mask[i], h, w) == 0) & (_box_sums(lung, h, w) >= fraction * h * w)
            ys, xs = np.nonzero(ok)
            candidates += [(z, int(y), int(x)) for y, x in zip(ys, xs)]
        if candidates:
            break
    if not candidates:
        raise ValueError(f"no nodule-free lung patch of {h}x{w} px on slices {slices}")
    pick = rng.choice(len(candidates), size=k, replace=len(candidates) < k)
    return [candidates[i] for i in sorted(pick)]


def _resize(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize ``(C, H, W)`` to ``(C, size, size)``: area interpolation when shrinking, bilinear when enlarging.

    ``mode`` is ``"auto"`` (that rule) or a ``torch.nn.functional.interpolate`` mode.
    """
    import torch
    import torch.nn.functional as F

    if mode == "auto":
        mode = "area" if max(array.shape[1:]) > size else "bilinear"
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs)[0].numpy()


def _extract_patient(job: _Job) -> dict[str, Any]:
    """Read one patient's DICOM and cut the nodule crop and the background patches (worker side).

    Only the headers, the SEG and the few CT slices used are read. No torch/MONAI here, so worker
    processes start fast.

    Returns:
        ``image`` (h, w) HU, ``mask`` (h, w) 0/1, ``bases`` (K, h, w) HU and ``details`` for the report.

    Raises:
        PatientDataError: any problem of this patient's data.
    """
    cfg = job.config
    cover = [pos for seg_file in job.seg.files for pos in dicom.seg_frame_positions(seg_file)] if job.unusable else []
    geometry = dicom.read_ct_geometry(job.ct, unusable=job.unusable, cover=cover)
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    for seg_file in job.seg.files:
        mask |= dicom.read_seg_mask(seg_file, geometry)
    areas = mask.reshape(mask.shape[0], -1).sum(1)
    z = int(np.argmax(areas))
    side = None if cfg.crop_mm is None else int(round(cfg.crop_mm / min(geometry.pixel_spacing)))
    y0, x0, y1, x1 = nodule_crop_box(mask[z], side)
    h, w = y1 - y0, x1 - x0
    r = cfg.base_slice_radius
    slices = [z] + [s for d in range(1, r + 1) for s in (z - d, z + d) if 0 <= s < geometry.shape[0]]
    for s in slices:  # a damaged file elsewhere in the series is harmless; on these slices it is not
        if s in geometry.missing:
            role = "the nodule slice" if s == z else f"background slice {s} (within {r} slices of the nodule slice {z})"
            raise PatientDataError(
                job.patient, f"{role} has no usable CT file: {geometry.missing[s]}", job.ct.folder
            )
    hu = dicom.read_ct_slices(geometry, slices)
    rng = np.random.default_rng([cfg.seed, zlib.crc32(job.patient.encode())])
    try:
        patches = find_background_patches(hu, mask[slices], slices, h, w, cfg.num_bases, cfg, rng)
    except ValueError as err:
        raise PatientDataError(job.patient, f"cannot extract background patches: {err}", job.ct.folder) from err
    bases = np.stack([hu[slices.index(s), py : py + h, px : px + w] for s, py, px in patches])
    details = {
        "ct_series": job.ct.series_uid,
        "ct_description": job.ct.description,
        "seg_series": job.seg.series_uid,
        "slice_index": z,
        "tumour_slices": int((areas > 0).sum()),
        "nodule_area_px": int(areas[z]),
        "crop_box": [y0, x0, y1, x1],
        "spacing": [geometry.pixel_spacing[0] * h / cfg.image_size, geometry.pixel_spacing[1] * w / cfg.image_size],
        "base_patches": [list(p) for p in patches],
    }
    if geometry.missing or geometry.set_aside:  # kept: none of them is on a slice used here
        details["unusable_slices"] = {str(k): why for k, why in sorted(geometry.missing.items())}
        details["set_aside_files"] = [f"{path.name}: {why}" for path, why in geometry.set_aside]
    return {"image": hu[0, y0:y1, x0:x1], "mask": mask[z, y0:y1, x0:x1], "bases": bases, "details": details}


def _write_patient(job: _Job, crops: dict[str, Any]) -> dict[str, Any]:
    """Resize, normalise and atomically write one patient's arrays; the fingerprint file goes last."""
    cfg, out = job.config, job.out_dir
    image = _resize(crops["image"][None], cfg.image_size, "auto")
    mask = _resize(crops["mask"][None].astype(np.float32), cfg.image_size, "bilinear") >= 0.5
    bases = _resize(crops["bases"], cfg.image_size, "auto")
    atomic_save_npy(out / "image.npy", hu_to_unit(image, (cfg.hu_min, cfg.hu_max)))
    atomic_save_npy(out / "mask.npy", np.where(mask, 1.0, -1.0).astype(np.float32))
    atomic_save_npy(out / "bases.npy", hu_to_unit(bases, (cfg.hu_min, cfg.hu_max)))
    # Written last: a patient interrupted half-way is prepared again next time.
    atomic_write_json(out / "fingerprint.json", {"fingerprint": job.fingerprint, "details": crops["details"]})
    return crops["details"]


def _run_job(job: _Job) -> tuple[_Job, dict[str, Any] | None, str]:
    """Worker entry point: never raises for a patient's data problem."""
    try:
        return job, _extract_patient(job), ""
    except PatientDataError as err:
        return job, None, err.reason + (f" ({err.path})" if err.path else "")
    except Exception as err:  # noqa: BLE001 - a bug on one patient must not stop the batch; it is reported
        logger.exception("unexpected error while preparing %s", job.patient)
        return job, None, f"unexpected error: {type(err).__name__}: {err}"


# ----------------------------------------------------------------------------------------------------------------------
# The batch job
# ----------------------------------------------------------------------------------------------------------------------


def _attribute_problems(index: dicom.DicomIndex) -> dict[str, list[dicom.FileProblem]]:
    """Patient -> the unusable files of that patient (those whose patient can be told).

    A file whose header named its series belongs to that series' patient; any other file belongs to the patient
    of the nearest enclosing folder that holds the series of exactly one patient (its series or study folder in
    both NBIA layouts). Files above the patient folders (``metadata.csv``, the collection's LICENSE) belong to
    nobody; they stay in the report's list of skipped files.
    """
    owners: dict[Path, set[str]] = {}
    for series in index.series.values():
        folder = series.folder
        for parent in (folder, *folder.parents):
            owners.setdefault(parent, set()).add(series.patient_id)
            if parent == index.root:
                break
    out: dict[str, list[dicom.FileProblem]] = {}
    for problem in index.problems:
        patient = None
        if problem.series_uid in index.series:
            patient = index.series[problem.series_uid].patient_id
        else:
            for parent in problem.path.parents:
                found = owners.get(parent)
                if found is not None or parent == index.root:
                    patient = next(iter(found)) if found is not None and len(found) == 1 else None
                    break
        if patient is not None:
            out.setdefault(patient, []).append(problem)
    return out


def _describe(problem: dicom.FileProblem, root: Path) -> str:
    """``relative/path (kind: reason)`` of an unusable file, for the report."""
    try:
        where = problem.path.relative_to(root)
    except ValueError:
        where = problem.path
    return f"{where} ({problem.kind}: {problem.reason})"


def _check_paths(input_dir: Path, output_dir: Path) -> tuple[Path, Path]:
    input_dir, output_dir = Path(input_dir).expanduser().resolve(), Path(output_dir).expanduser().resolve()
    if not input_dir.is_dir():
        raise InputError(
            f"Input folder {input_dir} does not exist or is not a folder: point --input at the folder holding "
            "the NBIA download ('NSCLC Radiogenomics/...') and GSE103584_R01_NSCLC_RNAseq.txt.gz."
        )
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise OutputError(
            f"Output folder {output_dir} is inside the input folder {input_dir}; rggan never writes into the "
            "input. Choose an output folder outside it."
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"Output path {output_dir} exists and is not a folder.")
    return input_dir, output_dir


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def prepare_dataset(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    config: PrepareConfig | None = None,
    rna_path: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Turn a TCIA/GEO download into a prepared dataset folder.

    Args:
        input_dir: folder holding the NBIA download (either layout) and the RNA table.
        output_dir: prepared dataset folder (created; must not lie inside ``input_dir``).
        config: settings; defaults to :class:`PrepareConfig`.
        rna_path: the RNA table; default: searched under ``input_dir``.
        workers: worker processes for the per-patient work; default: number of CPUs.
        progress: show progress bars.

    Returns:
        A :class:`PrepareResult`.

    Raises:
        InputError: unusable input folder or RNA table.
        OutputError: unsafe or unwritable output folder.
        NoUsableDataError: every patient was excluded.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    config = config or PrepareConfig()
    input_dir, output_dir = _check_paths(Path(input_dir), Path(output_dir))
    rna_file = Path(rna_path).expanduser().resolve() if rna_path else find_rna_file(input_dir)
    if not rna_file.is_file():
        raise InputError(f"RNA-seq table {rna_file} does not exist.")

    # Warm path: nothing changed since the last successful run -> touch nothing.
    manifest_path = output_dir / "manifest.json"
    manifest = _read_json(manifest_path) or {}
    tree = _tree_signature(input_dir)
    rna_sig = _files_signature([rna_file], rna_file.parent)
    report_path = output_dir / "report.json"
    if (
        manifest.get("version") == MANIFEST_VERSION
        and manifest.get("config") == config.fingerprint()
        and manifest.get("tree") == tree
        and manifest.get("rna") == rna_sig
        and all((output_dir / rel).is_file() for rel in manifest.get("files", []))
    ):
        report = _read_json(report_path) or {}
        records = [PatientRecord(**r) for r in report.get("patients", [])]
        skipped = [(s["path"], s["reason"]) for s in report.get("skipped_files", [])]
        return PrepareResult(
            output_dir, output_dir / "datalist.json", report_path, records, skipped, [], [], True,
            time.perf_counter() - start,
        )  # fmt: skip

    index = dicom.index_dicom_tree(input_dir)
    if not index.series:
        raise InputError(
            f"No DICOM series found under {input_dir} ({len(index.problems)} other files): point --input at the "
            "folder holding the NBIA download of NSCLC-Radiogenomics."
        )
    rna = read_rna_table(rna_file)
    rna_patients = set(rna.expression.index)
    duplicate_rna = set(rna.duplicate_patients)
    imaging = index.patients

    records: dict[str, PatientRecord] = {}
    jobs: list[_Job] = []
    unusable_of = _attribute_problems(index)
    for patient in sorted(set(imaging) | rna_patients | duplicate_rna):
        reason = ""
        segs = dicom.find_patient_segs(index, patient)
        if patient in duplicate_rna:
            reason = f"the RNA table {rna_file.name} has several columns for this patient; keep one"
        elif patient not in imaging:
            reason = "in the RNA table but no DICOM files in the download"
        elif not segs:
            reason = "no DICOM SEG (tumour mask) in the download"
        elif len(segs) > 1:
            uids = ", ".join(s.series_uid for s in segs)
            reason = f"{len(segs)} SEG series ({uids}): ambiguous which tumour mask to use; keep one"
        elif patient not in rna_patients:
            reason = f"no RNA-seq column in {rna_file.name}"
        if reason:
            records[patient] = PatientRecord(patient, "excluded", reason)
            continue
        try:
            ct = dicom.resolve_referenced_ct(index, segs[0])
        except PatientDataError as err:
            records[patient] = PatientRecord(patient, "excluded", err.reason)
            continue
        # Unusable files that may be slices of this CT: those in its folder not known to belong to another series.
        unusable = [
            p for p in unusable_of.get(patient, [])
            if p.path.parent == ct.folder and p.series_uid in ("", ct.series_uid)
        ]  # fmt: skip
        files = ct.files + segs[0].files + [p.path for p in unusable]  # a repaired file prepares the patient again
        fingerprint = _sha("\n".join([config.image_fingerprint(), _files_signature(files, input_dir)]))
        jobs.append(_Job(patient, segs[0], ct, output_dir / "samples" / patient, fingerprint, config, unusable))

    todo, reused = [], []
    for job in jobs:
        done = _read_json(job.out_dir / "fingerprint.json")
        complete = all((job.out_dir / f).is_file() for f in SAMPLE_FILES)
        if done and done.get("fingerprint") == job.fingerprint and complete:
            records[job.patient] = PatientRecord(job.patient, "included", details=done["details"])
            reused.append(job.patient)
        else:
            todo.append(job)

    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    # disable=None: no bar when stderr is not a terminal (a log file would fill with carriage returns)
    bar = tqdm(total=len(todo), desc="prepare", unit="patient", disable=None if progress and todo else True)

    def finish(job: _Job, crops: dict[str, Any] | None, reason: str) -> None:
        if crops is not None:
            records[job.patient] = PatientRecord(job.patient, "included", details=_write_patient(job, crops))
        else:
            records[job.patient] = PatientRecord(job.patient, "excluded", reason)
        bar.update()

    # Worker start-up (~1-2 s) only pays off for real-size CTs.
    if n_workers == 1 or sum(job.ct.n_files for job in todo) < PARALLEL_MIN_SLICES:
        for job in todo:
            finish(*_run_job(job))
    else:
        with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_run_job, job) for job in todo]):
                finish(*fut.result())
    bar.close()
    for patient, problems in unusable_of.items():
        if patient in records:  # every unusable file of a patient is named in its record, kept or not
            records[patient].details["unusable_files"] = [_describe(p, input_dir) for p in problems]

    included = sorted(p for p, r in records.items() if r.status == "included")
    if not included:
        _write_report(output_dir, input_dir, rna_file, records, index, rna.notes, time.perf_counter() - start)
        raise NoUsableDataError(
            f"No usable patient in {input_dir}: every patient was excluded (see {report_path}). A patient needs "
            "a CT series, a DICOM SEG and an RNA-seq column."
        )

    # Patient-level split fixed by the seed, then the gene transform fitted on training patients only.
    order = np.random.default_rng(config.seed).permutation(len(included))
    n_val = int(round(config.val_fraction * len(included)))
    if config.val_fraction > 0 and len(included) >= 2:
        n_val = min(max(n_val, 1), len(included) - 1)
    validation = {included[i] for i in order[:n_val]}
    for p in included:
        records[p].split = "validation" if p in validation else "training"
    train = [p for p in included if p not in validation]
    expression = rna.expression
    if config.permute_rna is not None:  # negative control: every patient gets another patient's profile
        donors = np.random.default_rng(config.permute_rna).permutation(included)
        shuffled = expression.loc[list(donors)].set_axis(included, axis=0)
        expression = pd.concat([shuffled, expression.drop(index=included)])
        logger.warning("RNA profiles shuffled among %d patients (permute_rna=%d): a negative control.",
                       len(included), config.permute_rna)
    transform = GeneTransform.fit(expression, train, config.genes)
    vectors = transform.transform(expression.loc[included])
    for p, vec in zip(included, vectors):
        atomic_save_npy(output_dir / "samples" / p / "rna.npy", vec.astype(np.float32))
    transform.save(output_dir / "gene_transform.json")

    def entry(p: str) -> dict[str, Any]:
        d = records[p].details
        rel = f"samples/{p}"
        return {
            "patient": p, "image": f"{rel}/image.npy", "mask": f"{rel}/mask.npy", "bases": f"{rel}/bases.npy",
            "rna": f"{rel}/rna.npy", "spacing": d["spacing"], "slice_index": d["slice_index"],
            "crop_box": d["crop_box"],
        }  # fmt: skip

    datalist = {
        "rggan_version": __version__,
        "image_size": config.image_size,
        "num_genes": transform.num_genes,
        "num_bases": config.num_bases,
        "seed": config.seed,
        "permute_rna": config.permute_rna,
        "hu_range": [config.hu_min, config.hu_max],
        "gene_transform": "gene_transform.json",
        "training": [entry(p) for p in train],
        "validation": [entry(p) for p in included if p in validation],
    }
    atomic_write_json(output_dir / "datalist.json", datalist)
    seconds = time.perf_counter() - start
    _write_report(output_dir, input_dir, rna_file, records, index, rna.notes, seconds)
    files = ["datalist.json", "gene_transform.json", "report.json"] + [
        f"samples/{p}/{f}" for p in included for f in (*SAMPLE_FILES, "rna.npy")
    ]
    atomic_write_json(
        manifest_path,
        {"version": MANIFEST_VERSION, "config": config.fingerprint(), "tree": tree, "rna": rna_sig, "files": files},
    )
    skipped = [(str(p.path), p.reason) for p in index.problems]
    return PrepareResult(
        output_dir, output_dir / "datalist.json", report_path, [records[p] for p in sorted(records)], skipped,
        sorted(j.patient for j in todo), sorted(reused), False, seconds,
    )  # fmt: skip


def _write_report(
    output_dir: Path,
    input_dir: Path,
    rna_file: Path,
    records: dict[str, PatientRecord],
    index: dicom.DicomIndex,
    rna_notes: list[str],
    seconds: float,
) -> None:
    """Write ``report.json`` and the readable ``report.txt``."""
    patients = [records[p] for p in sorted(records)]
    included = [r for r in patients if r.status == "included"]
    excluded = [r for r in patients if r.status == "excluded"]
    skipped = [{"path": str(p.path), "kind": p.kind, "reason": p.reason} for p in index.problems]
    report = {
        "rggan_version": __version__,
        "input": str(input_dir),
        "rna_file": str(rna_file),
        "seconds": round(seconds, 3),
        "counts": {
            "patients": len(patients),
            "included": len(included),
            "training": sum(r.split == "training" for r in included),
            "validation": sum(r.split == "validation" for r in included),
            "excluded": len(excluded),
            "skipped_files": len(skipped),
        },
        "patients": [dataclasses.asdict(r) for r in patients],
        "skipped_files": skipped,
        "rna_notes": list(rna_notes),
    }
    atomic_write_json(output_dir / "report.json", report)
    c = report["counts"]
    def unusable_lines(r: PatientRecord) -> list[str]:
        files = r.details.get("unusable_files", [])
        if not files:
            return []
        if r.status == "included":
            head = (
                f"    kept although {len(files)} of its files are unusable: none of them is the nodule slice or a "
                f"background slice ({len(r.details.get('unusable_slices', {}))} CT slice(s) missing elsewhere)"
            )
        else:
            head = f"    {len(files)} unusable file(s) of this patient:"
        return [head, *(f"      {f}" for f in files)]

    lines = [
        f"rggan prepare report ({__version__})",
        f"input:    {input_dir}",
        f"rna:      {rna_file}",
        f"patients: {c['patients']} seen, {c['included']} included ({c['training']} training, "
        f"{c['validation']} validation), {c['excluded']} excluded; {c['skipped_files']} files skipped",
        "",
        "Included:",
        *(
            line
            for r in included
            for line in [
                f"  {r.patient:<10} {r.split:<10} slice {r.details.get('slice_index')}, "
                f"nodule {r.details.get('nodule_area_px')} px, CT '{r.details.get('ct_description', '')}'",
                *unusable_lines(r),
            ]
        ),
        "",
        "Excluded:",
        *(line for r in excluded for line in [f"  {r.patient:<10} {r.reason}", *unusable_lines(r)]),
    ]
    if skipped:
        lines += ["", "Skipped files:", *(f"  {s['path']}: {s['reason']}" for s in skipped)]
    if rna_notes:
        lines += ["", "RNA table notes:", *(f"  {n}" for n in rna_notes)]
    atomic_write_text(output_dir / "report.txt", "\n".join(lines) + "\n")
