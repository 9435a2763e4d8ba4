"""Radiogenomic maps: which genes move which nodule features.

Modules (data flow: prepared dataset -> inputs -> maps -> scores -> files):
    perturbation   perturbation units (genes or modules), batched generation requests, effect tables.
    synthesis      the exact correlation-via-synthesis map (``rna ± delta`` per gene, finite differences).
    fast           the same map linearised in the gene embedding (cost independent of the number of genes).
    bootstrap      percentile bootstrap intervals of the exact map (patients resampled).
    correlation    Spearman rank correlations (batched matrix, and scalar on finite pairs).
    conventional   the conventional map: Spearman of the real nodules' features with expression.
    truth          the planted truth of the demo data (``demo_truth.json``) and what follows from it.
    scores         maps scored against the truth, and against each other.
    outputs        the CSV / JSON / PNG files of a run.
    workflow       :func:`run_radiogenomic_map`, the whole run (``bundle/configs/radiogenomic_map.yaml``).
"""

from rggan.radiogenomic.bootstrap import bootstrap_ci
from rggan.radiogenomic.conventional import conventional_map, real_features
from rggan.radiogenomic.correlation import spearman, spearman_matrix
from rggan.radiogenomic.fast import embedding_shifts, fast_synthesis_map, shift_directions
from rggan.radiogenomic.outputs import top_genes
from rggan.radiogenomic.scores import main_driver_agreement, map_agreement, score_against_truth, summarise_scores
from rggan.radiogenomic.synthesis import synthesis_map
from rggan.radiogenomic.truth import (
    PHENOTYPE_FEATURES,
    expected_associations,
    find_truth,
    load_truth,
    phenotype_scales,
    planted_effects,
    resolve_truth,
)
from rggan.radiogenomic.workflow import run_radiogenomic_map

__all__ = [
    "PHENOTYPE_FEATURES",
    "synthesis_map",
    "fast_synthesis_map",
    "embedding_shifts",
    "shift_directions",
    "bootstrap_ci",
    "real_features",
    "conventional_map",
    "spearman",
    "spearman_matrix",
    "find_truth",
    "resolve_truth",
    "load_truth",
    "planted_effects",
    "score_against_truth",
    "phenotype_scales",
    "expected_associations",
    "summarise_scores",
    "map_agreement",
    "main_driver_agreement",
    "top_genes",
    "run_radiogenomic_map",
]
