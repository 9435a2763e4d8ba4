"""Inference with a trained RG-GAN: synthesise nodules for patients (gene expression + background patch).

Building blocks used by ``bundle/configs/inference.yaml`` (and by the radiogenomic map / evaluation):

* :func:`load_checkpoint_state` / :func:`sizes_from_state_dict` / :func:`resolve_sizes` /
  :func:`load_generator`: the EMA generator of a training checkpoint, with its sizes read from the
  weights and checked against the configuration and the prepared dataset (a mismatch is an
  :class:`~rggan.errors.InputError` naming every size that differs);
* :func:`build_inputs`: the list of generation requests (one per input patient and sample index),
  fully validated before anything is written: patients of a prepared dataset (a split or all), or an
  RNA table (GEO layout or a patients × genes CSV) transformed with the prepared dataset's saved
  ``gene_transform.json``, with background patches from the prepared dataset or from 2-D NIfTI /
  DICOM files;
* :func:`prepare_generator_batch`: the ``prepare_batch`` of the :class:`monai.engines.SupervisedEvaluator`
  that runs G (``inferer(rna, G, z, base)`` -> ``G(rna, z, base)``);
* :class:`GeneratedNoduleWriter`: the evaluator handler that writes NIfTI image + mask (HU and
  spacing restored), a PNG preview per sample and ``index.csv`` (with the nodule features) into a
  staging folder, and moves them into ``output_dir`` only when the whole run succeeded.

Latents are reproducible per request: ``z`` for (patient P, sample j) is drawn from
``numpy.random.default_rng([seed, crc32(P), j])``, so a nodule does not depend on batch composition.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rggan.errors import InputError, NoUsableDataError, OutputError
from rggan.features import FEATURE_NAMES, nodule_features, to_hu
from rggan.intensity import DEFAULT_HU_RANGE, hu_range_of, hu_to_unit
from rggan.io import dir_mode

__all__ = [
    "CKPT_KEY",
    "as_flag",
    "SIZE_NAMES",
    "default_checkpoint",
    "load_checkpoint_state",
    "sizes_from_state_dict",
    "resolve_sizes",
    "load_generator",
    "load_weights",
    "load_background",
    "latent_for",
    "build_inputs",
    "collate_inputs",
    "prepare_generator_batch",
    "generate",
    "GeneratedNoduleWriter",
    "write_nifti",
    "preview_png",
    "outlined",
    "make_staging",
    "commit_staging",
]

logger = logging.getLogger(__name__)

#: checkpoint entry holding the EMA generator (written by bundle/configs/train.yaml)
CKPT_KEY = "ema_generator"
#: generator sizes that must agree between checkpoint, configuration and prepared dataset
SIZE_NAMES = ("num_genes", "embed_dim", "latent_size", "g_n_feat", "code_kernel", "image_size")


def as_flag(value: Any) -> bool:
    """A boolean option that may arrive from the command line as a string ("false", "0", "no", "none")."""
    return str(value).strip().lower() not in ("false", "0", "no", "none", "null", "")


# ---------------------------------------------------------------------------------------------- checkpoint


def default_checkpoint(ckpt_dir: str | os.PathLike) -> str | None:
    """The latest training checkpoint in ``ckpt_dir`` (``None`` if there is none)."""
    from rggan.handlers import find_latest_checkpoint

    return find_latest_checkpoint(ckpt_dir)


def load_checkpoint_state(ckpt_file: str | os.PathLike | None, key: str = CKPT_KEY) -> dict[str, torch.Tensor]:
    """The generator state dict stored under ``key`` in a training checkpoint.

    A file that is itself a generator state dict (e.g. an exported ``model.pt``) is accepted too.

    Raises:
        InputError: no file, unreadable file, or no ``key`` entry (the entries found are listed).
    """
    if ckpt_file is None or str(ckpt_file) in ("", "None"):
        raise InputError("no checkpoint: pass --ckpt_file <training output>/models/checkpoint_...pt")
    path = Path(ckpt_file)
    if not path.is_file():
        raise InputError(f"checkpoint {path} not found; pass --ckpt_file <training output>/models/checkpoint_...pt")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise InputError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(obj, Mapping):
        raise InputError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of state dicts")
    if key in obj and isinstance(obj[key], Mapping):
        return dict(obj[key])
    if any(str(k).startswith("gene_encoder.") for k in obj):
        return dict(obj)
    raise InputError(f"checkpoint {path} has no '{key}' entry (entries: {', '.join(map(str, obj))})")


def sizes_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Generator sizes (:data:`SIZE_NAMES`) read off the weight shapes of an ``RGGenerator`` state dict."""
    try:
        enc0 = state["gene_encoder.0.weight"]  # (4E, G)
        enc2 = state["gene_encoder.2.weight"]  # (E, 4E)
        fc0 = state["code_projections.0.fc.weight"]  # (2*16g*k*k, E+L)
        head = state["head.0.conv.weight"]  # (2, g, 3, 3)
    except KeyError as exc:
        raise InputError(f"the checkpoint is not an RG-GAN generator: weight {exc} is missing") from exc
    num_genes, embed_dim = int(enc0.shape[1]), int(enc2.shape[0])
    latent_size = int(fc0.shape[1]) - embed_dim
    g = int(head.shape[1])
    k = int(round(math.sqrt(int(fc0.shape[0]) / (32 * g))))
    return {
        "num_genes": num_genes,
        "embed_dim": embed_dim,
        "latent_size": latent_size,
        "g_n_feat": g,
        "code_kernel": k,
        "image_size": 16 * k,
        "texture_noise": int(head.shape[0]) == 3,
        "film": "synthesis_blocks.0.film.weight" in state,
    }


