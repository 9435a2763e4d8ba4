"""The prepared dataset folder's ``datalist.json``: reading it, and preparing a raw download on demand.

The prepared folder (written by ``rggan prepare``, format in ``docs/architecture.md``) holds one
``samples/<patient>/{image,mask,bases,rna}.npy`` set per patient and a ``datalist.json``. Nothing here imports
torch, MONAI or the DICOM readers (the prepare step is imported only when a raw download must be prepared).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from rggan.errors import InputError, NoUsableDataError

__all__ = [
    "DATALIST_NAME",
    "ARRAY_KEYS",
    "load_datalist",
    "read_datalist_info",
    "sample_datalist",
    "ensure_prepared",
]

DATALIST_NAME = "datalist.json"
#: datalist keys that hold a path to an ``.npy`` file (relative to the prepared folder)
ARRAY_KEYS = ("image", "mask", "bases", "rna")


def _read_datalist_json(prepared_dir: str | os.PathLike) -> dict:
    """The whole ``datalist.json`` of a prepared folder, or a :class:`NoUsableDataError` that says what to run."""
    folder = Path(prepared_dir)
    path = folder / DATALIST_NAME
    if not path.is_file():
        raise NoUsableDataError(
            f"{folder} is not a prepared dataset folder: {DATALIST_NAME} is missing. "
            f"Run `rggan prepare --input <raw download> --output {folder}` first."
        )
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise NoUsableDataError(f"cannot read {path}: {e}. Re-run `rggan prepare` into {folder}.") from e


def read_datalist_info(prepared_dir: str | os.PathLike) -> dict:
    """The top-level fields of ``datalist.json`` (``image_size``, ``num_genes``, ``num_bases``, ``seed``, ...).

    Raises:
        NoUsableDataError: the folder has no readable ``datalist.json``.
    """
    content = _read_datalist_json(prepared_dir)
    return {k: v for k, v in content.items() if not isinstance(v, list)}


def load_datalist(prepared_dir: str | os.PathLike, split: str = "training", *, required: bool = True) -> list[dict]:
    """Read one split of a prepared folder's ``datalist.json``, with absolute ``.npy`` paths.

    Args:
        prepared_dir: the prepared dataset folder (output of ``rggan prepare``).
        split: ``"training"`` or ``"validation"``.
        required: if True, an empty split is an error; otherwise an empty list is returned.

    Returns:
        one dict per sample; the keys in :data:`ARRAY_KEYS` are absolute paths.

    Raises:
        NoUsableDataError: ``datalist.json`` is missing or unreadable, or (``required``) the split is empty.
    """
    folder = Path(prepared_dir).resolve()
    content = _read_datalist_json(folder)
    items = content.get(split) or []
    if not items and required:
        raise NoUsableDataError(
            f"{folder / DATALIST_NAME} has no '{split}' samples. Run `rggan prepare` again and check its "
            f"report ({folder / 'report.txt'}) for the patients that were excluded."
        )
    out = []
    for item in items:
        item = dict(item)
        for key in ARRAY_KEYS:
            if key not in item:
                raise NoUsableDataError(f"{folder / DATALIST_NAME}: a '{split}' entry has no '{key}' key: {item}")
            item[key] = str(folder / item[key])
        out.append(item)
    return out


def sample_datalist(prepared_dir: str | os.PathLike, num: int = 8) -> list[dict]:
    """``num`` fixed samples for visual monitoring: validation patients first, topped up with training ones."""
    items = load_datalist(prepared_dir, "validation", required=False)
    if len(items) < num:
        items = items + load_datalist(prepared_dir, "training")[: num - len(items)]
    return items[:num]


def ensure_prepared(
    dataset_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    *,
    image_size: int | None = None,
    progress: bool = True,
    **prepare_kwargs: Any,
) -> str:
    """Return a prepared dataset folder for ``dataset_dir``, preparing a raw download if needed.

    * ``dataset_dir`` holds a ``datalist.json``: it is used as it is.
    * otherwise it is taken to be a raw download (DICOM + RNA table) and
      :func:`rggan.data.prepare.prepare_dataset` writes ``prepared_dir`` (a no-op when the inputs and
      settings are unchanged, so calling this at every training start is cheap).

    Args:
        dataset_dir: a prepared folder or a raw download.
        prepared_dir: where to prepare a raw download.
        image_size: the image size the networks are built for; used to prepare, checked against a
            prepared folder.
        progress: show the prepare step's progress.
        prepare_kwargs: :class:`rggan.data.prepare.PrepareConfig` fields (``num_bases``, ``seed``, ...)
            and ``prepare_dataset`` arguments (``workers``, ``rna_path``).

    Raises:
        InputError: ``dataset_dir`` does not exist, or was prepared at another image size.
        NoUsableDataError: ``dataset_dir`` holds no file at all.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.exists():
        raise InputError(f"dataset folder {dataset_dir} does not exist (set --dataset_dir).")
    if (dataset_dir / DATALIST_NAME).is_file():
        folder = dataset_dir
    elif not dataset_dir.is_dir() or not any(p.is_file() for p in dataset_dir.rglob("*")):
        raise NoUsableDataError(
            f"dataset folder {dataset_dir} holds no data: expected a prepared folder (datalist.json, written by "
            "`rggan prepare`) or a raw download (the NBIA DICOM tree and GSE103584_R01_NSCLC_RNAseq.txt.gz)."
        )
    else:
        import dataclasses

        from rggan.data.prepare import PrepareConfig, prepare_dataset  # lazy: DICOM readers only when needed

        fields = {f.name for f in dataclasses.fields(PrepareConfig)}
        if image_size is not None:
            prepare_kwargs["image_size"] = int(image_size)
        config = PrepareConfig(**{k: v for k, v in prepare_kwargs.items() if k in fields})
        other = {k: v for k, v in prepare_kwargs.items() if k not in fields}
        log = logging.getLogger("rggan.train")
        log.info("preparing %s into %s", dataset_dir, prepared_dir)
        result = prepare_dataset(dataset_dir, prepared_dir, config=config, progress=progress, **other)
        n_train = sum(r.split == "training" for r in result.patients)
        log.info(
            "prepared %d patients (%d training, %d validation), excluded %d%s: see %s",
            len(result.included), n_train, len(result.included) - n_train, len(result.excluded),
            " (up to date)" if result.no_op else "", result.report.with_suffix(".txt"),
        )  # fmt: skip
        folder = Path(prepared_dir)
    info = read_datalist_info(folder)
    if image_size is not None and info.get("image_size") not in (None, int(image_size)):
        raise InputError(
            f"{folder} was prepared at image_size={info['image_size']} but image_size={image_size} was asked for: "
            f"pass --image_size {info['image_size']} or prepare the raw data again."
        )
    margin_slices = int(prepare_kwargs.get("margin_slices") or 0)
    margin_mm = float(prepare_kwargs.get("margin_mm") or 0.0)
    has = (int(info.get("margin_slices") or 0), float(info.get("margin_mm") or 0.0))
    if (margin_slices or margin_mm) and has != (margin_slices, margin_mm):
        asked, option = (
            (f"+-{margin_slices} slices", f"--margin-slices {margin_slices}") if margin_slices
            else (f"+-{margin_mm:g} mm", f"--margin-mm {margin_mm:g}")
        )  # fmt: skip
        raise InputError(
            f"{folder} holds no margin targets averaged over {asked} (it was prepared with margin_slices={has[0]}, "
            f"margin_mm={has[1]:g}): prepare the raw download again with `rggan prepare {option}`, or pass the raw "
            "download as --dataset_dir."
        )
    return str(folder)
