"""The built-in demo dataset: a miniature NSCLC-Radiogenomics-shaped NBIA download with a planted answer.

Modules, one concept each:

* :mod:`rggan.demo.identifiers`: SOP classes, collection and file names, deterministic UIDs (:func:`demo_uid`).
* :mod:`rggan.demo.headers`: DICOM header pieces shared by the writers (:class:`StudyInfo`).
* :mod:`rggan.demo.ct_writer`: :func:`write_ct_series` (axial CT, signed or unsigned, head- or feet-first
  numbering; PET).
* :mod:`rggan.demo.seg_writer`: :func:`write_seg` (the SEG producers of the collection, ``"slicer"`` and
  ``"epad"``, which break naive readers, and a conformant ``"highdicom"`` one).
* :mod:`rggan.demo.nbia`: NBIA folder and file names, ``metadata.csv``.
* :mod:`rggan.demo.expression`: the simulated RNA table; :mod:`rggan.demo.phenotypes`: the planted
  gene -> phenotype effects.
* :mod:`rggan.demo.phantom`: chest phantoms with a nodule; :mod:`rggan.demo.patient`: one patient's series.
* :mod:`rggan.demo.truth`: measurements and ``demo_truth.json``; :mod:`rggan.demo.summary`: :class:`DemoSummary`.
* :mod:`rggan.demo.generate`: :func:`generate_demo_dataset`, the whole download.

Default size (``ct_shape=(32, 128, 128)``): 30 GAN-cohort patients + 5 patients of other categories,
CT pixel spacing 2.8 mm (358 mm field of view), slice spacing 4 mm (128 mm coverage), 200 genes.
``realistic=True`` writes 128 slices of 512×512 (0.7 mm pixels, 1 mm slices) for benchmarks.
"""

from rggan.demo import identifiers as _identifiers
from rggan.demo.ct_writer import write_ct_series
from rggan.demo.expression import METAGENES
from rggan.demo.generate import DEFAULT_CT_SHAPE, REALISTIC_CT_SHAPE, generate_demo_dataset
from rggan.demo.headers import StudyInfo
from rggan.demo.identifiers import *  # noqa: F403  (SOP classes, names, UID_PREFIX, demo_uid: all public)
from rggan.demo.nbia import nbia_file_names, nbia_series_folder, nbia_study_folder
from rggan.demo.seg_writer import SegKind, write_seg
from rggan.demo.summary import DemoSummary

__all__ = [
    *_identifiers.__all__,
    "METAGENES",
    "DEFAULT_CT_SHAPE",
    "REALISTIC_CT_SHAPE",
    "SegKind",
    "StudyInfo",
    "DemoSummary",
    "write_ct_series",
    "write_seg",
    "nbia_study_folder",
    "nbia_series_folder",
    "nbia_file_names",
    "generate_demo_dataset",
]
