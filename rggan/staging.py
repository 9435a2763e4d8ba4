"""All-or-nothing output folders: write into a hidden staging folder, then move it into place.

Inference, evaluation, the radiogenomic map and export write their files into a staging folder made
by :func:`make_staging` beside the destination (same file system, so moves are renames) and call
:func:`commit_staging` only when everything was written (:func:`staged_output` does both around a
``with`` block); a failed run removes the staging folder, so an error never leaves partial outputs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rggan.errors import OutputError
from rggan.io import dir_mode

__all__ = ["make_staging", "commit_staging", "staged_output"]


def make_staging(output_dir: str | os.PathLike) -> Path:
    """A new hidden staging folder beside ``output_dir`` (same file system, so moves are renames).

    Args:
        output_dir: the destination folder (need not exist).

    Returns:
        The staging folder, named ``.<output_dir name>.staging-*``, with the umask's folder mode.

    Raises:
        OutputError: the parent folder cannot be written.
    """
    output_dir = Path(output_dir)
    parent = output_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.staging-", dir=parent))
        staging.chmod(dir_mode())  # mkdtemp makes it private; it becomes output_dir when that is new
        return staging
    except OSError as exc:
        raise OutputError(f"cannot write into {parent}: {exc}") from exc


def commit_staging(staging: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Move everything in ``staging`` into ``output_dir`` (a rename of the folder if it is new or empty).

    Files already in ``output_dir`` are replaced by the staged files of the same name; others are kept.

    Args:
        staging: the folder made by :func:`make_staging`.
        output_dir: the destination folder.

    Raises:
        OutputError: a move failed (the staging folder is removed).
    """
    staging, output_dir = Path(staging), Path(output_dir)
    try:
        if not output_dir.exists() or (output_dir.is_dir() and not any(output_dir.iterdir())):
            if output_dir.exists():
                output_dir.rmdir()
            os.replace(staging, output_dir)
            return
        for src in sorted(staging.rglob("*")):
            if src.is_file():
                dst = output_dir / src.relative_to(staging)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"cannot move the outputs into {output_dir}: {exc}") from exc


@contextmanager
def staged_output(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Context manager: a staging folder for ``output_dir``, committed when the block succeeds.

    Args:
        output_dir: the destination folder.

    Returns:
        An iterator yielding the staging folder; on an exception in the block the folder is removed
        and the exception propagates, otherwise :func:`commit_staging` moves it into ``output_dir``.
    """
    staging = make_staging(output_dir)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit_staging(staging, output_dir)
