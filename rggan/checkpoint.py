"""Reading training checkpoints: the latest one, the generator stored in it, and its sizes.

Training (``bundle/configs/train.yaml``) writes ``<prefix>_epoch=<E>_iteration=<I>.pt`` files holding
state dicts, the EMA generator under :data:`CKPT_KEY`. Inference, evaluation, the radiogenomic map and
export read them through this module; the sizes of the generator are read off its weight shapes and
checked against the configuration and the prepared dataset, so a mismatch is one
:class:`~rggan.errors.InputError` naming every size that differs.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from rggan.errors import InputError

__all__ = [
    "CHECKPOINT_PATTERN",
    "CKPT_KEY",
    "SIZE_NAMES",
    "empty_phenotype_prior",
    "find_latest_checkpoint",
    "default_checkpoint",
    "load_checkpoint_state",
    "sizes_from_state_dict",
    "dataset_sizes",
    "resolve_sizes",
    "load_weights",
    "load_generator",
]

#: file names of training checkpoints (written by :class:`rggan.handlers.CheckpointSaver`)
CHECKPOINT_PATTERN = re.compile(r"^(?P<prefix>.+)_epoch=(?P<epoch>\d+)_iteration=(?P<iteration>\d+)\.pt$")
#: checkpoint entry holding the EMA generator (written by bundle/configs/train.yaml)
CKPT_KEY = "ema_generator"
#: generator sizes that must agree between checkpoint, configuration and prepared dataset
SIZE_NAMES = ("num_genes", "embed_dim", "latent_size", "g_n_feat", "code_kernel", "image_size")


def find_latest_checkpoint(ckpt_dir: str | os.PathLike, prefix: str = "checkpoint") -> str | None:
    """Path of the checkpoint with the highest iteration in ``ckpt_dir``.

    Args:
        ckpt_dir: folder of the checkpoints (:data:`CHECKPOINT_PATTERN` names).
        prefix: file name prefix of the checkpoints to consider.

    Returns:
        The path, or None if the folder holds no such checkpoint.
    """
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    best: tuple[int, str] | None = None
    for path in folder.iterdir():
        m = CHECKPOINT_PATTERN.match(path.name)
        if m and m["prefix"] == prefix and path.is_file():
            key = (int(m["iteration"]), str(path))
            best = key if best is None or key > best else best
    return None if best is None else best[1]


def default_checkpoint(ckpt_dir: str | os.PathLike) -> str | None:
    """The latest training checkpoint in ``ckpt_dir`` (``None`` if there is none).

    Args:
        ckpt_dir: the ``models`` folder of a training output.

    Returns:
        The path of :func:`find_latest_checkpoint` with the default prefix.
    """
    return find_latest_checkpoint(ckpt_dir)


def load_checkpoint_state(ckpt_file: str | os.PathLike | None, key: str = CKPT_KEY) -> dict[str, torch.Tensor]:
    """The generator state dict stored under ``key`` in a training checkpoint.

    A file that is itself a generator state dict (e.g. an exported ``model.pt``) is accepted too.

    Args:
        ckpt_file: the checkpoint file.
        key: checkpoint entry of the generator.

    Returns:
        The state dict.

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


def empty_phenotype_prior(features: int, num_genes: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Zeros of a phenotype prior's shape, for the saved buffers to replace (None: the checkpoint has none)."""
    return (torch.zeros(features, num_genes), torch.zeros(features)) if features else None


def sizes_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Generator sizes read off the weight shapes of an ``RGGenerator`` state dict.

    Args:
        state: the generator's state dict.

    Returns:
        The :data:`SIZE_NAMES` sizes, plus ``texture_noise``, ``film``, ``margin_harmonics`` (0: none) and
        ``phenotype_features`` (the phenotype prior's F; 0: none).

    Raises:
        InputError: a weight every RG-GAN generator has is missing.
    """
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
        "margin_harmonics": int(state["margin_amplitude.weight"].shape[0]) if "margin_amplitude.weight" in state else 0,
        "film": "synthesis_blocks.0.film.weight" in state,
        "phenotype_features": int(state["prior_weight"].shape[0]) if "prior_weight" in state else 0,
    }


def dataset_sizes(dataset_dir: str | os.PathLike | None) -> dict[str, int]:
    """``num_genes`` / ``image_size`` of a prepared dataset folder.

    Args:
        dataset_dir: prepared dataset folder, or None.

    Returns:
        The sizes its ``datalist.json`` states (empty if there is no such file).
    """
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

    Returns:
        The sizes of :func:`sizes_from_state_dict`.

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
        for name, value in dataset_sizes(dataset_dir).items()
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
    """Load the checkpoint's ``key`` state dict into ``network`` (strict) and put it in eval mode.

    Args:
        network: the generator to fill.
        ckpt_file: the checkpoint file.
        key: checkpoint entry of the generator.

    Returns:
        ``network``, in eval mode.

    Raises:
        InputError: the weights do not fit the network.
    """
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
    """The (EMA) generator of a checkpoint, its sizes checked by :func:`resolve_sizes`.

    Args:
        ckpt_file: the checkpoint file.
        dataset_dir: prepared dataset folder whose sizes must match, or None.
        device: where the network goes.
        key: checkpoint entry of the generator.
        double_tanh: the generator option of that name (not visible in the weights).
        configured: sizes set in the configuration (see :func:`resolve_sizes`).

    Returns:
        The ``RGGenerator`` on ``device``, in eval mode.
    """
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
        margin_harmonics=int(sizes.get("margin_harmonics", 0)),
        phenotype_prior=empty_phenotype_prior(int(sizes.get("phenotype_features", 0)), sizes["num_genes"]),
    )
    return load_weights(net, ckpt_file, key).to(device)
