"""Run the per-patient jobs of the prepare step: in this process, or in worker processes for real-size CTs."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

from rggan.data.prepare.extract import PatientJob, run_job
from rggan.data.prepare.result import PatientRecord

# A module attribute of this module, so that a test can make the write fail half-way through a run.
from rggan.data.prepare.samples import write_patient as _write_patient

__all__ = ["PARALLEL_MIN_SLICES", "run_jobs"]

#: below this many CT files in all, the jobs run in this process: worker start-up (~1-2 s) only pays off for
#: real-size CTs
PARALLEL_MIN_SLICES = 2000


def run_jobs(
    todo: list[PatientJob], records: dict[str, PatientRecord], workers: int | None = None, progress: bool = True
) -> None:
    """Extract and write every patient of ``todo``; record each one as included or excluded.

    Args:
        todo: the patients to (re)compute.
        records: patient -> record, filled in here.
        workers: worker processes; default: number of CPUs.
        progress: show a progress bar (only when stderr is a terminal).
    """
    from tqdm.auto import tqdm

    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    # disable=None: no bar when stderr is not a terminal (a log file would fill with carriage returns)
    bar = tqdm(total=len(todo), desc="prepare", unit="patient", disable=None if progress and todo else True)

    def finish(job: PatientJob, crops: dict[str, Any] | None, reason: str) -> None:
        if crops is not None:
            records[job.patient] = PatientRecord(job.patient, "included", details=_write_patient(job, crops))
        else:
            records[job.patient] = PatientRecord(job.patient, "excluded", reason)
        bar.update()

    if n_workers == 1 or sum(job.ct.n_files for job in todo) < PARALLEL_MIN_SLICES:
        for job in todo:
            finish(*run_job(job))
    else:
        with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(run_job, job) for job in todo]):
                finish(*fut.result())
    bar.close()
