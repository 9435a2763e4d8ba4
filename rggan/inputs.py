"""Generation requests: what the generator is asked to synthesise, validated before anything runs.

:func:`build_inputs` makes one request per input patient and sample index: the patient's expression
vector (from a prepared dataset, or from an RNA table transformed with the prepared dataset's saved
``gene_transform.json``), a background patch (the prepared dataset's, or a user's 2-D NIfTI / DICOM
file read by :mod:`rggan.backgrounds`) and a latent vector.

Latents are reproducible per request: ``z`` for (patient P, sample j) is drawn from
``numpy.random.default_rng([seed, crc32(P), j])`` (:func:`latent_for`), so a nodule does not depend on
batch composition.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rggan.backgrounds import load_background
from rggan.checkpoint import dataset_sizes
from rggan.errors import InputError, NoUsableDataError
from rggan.intensity import hu_range_of

__all__ = ["latent_for", "prepared_items", "check_prepared", "load_npy", "build_inputs"]

#: ``(patch (1, S, S), [row, col] spacing mm, where the patch came from)``
Background = tuple[np.ndarray, list[float], str]


def latent_for(patient: str, sample: int, latent_size: int, seed: int) -> np.ndarray:
    """The fixed latent vector of (patient, sample index).

    Args:
        patient: patient ID.
        sample: sample index.
        latent_size: length of the vector.
        seed: latent seed.

    Returns:
        float32 (latent_size,) standard normal draw of ``default_rng([seed, crc32(patient), sample])``.
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(patient).encode()), int(sample)])
    return rng.standard_normal(int(latent_size)).astype(np.float32)


def prepared_items(dataset_dir: str | os.PathLike, split: str) -> list[dict]:
    """The datalist items of a prepared dataset's split.

    Args:
        dataset_dir: prepared dataset folder.
        split: ``"validation"``, ``"training"`` or ``"all"`` (training then validation).

    Returns:
        The items (paths absolute).
    """
    from rggan.data.dataset import load_datalist

    if split not in ("validation", "training", "all"):
        raise InputError(f"split must be 'validation', 'training' or 'all', got {split!r}")
    if split == "all":
        return load_datalist(dataset_dir, "training", required=False) + load_datalist(
            dataset_dir, "validation", required=False
        )
    return load_datalist(dataset_dir, split)


def check_prepared(dataset_dir: str | os.PathLike | None) -> Path:
    """``dataset_dir`` as a path, if it is a prepared dataset folder.

    Args:
        dataset_dir: the folder to check.

    Returns:
        The folder.

    Raises:
        InputError: no such folder, or no ``datalist.json`` in it.
    """
    if dataset_dir is None or not Path(dataset_dir).is_dir():
        raise InputError(f"prepared dataset folder {dataset_dir} not found (set --dataset_dir)")
    folder = Path(dataset_dir)
    if not (folder / "datalist.json").is_file():
        raise InputError(
            f"{folder} is not a prepared dataset folder (no datalist.json). Pass the folder written by "
            "`rggan prepare`, or <training output_dir>/prepared when training prepared a raw download."
        )
    return folder


def load_npy(path: str, what: str) -> np.ndarray:
    """``numpy.load`` (no pickles) with an :class:`~rggan.errors.InputError` naming ``what`` on failure.

    Args:
        path: the ``.npy`` file.
        what: what the file holds, for the message.

    Returns:
        The array.
    """
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from exc


def _check_options(num_samples: int, base_index: int | str) -> None:
    if int(num_samples) < 1:
        raise InputError(f"num_samples must be >= 1, got {num_samples}")
    if not (base_index == "cycle" or (isinstance(base_index, int) and base_index >= 0)):
        raise InputError(f"base_index must be a non-negative int or 'cycle', got {base_index!r}")


def _open_dataset(
    dataset_dir: str | os.PathLike | None, rna_file: Any, backgrounds: Any, num_genes: int, image_size: int
) -> Path | None:
    """The prepared folder (its sizes checked), or None when an RNA file and background files replace it."""
    if dataset_dir is not None and str(dataset_dir) not in ("", "None") and Path(dataset_dir).exists():
        folder = check_prepared(dataset_dir)
        info_sizes = dataset_sizes(folder)
        if (
            info_sizes.get("image_size", image_size) != image_size
            or info_sizes.get("num_genes", num_genes) != num_genes
        ):
            raise InputError(
                f"prepared dataset {folder} has image_size {info_sizes.get('image_size')} and num_genes "
                f"{info_sizes.get('num_genes')}, the generator image_size {image_size} and num_genes {num_genes}"
            )
        return folder
    if rna_file is None or not backgrounds:
        raise InputError(f"prepared dataset folder {dataset_dir} not found (set --dataset_dir)")
    return None


