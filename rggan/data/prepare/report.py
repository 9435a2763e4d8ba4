"""The report of a prepare run: ``report.json`` and the readable ``report.txt`` (every exclusion and its reason)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rggan import __version__
from rggan.data import dicom
from rggan.data.prepare.result import PatientRecord
from rggan.io import atomic_write_json, atomic_write_text

__all__ = ["write_report"]


def write_report(
    output_dir: Path,
    input_dir: Path,
    rna_file: Path,
    records: dict[str, PatientRecord],
    index: dicom.DicomIndex,
    rna_notes: list[str],
    seconds: float,
) -> None:
    """Write ``report.json`` and the readable ``report.txt``.

    Args:
        output_dir: the prepared dataset folder.
        input_dir: the input folder.
        rna_file: the RNA table.
        records: patient -> record.
        index: the download index (its problems are the skipped files).
        rna_notes: what the RNA table reader repaired.
        seconds: wall time of the run.
    """
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
    lines = _text_lines(report["counts"], input_dir, rna_file, included, excluded, skipped, rna_notes)
    atomic_write_text(output_dir / "report.txt", "\n".join(lines) + "\n")


def _unusable_lines(r: PatientRecord) -> list[str]:
    """The report lines naming a patient's unusable files ([] when it has none)."""
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


def _text_lines(
    c: dict[str, Any],
    input_dir: Path,
    rna_file: Path,
    included: list[PatientRecord],
    excluded: list[PatientRecord],
    skipped: list[dict[str, str]],
    rna_notes: list[str],
) -> list[str]:
    """The lines of ``report.txt``.

    Args:
        c: the report's counts.
        input_dir: the input folder.
        rna_file: the RNA table.
        included: records of the included patients, sorted.
        excluded: records of the excluded patients, sorted.
        skipped: the skipped files (``path``, ``kind``, ``reason``).
        rna_notes: what the RNA table reader repaired.

    Returns:
        The lines, without line ends.
    """
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
                *_unusable_lines(r),
            ]
        ),
        "",
        "Excluded:",
        *(line for r in excluded for line in [f"  {r.patient:<10} {r.reason}", *_unusable_lines(r)]),
    ]
    if skipped:
        lines += ["", "Skipped files:", *(f"  {s['path']}: {s['reason']}" for s in skipped)]
    if rna_notes:
        lines += ["", "RNA table notes:", *(f"  {n}" for n in rna_notes)]
    return lines
