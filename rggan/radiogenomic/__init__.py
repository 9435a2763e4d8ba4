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
    workflow       ``run_radiogenomic_map``, the whole run (``bundle/configs/radiogenomic_map.yaml``).

The public names are re-exported by :mod:`rggan.radiogenomic_map` (the path the bundle configs use).
"""
