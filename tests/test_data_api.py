"""The old module paths of rggan.data keep every public name they had before the split into packages."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PUBLIC = {
    "rggan.data.dicom": [
        "CTGeometry", "CT_SOP_CLASSES", "DicomIndex", "FileProblem", "InstanceInfo", "PADDING_HU", "PET_SOP_CLASSES",
        "SEG_SOP_CLASS", "SegReferences", "SeriesInfo", "classify_instance", "decode_seg_frames", "find_patient_segs",
        "index_dicom_tree", "read_ct_geometry", "read_ct_slices", "read_ct_volume", "read_seg_mask",
        "resolve_referenced_ct", "seg_frame_positions", "seg_references",
    ],
    "rggan.data.prepare": [
        "MANIFEST_VERSION", "PARALLEL_MIN_SLICES", "PatientRecord", "PrepareConfig", "PrepareResult", "RNA_PATTERNS",
        "SAMPLE_FILES", "find_background_patches", "find_rna_file", "hu_to_unit", "lung_mask", "nodule_crop_box",
        "prepare_dataset", "unit_to_hu",
    ],
    "rggan.data.rna": ["GeneTransform", "GeneTransformConfig", "RNATable", "ZHOU_METAGENES", "read_rna_table"],
    "rggan.data.dataset": [
        "ARRAY_KEYS", "BATCH_KEYS", "DATALIST_NAME", "RGGANDataset", "ensure_prepared", "load_datalist",
        "load_transform", "read_datalist_info", "sample_datalist",
    ],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_old_module_paths_export_their_names(module):
    mod = importlib.import_module(module)
    assert [n for n in PUBLIC[module] if not hasattr(mod, n)] == []


def test_reader_modules_import_without_torch():
    """The DICOM and RNA readers, the datalist readers and the prepare workers' module never import torch."""
    code = (
        "import sys; import rggan.data.dicom, rggan.data.rna, rggan.data.datalist, rggan.data.prepare.extract; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