def _dataset_sizes(dataset_dir: str | os.PathLike | None) -> dict[str, int]:
    """``num_genes`` / ``image_size`` of a prepared folder (empty if there is none)."""
    if dataset_dir is None or not (Path(dataset_dir) / "datalist.json").is_file():
        return {}
    from rggan.data.dataset import read_datalist_info

    info = read_datalist_info(dataset_dir)
    return {k: int(info[k]) for k in ("num_genes", "image_size") if info.get(k) is not None}


def resolve_sizes(
    ckpt_file: str | os.PathLike | None,
    dataset_dir: str | os.PathLike | None = None,
    *,
    key: str = CKPT_KEY,
    **configured: int | None,
) -> dict[str, int]:
    """The generator sizes of the checkpoint, checked against the configuration and the prepared dataset.

    Args:
        ckpt_file: training checkpoint.
        dataset_dir: prepared dataset folder (its ``num_genes`` and ``image_size`` must match), or None.
        key: checkpoint entry of the generator.
        configured: sizes set in the configuration (``None`` = take the checkpoint's); ``latent_size``
            may also be passed as ``g_ls``.

    Raises:
        InputError: one message naming every mismatching size with both values.
    """
    if "g_ls" in configured:
        configured.setdefault("latent_size", configured.pop("g_ls"))
    unknown = set(configured) - set(SIZE_NAMES)
    if unknown:
        raise InputError(f"unknown generator sizes {sorted(unknown)}; known: {', '.join(SIZE_NAMES)}")
    sizes = sizes_from_state_dict(load_checkpoint_state(ckpt_file, key))
    problems = [
        f"{name}: checkpoint {sizes[name]}, configuration {value}"
        for name, value in configured.items()
        if value is not None and str(value) != "None" and int(value) != int(sizes[name])
    ]
    problems += [
        f"{name}: checkpoint {sizes[name]}, prepared dataset {dataset_dir} {value}"
        for name, value in _dataset_sizes(dataset_dir).items()
        if value != sizes[name]
    ]
    if problems:
        raise InputError(
            f"checkpoint {ckpt_file} does not match the requested sizes ({'; '.join(problems)}). Use the checkpoint "
            "of a model trained with these sizes on this prepared dataset, or leave the sizes unset (null) to take "
            "the checkpoint's."
        )
    return sizes


def load_weights(network: torch.nn.Module, ckpt_file: str | os.PathLike, key: str = CKPT_KEY) -> torch.nn.Module:
    """Load the checkpoint's ``key`` state dict into ``network`` (strict) and put it in eval mode."""
    state = load_checkpoint_state(ckpt_file, key)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"checkpoint {ckpt_file} does not fit the generator: {exc}") from exc
    return network.eval()


