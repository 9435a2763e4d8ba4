"""The prepare step end to end: an NBIA download + GEO RNA table -> a prepared training dataset folder."""

from __future__ import annotations

import time
from pathlib import Path

from rggan.data import dicom
from rggan.data.prepare.config import PrepareConfig
from rggan.data.prepare.genes import write_gene_vectors
from rggan.data.prepare.manifest import (
    files_signature,
    manifest_matches,
    read_json,
    tree_signature,
    write_manifest,
)
from rggan.data.prepare.report import write_report
from rggan.data.prepare.result import PatientRecord, PrepareResult
from rggan.data.prepare.run import run_jobs
from rggan.data.prepare.samples import SAMPLE_FILES
from rggan.data.prepare.selection import attribute_problems, note_unusable_files, plan_jobs, split_reused
from rggan.data.prepare.split import split_patients, write_datalist
from rggan.data.rna import read_rna_table
from rggan.errors import InputError, NoUsableDataError, OutputError

__all__ = ["RNA_PATTERNS", "find_rna_file", "check_paths", "prepare_dataset"]

RNA_PATTERNS = ("GSE103584*RNAseq*.txt.gz", "GSE103584*RNAseq*.txt")


def find_rna_file(input_dir: Path) -> Path:
    """Find ``GSE103584_R01_NSCLC_RNAseq.txt.gz`` (or the unpacked ``.txt``) under ``input_dir``.

    Args:
        input_dir: the input folder, searched recursively.

    Returns:
        The RNA table.

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


def check_paths(input_dir: Path, output_dir: Path) -> tuple[Path, Path]:
    """Resolve the input and output folders and refuse an unsafe pair.

    Args:
        input_dir: the input folder.
        output_dir: the prepared dataset folder.

    Returns:
        Both, absolute.

    Raises:
        InputError: the input is not a folder.
        OutputError: the output lies inside the input, or is a file.
    """
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


def _unchanged(output_dir: Path, start: float) -> PrepareResult:
    """The result of a run that found nothing changed: read back from the last report, nothing written."""
    report_path = output_dir / "report.json"
    report = read_json(report_path) or {}
    records = [PatientRecord(**r) for r in report.get("patients", [])]
    skipped = [(s["path"], s["reason"]) for s in report.get("skipped_files", [])]
    return PrepareResult(
        output_dir, output_dir / "datalist.json", report_path, records, skipped, [], [], True,
        time.perf_counter() - start,
    )  # fmt: skip


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
    start = time.perf_counter()
    config = config or PrepareConfig()
    input_dir, output_dir = check_paths(Path(input_dir), Path(output_dir))
    rna_file = Path(rna_path).expanduser().resolve() if rna_path else find_rna_file(input_dir)
    if not rna_file.is_file():
        raise InputError(f"RNA-seq table {rna_file} does not exist.")
    # Warm path: nothing changed since the last successful run -> touch nothing.
    tree, rna_sig = tree_signature(input_dir), files_signature([rna_file], rna_file.parent)
    if manifest_matches(output_dir, config.fingerprint(), tree, rna_sig):
        return _unchanged(output_dir, start)

    index = dicom.index_dicom_tree(input_dir)
    if not index.series:
        raise InputError(
            f"No DICOM series found under {input_dir} ({len(index.problems)} other files): point --input at the "
            "folder holding the NBIA download of NSCLC-Radiogenomics."
        )
    rna = read_rna_table(rna_file)
    unusable_of = attribute_problems(index)
    records, jobs = plan_jobs(index, rna, rna_file, input_dir, output_dir, config, unusable_of)
    todo, reused = split_reused(jobs, records)
    run_jobs(todo, records, workers, progress)
    note_unusable_files(records, unusable_of, input_dir)
    included = sorted(p for p, r in records.items() if r.status == "included")
    if not included:
        write_report(output_dir, input_dir, rna_file, records, index, rna.notes, time.perf_counter() - start)
        raise NoUsableDataError(
            f"No usable patient in {input_dir}: every patient was excluded (see {output_dir / 'report.json'}). A "
            "patient needs a CT series, a DICOM SEG and an RNA-seq column."
        )

    # Patient-level split fixed by the seed, then the gene transform fitted on training patients only.
    validation = split_patients(included, config)
    for p in included:
        records[p].split = "validation" if p in validation else "training"
    train = [p for p in included if p not in validation]
    transform = write_gene_vectors(rna.expression, included, train, config, output_dir)
    write_datalist(output_dir, records, included, validation, transform.num_genes, config)
    seconds = time.perf_counter() - start
    write_report(output_dir, input_dir, rna_file, records, index, rna.notes, seconds)
    files = ["datalist.json", "gene_transform.json", "report.json"] + [
        f"samples/{p}/{f}" for p in included for f in (*SAMPLE_FILES, "rna.npy")
    ]
    write_manifest(output_dir, config.fingerprint(), tree, rna_sig, files)
    skipped = [(str(p.path), p.reason) for p in index.problems]
    return PrepareResult(
        output_dir, output_dir / "datalist.json", output_dir / "report.json", [records[p] for p in sorted(records)],
        skipped, sorted(j.patient for j in todo), sorted(reused), False, seconds,
    )  # fmt: skip
