"""Radiogenomic maps: correlation via synthesis, the conventional Spearman map, and their scores.

The code lives in the package :mod:`rggan.radiogenomic` (one module per concept) and the figures in
:mod:`rggan.visualize`; this module keeps the names importable from ``rggan.radiogenomic_map``, the
path the bundle configs and users call (e.g. ``rggan.radiogenomic_map.run_radiogenomic_map``), and
the former private helpers under their old names (the ``noqa: F401`` imports).
"""

from rggan.radiogenomic.bootstrap import bootstrap_ci
from rggan.radiogenomic.conventional import conventional_map, real_features
from rggan.radiogenomic.correlation import spearman as _spearman  # noqa: F401
from rggan.radiogenomic.correlation import spearman_matrix as _spearman_matrix  # noqa: F401
from rggan.radiogenomic.outputs import top_frame as _top_frame  # noqa: F401
from rggan.radiogenomic.outputs import top_genes
from rggan.radiogenomic.perturbation import check_map_inputs as _check_map_inputs  # noqa: F401
from rggan.radiogenomic.perturbation import collate_requests as _collate  # noqa: F401
from rggan.radiogenomic.perturbation import mean_sem_frames as _mean_sem  # noqa: F401
from rggan.radiogenomic.perturbation import perturbation_units as _units  # noqa: F401
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
from rggan.radiogenomic.workflow import read_modules as _read_modules  # noqa: F401
from rggan.radiogenomic.workflow import run_radiogenomic_map
from rggan.radiogenomic.workflow import write_traversals as _write_traversals  # noqa: F401
from rggan.visualize import diverging_colour as _colour  # noqa: F401
from rggan.visualize import font as _font  # noqa: F401
from rggan.visualize import heatmap_png

__all__ = [
    "PHENOTYPE_FEATURES",
    "synthesis_map",
    "bootstrap_ci",
    "real_features",
    "conventional_map",
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
    "heatmap_png",
    "run_radiogenomic_map",
]