def load_generator(
    ckpt_file: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    key: str = CKPT_KEY,
    double_tanh: bool = False,
    **configured: int | None,
) -> torch.nn.Module:
    """The (EMA) generator of a checkpoint, sizes checked (:func:`resolve_sizes`), on ``device``, in eval mode."""
    from rggan.networks import RGGenerator

    sizes = resolve_sizes(ckpt_file, dataset_dir, key=key, **configured)
    net = RGGenerator(
        sizes["num_genes"],
        embed_dim=sizes["embed_dim"],
        latent_size=sizes["latent_size"],
        g_n_feat=sizes["g_n_feat"],
        code_kernel=sizes["code_kernel"],
        image_size=sizes["image_size"],
        double_tanh=double_tanh,
        texture_noise=bool(sizes.get("texture_noise", False)),  # read off the weights, as the sizes are
        film=bool(sizes.get("film", False)),
    )
    return load_weights(net, ckpt_file, key).to(device)


# ---------------------------------------------------------------------------------------------- inputs


def latent_for(patient: str, sample: int, latent_size: int, seed: int) -> np.ndarray:
    """The fixed latent vector of (patient, sample index): ``default_rng([seed, crc32(patient), sample])``."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(patient).encode()), int(sample)])
    return rng.standard_normal(int(latent_size)).astype(np.float32)


def load_background(
    path: str | os.PathLike, image_size: int, hu_range: Sequence[float] = DEFAULT_HU_RANGE
) -> tuple[np.ndarray, tuple[float, float]]:
    """A user background patch: a 2-D NIfTI (``.nii``/``.nii.gz``) or a single DICOM CT slice, in HU.

    The patch is centre-cropped to a square, resized to ``image_size`` (area interpolation when
    shrinking, bilinear when enlarging), clipped to ``hu_range`` (the prepared dataset's) and normalised to [-1, 1].
    NIfTI arrays are read as (column, row[, 1]) voxels, the layout :func:`write_nifti` writes.

    Returns:
        ``((1, S, S) float32 normalised patch, (row, col) spacing in mm of the resized patch)``.

    Raises:
        InputError: missing or unreadable file, not 2-D, or no pixel data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"background file {path} not found")
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            data = np.asarray(img.get_fdata(dtype=np.float32))
            zooms = tuple(float(z) for z in img.header.get_zooms()[:2])
            if data.ndim == 3 and data.shape[2] == 1:
                data = data[:, :, 0]
            if data.ndim != 2:
                raise InputError(f"background {path} has shape {data.shape}; pass a 2-D patch (one axial slice) in HU")
            hu, spacing = data.T, (zooms[1], zooms[0])
        else:
            import pydicom

            ds = pydicom.dcmread(str(path))
            if "PixelData" not in ds:
                raise InputError(f"background {path} is a DICOM file without pixel data; pass a CT slice")
            arr = ds.pixel_array.astype(np.float32)
            if arr.ndim != 2:
                raise InputError(f"background {path} holds {arr.shape[0]} frames; pass a single CT slice")
            hu = arr * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))
            ps = getattr(ds, "PixelSpacing", None) or (1.0, 1.0)
            spacing = (float(ps[0]), float(ps[1]))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(f"cannot read background {path} as NIfTI or DICOM: {exc}") from exc
    h, w = hu.shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = torch.from_numpy(np.ascontiguousarray(hu_to_unit(hu[y0 : y0 + side, x0 : x0 + side], hu_range)))[None, None]
    mode = "area" if side >= image_size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    patch = F.interpolate(crop, size=(image_size, image_size), mode=mode, **kwargs)[0].clamp(-1, 1).numpy()
    factor = side / image_size
    return patch.astype(np.float32), (spacing[0] * factor, spacing[1] * factor)


def _prepared_items(dataset_dir: str | os.PathLike, split: str) -> list[dict]:
    from rggan.data.dataset import load_datalist

    if split not in ("validation", "training", "all"):
        raise InputError(f"split must be 'validation', 'training' or 'all', got {split!r}")
    if split == "all":
        return load_datalist(dataset_dir, "training", required=False) + load_datalist(
            dataset_dir, "validation", required=False
        )
    return load_datalist(dataset_dir, split)


def _check_prepared(dataset_dir: str | os.PathLike | None) -> Path:
    if dataset_dir is None or not Path(dataset_dir).is_dir():
        raise InputError(f"prepared dataset folder {dataset_dir} not found (set --dataset_dir)")
    folder = Path(dataset_dir)
    if not (folder / "datalist.json").is_file():
        raise InputError(
            f"{folder} is not a prepared dataset folder (no datalist.json). Pass the folder written by "
            "`rggan prepare`, or <training output_dir>/prepared when training prepared a raw download."
        )
    return folder


