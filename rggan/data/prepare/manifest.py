"""Change detection of the prepare step: fingerprints of the inputs and the manifest of a finished run.

Prepare once, train many times: a re-run whose inputs and settings match the manifest touches nothing, and a
patient whose files changed gets a new fingerprint and is prepared again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rggan.io import atomic_write_json

__all__ = [
    "MANIFEST_VERSION",
    "sha",
    "tree_signature",
    "files_signature",
    "read_json",
    "manifest_matches",
    "write_manifest",
]

MANIFEST_VERSION = 1


def sha(text: str) -> str:
    """SHA-256 hex digest of a text (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stat_entry(path: Path, root: Path) -> str:
    st = path.stat()
    return f"{path.relative_to(root)}\t{st.st_size}\t{st.st_mtime_ns}"


def tree_signature(root: Path) -> str:
    """Hash of every file's relative path, size and modification time under ``root``.

    Args:
        root: the folder to walk.

    Returns:
        SHA-256 hex digest.
    """
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            entries.append(_stat_entry(Path(dirpath) / name, root))
    return sha("\n".join(entries))


def files_signature(files: Iterable[Path], root: Path) -> str:
    """Hash of some files' paths relative to ``root``, sizes and modification times.

    Args:
        files: the files (in any order).
        root: the folder the paths are relative to.

    Returns:
        SHA-256 hex digest.
    """
    return sha("\n".join(sorted(_stat_entry(Path(p), root) for p in files)))


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def manifest_matches(output_dir: Path, config_fingerprint: str, tree: str, rna_sig: str) -> bool:
    """True when the last finished run had the same settings and inputs and all its files are still there.

    Args:
        output_dir: the prepared dataset folder.
        config_fingerprint: :meth:`PrepareConfig.fingerprint` of this run.
        tree: :func:`tree_signature` of the input folder.
        rna_sig: :func:`files_signature` of the RNA table.

    Returns:
        Whether the run can be a no-op.
    """
    manifest = read_json(output_dir / "manifest.json") or {}
    return (
        manifest.get("version") == MANIFEST_VERSION
        and manifest.get("config") == config_fingerprint
        and manifest.get("tree") == tree
        and manifest.get("rna") == rna_sig
        and all((output_dir / rel).is_file() for rel in manifest.get("files", []))
    )


def write_manifest(output_dir: Path, config_fingerprint: str, tree: str, rna_sig: str, files: list[str]) -> None:
    """Write ``manifest.json``, last of a run: the next run with the same inputs and settings is a no-op.

    Args:
        output_dir: the prepared dataset folder.
        config_fingerprint: :meth:`PrepareConfig.fingerprint` of this run.
        tree: :func:`tree_signature` of the input folder.
        rna_sig: :func:`files_signature` of the RNA table.
        files: the files the run wrote, relative to ``output_dir``.
    """
    atomic_write_json(
        output_dir / "manifest.json",
        {"version": MANIFEST_VERSION, "config": config_fingerprint, "tree": tree, "rna": rna_sig, "files": files},
    )
