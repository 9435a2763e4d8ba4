"""Where the MONAI bundle lives and where a run writes by default.

The bundle (``configs/``, ``docs/``, ``schema/``, ``LICENSE``) ships inside the installed package as
``rggan/bundle`` (package data of the wheel); in the source tree it is the top-level ``bundle/`` folder. A copy
of the bundle anywhere else works too: run from inside it, or pass ``--bundle_root``. A run never writes into
the bundle by default: its outputs go to ``./ModelOut`` of the working directory, or beside the bundle when
the working directory lies inside it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["bundle_root", "default_output_dir", "default_data_dir"]

_MARKER = Path("configs") / "train.yaml"


def _candidates() -> list[Path]:
    package = Path(__file__).resolve().parent
    return [package / "bundle", package.parent / "bundle"]  # installed wheel, then the source tree


def bundle_root(cwd: str | os.PathLike | None = None) -> str:
    """The bundle folder: the working directory when it is a bundle (a relocated copy), else the packaged one.

    Args:
        cwd: the working directory (default: :func:`os.getcwd`).

    Returns:
        The absolute path of the folder holding ``configs/train.yaml``.

    Raises:
        FileNotFoundError: no bundle found; the message says where it was looked for.
    """
    here = Path(cwd or os.getcwd()).resolve()
    candidates = [here, *_candidates()]
    for folder in candidates:
        if (folder / _MARKER).is_file():
            return str(folder)
    raise FileNotFoundError(
        "No MONAI bundle (configs/train.yaml) in " + ", ".join(str(c) for c in candidates)
        + ": reinstall rggan (the wheel ships the bundle), run from inside a copy of the bundle or pass --bundle_root."
    )


def _outside(root: str | os.PathLike, name: str, cwd: str | os.PathLike | None) -> str:
    root_path = Path(root).resolve()
    here = Path(cwd or os.getcwd()).resolve()
    inside = here == root_path or root_path in here.parents
    return str((root_path.parent if inside else here) / name)


def default_output_dir(root: str | os.PathLike, cwd: str | os.PathLike | None = None) -> str:
    """``ModelOut`` in the working directory, or beside the bundle when the working directory lies inside it.

    Args:
        root: the bundle folder (``bundle_root``).
        cwd: the working directory (default: :func:`os.getcwd`).

    Returns:
        An absolute path that is never inside ``root``.
    """
    return _outside(root, "ModelOut", cwd)


def default_data_dir(root: str | os.PathLike, cwd: str | os.PathLike | None = None) -> str:
    """``data`` in the working directory, or beside the bundle when the working directory lies inside it.

    Args:
        root: the bundle folder (``bundle_root``).
        cwd: the working directory (default: :func:`os.getcwd`).

    Returns:
        An absolute path.
    """
    return _outside(root, "data", cwd)