def _prepared_vectors(
    items: list[dict], folder: Path, split: str, patients: Sequence[str] | None, num_genes: int
) -> tuple[list[str], dict[str, np.ndarray]]:
    """The requested prepared patients (in request order) and their expression vectors (``rna.npy``)."""
    by_id = {str(it["patient"]): it for it in items}
    ids = list(by_id) if patients is None else [str(p) for p in patients]
    unknown = [p for p in ids if p not in by_id]
    if unknown:
        raise InputError(f"patients not in the {split} split of {folder}: {', '.join(unknown)}")
    vectors = {}
    for p in ids:
        v = load_npy(by_id[p]["rna"], f"expression of {p}").astype(np.float32).reshape(-1)
        if v.shape[0] != num_genes:
            raise InputError(f"{by_id[p]['rna']} has {v.shape[0]} genes, the generator {num_genes}")
        vectors[p] = v
    return ids, vectors


def _table_vectors(
    rna_file: str | os.PathLike,
    rna_layout: str | None,
    gene_transform: str | os.PathLike | None,
    folder: Path | None,
    patients: Sequence[str] | None,
    fill_missing: str | None,
    num_genes: int,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """The requested patients of an RNA table and their expression vectors, made by the saved gene transform."""
    from rggan.data.rna import GeneTransform, read_rna_table

    layout = rna_layout or ("patients_by_genes" if ".csv" in Path(rna_file).name.lower() else "geo")
    table = read_rna_table(rna_file, layout=layout)
    gt_path = gene_transform or (folder / "gene_transform.json" if folder is not None else None)
    if gt_path is None:
        raise InputError("an RNA file needs the gene transform: set --gene_transform or --dataset_dir")
    transform = GeneTransform.load(gt_path)
    if transform.num_genes != num_genes:
        raise InputError(
            f"gene transform {gt_path} has {transform.num_genes} genes, the generator {num_genes}: use the "
            "prepared dataset the model was trained on"
        )
    expr = table.expression
    ids = list(map(str, expr.index)) if patients is None else [str(p) for p in patients]
    unknown = [p for p in ids if p not in set(map(str, expr.index))]
    if unknown:
        raise InputError(f"patients not in {rna_file}: {', '.join(unknown)}")
    expr = expr.loc[ids]
    values = transform.transform(expr, fill_missing=fill_missing)
    return ids, {p: values[i] for i, p in enumerate(ids)}


def _background_files(
    dataset_dir: Any, rna_file: Any, backgrounds: Sequence[Any] | None, prepared: list[dict], image_size: int
) -> list[Background]:
    """The user's background files, read and normalised (empty when the prepared patches are used)."""
    files: list[Background] = []
    if rna_file is not None and backgrounds:
        for b in backgrounds:
            patch, sp = load_background(b, image_size, hu_range_of(dataset_dir))
            files.append((patch, [float(sp[0]), float(sp[1])], str(b)))
    elif backgrounds:
        raise InputError("--backgrounds needs --rna_file; prepared patients use their own background patches")
    if rna_file is not None and not files and not prepared:
        raise InputError(
            "no background patches: pass --backgrounds <2-D NIfTI/DICOM files> or a prepared --dataset_dir"
        )
    return files


class _PreparedBackgrounds:
    """The background patches (``bases.npy``) of prepared patients, each file read and checked once."""

    def __init__(self, items: list[dict], image_size: int, base_index: int | str) -> None:
        self.by_id = {str(it["patient"]): it for it in items}
        self.order = list(self.by_id)
        self.image_size = image_size
        self.base_index = base_index
        self._cache: dict[str, np.ndarray] = {}

    def _bases(self, pid: str) -> np.ndarray:
        if pid not in self._cache:
            path, s = self.by_id[pid]["bases"], self.image_size
            arr = load_npy(path, f"background patches of {pid}").astype(np.float32)
            if arr.ndim != 3 or arr.shape[1:] != (s, s) or arr.shape[0] < 1:
                raise InputError(f"{path} has shape {arr.shape}, expected (K, {s}, {s})")
            self._cache[pid] = arr
        return self._cache[pid]

    def pick(self, i: int, pid: str, j: int) -> Background:
        """Patch of request (input patient ``i`` = ``pid``, sample ``j``): its own, else patient i mod n's."""
        src = pid if pid in self.by_id else self.order[i % len(self.order)]
        bases = self._bases(src)
        k = j % bases.shape[0] if self.base_index == "cycle" else int(self.base_index)
        if k >= bases.shape[0]:
            raise InputError(f"base_index {k} but {src} has {bases.shape[0]} background patches")
        spacing = [float(s) for s in self.by_id[src].get("spacing", (1.0, 1.0))]
        return bases[k : k + 1], spacing, f"{src}#{k}"


def _request(pid: str, j: int, rna: np.ndarray, background: Background, latent_size: int, seed: int) -> dict[str, Any]:
    patch, spacing, source = background
    return {
        "id": f"{pid}_s{j:02d}",
        "patient": pid,
        "sample": j,
        "rna": rna,
        "z": latent_for(pid, j, latent_size, seed),
        "base": np.ascontiguousarray(patch, dtype=np.float32),
        "spacing": spacing,
        "background": source,
    }


def build_inputs(
    dataset_dir: str | os.PathLike | None,
    *,
    num_genes: int,
    image_size: int,
    latent_size: int,
    num_samples: int = 4,
    seed: int = 12345,
    split: str = "validation",
    patients: Sequence[str] | None = None,
    rna_file: str | os.PathLike | None = None,
    rna_layout: str | None = None,
    fill_missing: str | None = None,
    gene_transform: str | os.PathLike | None = None,
    backgrounds: Sequence[str | os.PathLike] | None = None,
    base_index: int | str = 0,
) -> list[dict[str, Any]]:
    """Every generation request, validated before anything is generated or written.

    Modes:

    * ``rna_file`` unset: the patients of the prepared ``dataset_dir`` (``split``: ``"validation"``
      (default), ``"training"`` or ``"all"``), with their own ``rna.npy`` and background patches;
    * ``rna_file`` set: an expression table read with :func:`rggan.data.rna.read_rna_table`
      (``rna_layout``: ``"geo"`` = genes × patients, tab-separated, like GSE103584; ``"patients_by_genes"``
      = patients × genes, e.g. a CSV; default: ``patients_by_genes`` for ``.csv`` files, else ``geo``) and
      transformed by the saved gene transform (``gene_transform``, default
      ``<dataset_dir>/gene_transform.json``); genes the model needs but the table lacks are an error
      listing them, unless ``fill_missing="median"`` (training medians). Backgrounds: the files in
      ``backgrounds`` (2-D NIfTI or DICOM slices, used in turn: patient i gets file i mod n), else the
      prepared dataset's patches (the patient's own if it is in the dataset, else the prepared patients'
      in turn).

    Args:
        dataset_dir: prepared dataset folder (optional with ``rna_file`` and ``backgrounds``).
        num_genes, image_size, latent_size: the generator's sizes (checked against the data).
        num_samples: nodules per input patient (latents ``0 .. num_samples-1``).
        seed: latent seed (:func:`latent_for`).
        split: prepared split of the patients (without ``rna_file``).
        patients: optional subset (in this order); unknown IDs are an error.
        rna_file, rna_layout, fill_missing, gene_transform: the RNA table mode above.
        backgrounds: background files (with ``rna_file`` only).
        base_index: which of a prepared patient's background patches to use: an index, or
            ``"cycle"`` (sample j uses patch j mod K).

    Returns:
        One dict per (patient, sample): ``id``, ``patient``, ``sample``, ``rna`` (G,), ``z`` (L,),
        ``base`` (1, S, S), ``spacing`` [row, col] mm, ``background`` (where the patch came from).

    Raises:
        InputError / NoUsableDataError: anything unusable, with what to do.
    """
    if isinstance(patients, str):  # a single ID from the command line
        patients = [patients]
    if isinstance(backgrounds, (str, os.PathLike)):
        backgrounds = [backgrounds]
    _check_options(num_samples, base_index)
    folder = _open_dataset(dataset_dir, rna_file, backgrounds, num_genes, image_size)
    if rna_file is None:
        prepared = prepared_items(folder, split)
        ids, vectors = _prepared_vectors(prepared, folder, split, patients, num_genes)
    else:
        ids, vectors = _table_vectors(rna_file, rna_layout, gene_transform, folder, patients, fill_missing, num_genes)
        prepared = prepared_items(folder, "all") if folder is not None else []
    if not ids:
        raise NoUsableDataError("no input patient to generate for")
    files = _background_files(dataset_dir, rna_file, backgrounds, prepared, image_size)
    bases = _PreparedBackgrounds(prepared, image_size, base_index)
    return [
        _request(pid, j, vectors[pid], files[i % len(files)] if files else bases.pick(i, pid, j), latent_size, seed)
        for i, pid in enumerate(ids)
        for j in range(int(num_samples))
    ]
