"""The prepare step: an NBIA download + GEO RNA table -> a prepared training dataset.

Per patient: the axial slice with the largest tumour area; a square crop of side ``2 * max(w, h)`` of the
mask's bounding box, centred on the box; ``num_bases`` nodule-free lung patches of the same size from the same
or neighbouring slices; everything resized to ``image_size`` and normalised to [-1, 1] over the HU window (see
``docs/spec.md``, "Crop rule" and "HU window"). The gene transform is fitted on the training patients only. The
folder layout is documented in ``docs/architecture.md``.

Prepare once, train many times: a re-run with unchanged inputs and settings is a no-op, a patient
whose files changed is prepared again, and every file is written atomically.

One step per module, all re-exported here: :mod:`~rggan.data.prepare.config` (settings),
:mod:`~rggan.data.prepare.manifest` (change detection), :mod:`~rggan.data.prepare.selection` (which patients,
and why not), :mod:`~rggan.data.prepare.crop` (crop rule, background patches), :mod:`~rggan.data.prepare.extract`
(per-patient work in worker processes), :mod:`~rggan.data.prepare.samples` (resize, scale, write),
:mod:`~rggan.data.prepare.run` (serial or parallel jobs), :mod:`~rggan.data.prepare.split` (split and
``datalist.json``), :mod:`~rggan.data.prepare.genes` (RNA vectors), :mod:`~rggan.data.prepare.report` (report)
and :mod:`~rggan.data.prepare.pipeline` (:func:`prepare_dataset`, the whole step).
"""

from rggan.data.prepare.config import PrepareConfig
from rggan.data.prepare.crop import find_background_patches, lung_mask, nodule_crop_box
from rggan.data.prepare.manifest import MANIFEST_VERSION
from rggan.data.prepare.pipeline import RNA_PATTERNS, find_rna_file, prepare_dataset
from rggan.data.prepare.result import PatientRecord, PrepareResult
from rggan.data.prepare.run import PARALLEL_MIN_SLICES
from rggan.data.prepare.samples import SAMPLE_FILES
from rggan.intensity import hu_to_unit, unit_to_hu

__all__ = [
    "PrepareConfig",
    "PatientRecord",
    "PrepareResult",
    "prepare_dataset",
    "find_rna_file",
    "hu_to_unit",
    "unit_to_hu",
    "nodule_crop_box",
    "lung_mask",
    "find_background_patches",
    "RNA_PATTERNS",
    "MANIFEST_VERSION",
    "PARALLEL_MIN_SLICES",
    "SAMPLE_FILES",
]