def _load_npy(path: str, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from exc


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
        num_genes, image_size, latent_size: the generator's sizes (checked against the data).
        num_samples: nodules per input patient (latents ``0 .. num_samples-1``).
        seed: latent seed (:func:`latent_for`).
        patients: optional subset (in this order); unknown IDs are an error.
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
    if int(num_samples) < 1:
        raise InputError(f"num_samples must be >= 1, got {num_samples}")
    if not (base_index == "cycle" or (isinstance(base_index, int) and base_index >= 0)):
        raise InputError(f"base_index must be a non-negative int or 'cycle', got {base_index!r}")
    prepared: list[dict] = []
    if dataset_dir is not None and str(dataset_dir) not in ("", "None") and Path(dataset_dir).exists():
        folder = _check_prepared(dataset_dir)
        info_sizes = _dataset_sizes(folder)
        if (
            info_sizes.get("image_size", image_size) != image_size
            or info_sizes.get("num_genes", num_genes) != num_genes
        ):
            raise InputError(
                f"prepared dataset {folder} has image_size {info_sizes.get('image_size')} and num_genes "
                f"{info_sizes.get('num_genes')}, the generator image_size {image_size} and num_genes {num_genes}"
            )
    elif rna_file is None or not backgrounds:
        raise InputError(f"prepared dataset folder {dataset_dir} not found (set --dataset_dir)")
    else:
        folder = None

    # ------------------------------------------------------------ expression vectors
    if rna_file is None:
        prepared = _prepared_items(folder, split)
        by_id = {str(it["patient"]): it for it in prepared}
        ids = list(by_id) if patients is None else [str(p) for p in patients]
        unknown = [p for p in ids if p not in by_id]
        if unknown:
            raise InputError(f"patients not in the {split} split of {folder}: {', '.join(unknown)}")
        vectors = {}
        for p in ids:
            v = _load_npy(by_id[p]["rna"], f"expression of {p}").astype(np.float32).reshape(-1)
            if v.shape[0] != num_genes:
                raise InputError(f"{by_id[p]['rna']} has {v.shape[0]} genes, the generator {num_genes}")
            vectors[p] = v
    else:
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
        vectors = {p: values[i] for i, p in enumerate(ids)}
        if folder is not None:
            prepared = _prepared_items(folder, "all")
    if not ids:
        raise NoUsableDataError("no input patient to generate for")

    # ------------------------------------------------------------ backgrounds
    files: list[tuple[np.ndarray, list[float], str]] = []
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
    by_prep = {str(it["patient"]): it for it in prepared}
    prep_order = list(by_prep)
    bases_cache: dict[str, np.ndarray] = {}

    def prepared_bases(pid: str) -> np.ndarray:
        if pid not in bases_cache:
            arr = _load_npy(by_prep[pid]["bases"], f"background patches of {pid}").astype(np.float32)
            if arr.ndim != 3 or arr.shape[1:] != (image_size, image_size) or arr.shape[0] < 1:
                raise InputError(
                    f"{by_prep[pid]['bases']} has shape {arr.shape}, expected (K, {image_size}, {image_size})"
                )
            bases_cache[pid] = arr
        return bases_cache[pid]

    requests: list[dict[str, Any]] = []
    for i, pid in enumerate(ids):
        for j in range(int(num_samples)):
            if files:
                patch, spacing, source = files[i % len(files)]
            else:
                src = pid if pid in by_prep else prep_order[i % len(prep_order)]
                bases = prepared_bases(src)
                k = j % bases.shape[0] if base_index == "cycle" else int(base_index)
                if k >= bases.shape[0]:
                    raise InputError(f"base_index {k} but {src} has {bases.shape[0]} background patches")
                patch = bases[k : k + 1]
                spacing = [float(s) for s in by_prep[src].get("spacing", (1.0, 1.0))]
                source = f"{src}#{k}"
            requests.append(
                {
                    "id": f"{pid}_s{j:02d}",
                    "patient": pid,
                    "sample": j,
                    "rna": vectors[pid],
                    "z": latent_for(pid, j, latent_size, seed),
                    "base": np.ascontiguousarray(patch, dtype=np.float32),
                    "spacing": spacing,
                    "background": source,
                }
            )
    return requests


# ---------------------------------------------------------------------------------------------- running G


def collate_inputs(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch requests: tensors for ``rna``, ``z``, ``base``, ``spacing``; lists for the rest."""
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if key in ("rna", "z", "base", "spacing"):
            out[key] = torch.as_tensor(np.stack([np.asarray(v, dtype=np.float32) for v in vals]))
        else:
            out[key] = vals
    return out


def prepare_generator_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, None, tuple[torch.Tensor, torch.Tensor], dict]:
    """``SupervisedEvaluator`` prepare_batch: ``(rna, None, (z, base), {})``; the inferer calls ``G(rna, z, base)``.

    (A plain function, not a lambda, so the config can reference it.)
    """

    def to(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, non_blocking=non_blocking, **kwargs)

    return to(batchdata["rna"]), None, (to(batchdata["z"]), to(batchdata["base"])), {}


@torch.no_grad()
def generate(
    network: torch.nn.Module,
    requests: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Run G on every request in batches (eval mode); CPU tensors ``image``, ``mask``, ``alpha`` (N, 1, S, S)."""
    device = device or next(network.parameters()).device
    was_training = network.training
    network.eval()
    chunks: dict[str, list[torch.Tensor]] = {"image": [], "mask": [], "alpha": []}
    starts = range(0, len(requests), max(1, int(batch_size)))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generating", unit="batch", disable=None)  # None: no bar off a terminal
    try:
        for s in starts:
            b = collate_inputs(requests[s : s + batch_size])
            out = network(b["rna"].to(device), b["z"].to(device), b["base"].to(device))
            for k in chunks:
                chunks[k].append(getattr(out, k).float().cpu())
    finally:
        network.train(was_training)
    return {k: torch.cat(v) for k, v in chunks.items()}


# ---------------------------------------------------------------------------------------------- writing


def write_nifti(path: str | os.PathLike, array_rc: np.ndarray, spacing: Sequence[float], dtype: Any) -> None:
    """Write a (row, col) slice as NIfTI voxels (col, row, 1) with affine diag(col mm, row mm, 1 mm)."""
    import nibabel as nib

    data = np.ascontiguousarray(np.asarray(array_rc).T[:, :, None].astype(dtype))
    affine = np.diag([float(spacing[1]), float(spacing[0]), 1.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    nib.save(img, str(path))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return ((np.clip(x, -1, 1) + 1) * 127.5).round().astype(np.uint8)


def outlined(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image in [-1, 1] with the outline of ``mask > 0`` in red."""
    g = _to_uint8(image)
    inside = mask > 0
    pad = np.pad(inside, 1)
    edge = inside & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
    rgb = np.stack([g, g, g], -1)
    rgb[edge] = (255, 40, 40)
    return rgb


def preview_png(base: np.ndarray, image: np.ndarray, mask: np.ndarray, min_side: int = 128) -> np.ndarray:
    """RGB preview (H, 3W, 3): background | generated image | generated image with the mask outline in red."""
    b, g = _to_uint8(base), _to_uint8(image)
    tiles = [np.stack([b, b, b], -1), np.stack([g, g, g], -1), outlined(image, mask)]
    row = np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], axis=1)
    scale = max(1, int(math.ceil(min_side / base.shape[0])))
    return np.repeat(np.repeat(row, scale, axis=0), scale, axis=1)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)) or "x"


INDEX_NAME = "index.csv"


def make_staging(output_dir: str | os.PathLike) -> Path:
    """A new hidden staging folder beside ``output_dir`` (same file system, so moves are renames)."""
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
    """Move everything in ``staging`` into ``output_dir`` (a rename of the folder if it is new or empty)."""
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


class GeneratedNoduleWriter:
    """Evaluator handler: NIfTI image + mask, PNG preview and ``index.csv`` per generated nodule.

    Layout of ``output_dir``::

        index.csv                                   one row per nodule (paths relative to output_dir)
        <patient>/<patient>_s<j>_image.nii.gz       HU (within ``hu_range``), float32, (col, row, 1),
                                                    affine diag(col mm, row mm, 1)
        <patient>/<patient>_s<j>_mask.nii.gz        uint8 {0, 1}, mask > 0 of the generator's mask channel
        <patient>/<patient>_s<j>_preview.png        background | generated | generated + mask outline

    Files are written into a hidden staging folder beside ``output_dir`` and moved into place when
    the evaluator completes; if the run fails the staging folder is removed, so an error leaves no
    partial outputs (existing files in ``output_dir`` are only replaced by complete new ones).

    Args:
        output_dir: destination folder.
        previews: write the PNG previews.
        name: logger name.
        hu_range: the HU window of the prepared dataset (``rggan.intensity.hu_range_of(dataset_dir)``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        previews: bool = True,
        name: str | None = None,
        hu_range: Sequence[float] = DEFAULT_HU_RANGE,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.hu_range = tuple(float(v) for v in hu_range)
        self.previews = as_flag(previews)
        self.logger = logging.getLogger(name or __name__)
        self.rows: list[dict[str, Any]] = []
        self._staging: Path | None = None

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_batch)
        engine.add_event_handler(Events.COMPLETED, self.commit)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.abort)

    def start(self, engine: Any = None) -> None:
        """Create the staging folder (beside ``output_dir``)."""
        self.cleanup()
        self._staging = make_staging(self.output_dir)
        self.rows = []

    def write_batch(self, engine: Any) -> None:
        """Write the nodules of the current iteration into the staging folder."""
        batch, pred = engine.state.batch, engine.state.output["pred"]
        self.write(batch, pred.image, pred.mask)

    def write(self, batch: Mapping[str, Any], image: torch.Tensor, mask: torch.Tensor) -> None:
        """Write one batch of generated nodules (``batch`` as made by :func:`collate_inputs`)."""
        from PIL import Image

        if self._staging is None:
            self.start()
        assert self._staging is not None
        image, mask = image.detach().float().cpu(), mask.detach().float().cpu()
        spacing = torch.as_tensor(batch["spacing"], dtype=torch.float64)
        feats = nodule_features(image, mask, spacing, hu_range=self.hu_range)
        hu = to_hu(image.clamp(-1.0, 1.0), self.hu_range).numpy()[:, 0]  # G's image is in [-1, 1]
        for i, rid in enumerate(batch["id"]):
            pid = str(batch["patient"][i])
            sub = _safe_name(pid)
            stem = f"{sub}/{_safe_name(rid)}"
            (self._staging / sub).mkdir(exist_ok=True)
            sp = [float(v) for v in spacing[i]]
            write_nifti(self._staging / f"{stem}_image.nii.gz", hu[i], sp, np.float32)
            write_nifti(self._staging / f"{stem}_mask.nii.gz", (mask[i, 0].numpy() > 0), sp, np.uint8)
            row: dict[str, Any] = {
                "id": rid,
                "patient": pid,
                "sample": int(batch["sample"][i]),
                "background": batch["background"][i],
                "spacing_row_mm": sp[0],
                "spacing_col_mm": sp[1],
                "image": f"{stem}_image.nii.gz",
                "mask": f"{stem}_mask.nii.gz",
            }
            if self.previews:
                base = torch.as_tensor(batch["base"][i]).float().numpy()[0]
                png = preview_png(base, image[i, 0].numpy(), mask[i, 0].numpy())
                Image.fromarray(png).save(self._staging / f"{stem}_preview.png")
                row["preview"] = f"{stem}_preview.png"
            row.update({k: float(feats[k][i]) for k in FEATURE_NAMES})
            self.rows.append(row)

    def commit(self, engine: Any = None) -> Path:
        """Write ``index.csv`` and move the staged files into ``output_dir``; returns the index path."""
        if self._staging is None:
            self.start()
        assert self._staging is not None
        buf = io.StringIO()
        fields = list(self.rows[0]) if self.rows else ["id"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        (self._staging / INDEX_NAME).write_text(buf.getvalue(), encoding="utf-8")
        try:
            commit_staging(self._staging, self.output_dir)
        except OutputError:
            self.cleanup()
            raise
        self._staging = None
        path = self.output_dir / INDEX_NAME
        self.logger.info("wrote %d generated nodules to %s (index %s)", len(self.rows), self.output_dir, path)
        return path

    def cleanup(self) -> None:
        """Remove the staging folder, if any."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def abort(self, engine: Any, exc: BaseException) -> None:
        """``EXCEPTION_RAISED``: drop everything staged and re-raise."""
        self.cleanup()
        raise exc
