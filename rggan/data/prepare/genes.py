"""The RNA vectors of a prepared dataset: the gene transform fitted on the training patients, applied to all."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from rggan.data.prepare.config import PrepareConfig
from rggan.data.rna import GeneTransform
from rggan.io import atomic_save_npy

__all__ = ["write_gene_vectors"]

logger = logging.getLogger(__name__)


def write_gene_vectors(
    expression: pd.DataFrame, included: list[str], train: list[str], config: PrepareConfig, output_dir: Path
) -> GeneTransform:
    """Fit the gene transform on the training patients, write every included patient's ``rna.npy`` and the transform.

    With ``config.permute_rna`` set (a negative control) the expression profiles are first shuffled among the
    included patients: each patient gets another patient's whole profile.

    Args:
        expression: patients × genes FPKM (``RNATable.expression``).
        included: the included patients, sorted.
        train: the training patients.
        config: the settings.
        output_dir: the prepared dataset folder.

    Returns:
        The fitted transform (saved as ``gene_transform.json``).
    """
    if config.permute_rna is not None:  # negative control: every patient gets another patient's profile
        donors = np.random.default_rng(config.permute_rna).permutation(included)
        shuffled = expression.loc[list(donors)].set_axis(included, axis=0)
        expression = pd.concat([shuffled, expression.drop(index=included)])
        logger.warning("RNA profiles shuffled among %d patients (permute_rna=%d): a negative control.",
                       len(included), config.permute_rna)  # fmt: skip
    transform = GeneTransform.fit(expression, train, config.genes)
    vectors = transform.transform(expression.loc[included])
    for p, vec in zip(included, vectors):
        atomic_save_npy(output_dir / "samples" / p / "rna.npy", vec.astype(np.float32))
    transform.save(output_dir / "gene_transform.json")
    return transform
