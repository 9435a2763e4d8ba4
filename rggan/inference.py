"""Inference with a trained RG-GAN: synthesise nodules for patients (gene expression + background patch).

The public names used by ``bundle/configs/inference.yaml`` (and by the radiogenomic map and evaluation),
in one place. The code lives in one module per concept, in the order a run uses them:

* :mod:`rggan.checkpoint`: :func:`default_checkpoint`, :func:`load_checkpoint_state`,
  :func:`sizes_from_state_dict`, :func:`resolve_sizes`, :func:`load_weights`, :func:`load_generator`: the
  EMA generator of a training checkpoint, with its sizes read from the weights and checked against the
  configuration and the prepared dataset (a mismatch is an :class:`~rggan.errors.InputError` naming
  every size that differs);
* :mod:`rggan.inputs`: :func:`build_inputs`, the list of generation requests (one per input patient and
  sample index), fully validated before anything is written: patients of a prepared dataset (a split or
  all), or an RNA table (GEO layout or a patients × genes CSV) transformed with the prepared dataset's
  saved ``gene_transform.json``; latents fixed per request by :func:`latent_for`;
* :mod:`rggan.backgrounds`: :func:`load_background`, a user's 2-D NIfTI / DICOM background patch;
* :mod:`rggan.generation`: :func:`collate_inputs` and :func:`prepare_generator_batch` (the
  ``SupervisedEvaluator``'s ``collate_fn`` and ``prepare_batch``: ``inferer(rna, G, z, base)`` ->
  ``G(rna, z, base)``), and :func:`generate`, the plain batched loop;
* :mod:`rggan.nodule_files`: :func:`write_nifti`, :func:`preview_png`, :func:`outlined`: the files of a
  generated nodule;
* :mod:`rggan.staging`: :func:`make_staging`, :func:`commit_staging`: all-or-nothing output folders;
* :mod:`rggan.options`: :func:`as_flag`, a boolean option given as a command-line string;
* the evaluator handler that writes the outputs is :class:`rggan.handlers.GeneratedNoduleWriter`
  (``rggan.inference.GeneratedNoduleWriter`` still resolves to it).
"""

from __future__ import annotations

import logging
from typing import Any

from rggan.backgrounds import load_background
from rggan.checkpoint import (
    CKPT_KEY,
    SIZE_NAMES,
    dataset_sizes,
    default_checkpoint,
    load_checkpoint_state,
    load_generator,
    load_weights,
    resolve_sizes,
    sizes_from_state_dict,
)
from rggan.generation import collate_inputs, generate, prepare_generator_batch
from rggan.inputs import build_inputs, check_prepared, latent_for, load_npy, prepared_items
from rggan.nodule_files import INDEX_NAME as INDEX_NAME
from rggan.nodule_files import outlined, preview_png, safe_name, to_uint8, write_nifti
from rggan.options import as_flag
from rggan.staging import commit_staging, make_staging

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
    "write_nifti",
    "preview_png",
    "outlined",
    "make_staging",
    "commit_staging",
]

logger = logging.getLogger(__name__)

# the module's former private names, still importable from here (rggan.traversal uses _safe_name)
_dataset_sizes, _check_prepared, _load_npy, _prepared_items = dataset_sizes, check_prepared, load_npy, prepared_items
_safe_name, _to_uint8 = safe_name, to_uint8


def __getattr__(name: str) -> Any:
    """``GeneratedNoduleWriter`` lives in :mod:`rggan.handlers`; imported only when asked for by this old path."""
    if name == "GeneratedNoduleWriter":
        from importlib import import_module

        return import_module("rggan.handlers.nodule_writer").GeneratedNoduleWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
