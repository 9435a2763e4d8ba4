"""rggan.intensity: one HU window, read from the prepared dataset, used by features, inference and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rggan.handlers import GeneratedNoduleWriter

from rggan.features import nodule_features
from rggan.intensity import DEFAULT_HU_RANGE, hu_per_unit, hu_range_of, hu_to_unit, unit_to_hu


def test_prepared_demo_records_its_window_and_round_trips(prepared_demo):
    assert hu_range_of(prepared_demo.output_dir) == DEFAULT_HU_RANGE == (-1000.0, 500.0)
    hu = np.array([-2000.0, -1000.0, -250.0, 500.0, 900.0])
    unit = hu_to_unit(hu, (-1200.0, 600.0))
    np.testing.assert_allclose(unit, [-1.0, -1 + 400 / 1800, -1 + 1900 / 1800, -1 + 3400 / 1800, 1.0], rtol=1e-6)
    np.testing.assert_allclose(unit_to_hu(unit, (-1200.0, 600.0)), np.clip(hu, -1200, 600), rtol=1e-5)


def test_features_and_writer_follow_the_datalist_window(tmp_path):
    (tmp_path / "datalist.json").write_text(json.dumps({"hu_range": [-1200.0, 600.0]}))
    hu_range = hu_range_of(tmp_path)
    assert hu_range == (-1200.0, 600.0)
    image = torch.zeros(1, 1, 16, 16)  # 0 on the [-1, 1] scale: the window's centre
    mask = torch.full_like(image, -1.0)
    mask[..., 4:12, 4:12] = 1.0
    assert float(nodule_features(image, mask, hu_range=hu_range)["mean_hu"][0]) == pytest.approx(-300.0)
    assert float(nodule_features(image, mask)["mean_hu"][0]) == pytest.approx(-250.0)
    writer = GeneratedNoduleWriter(tmp_path / "out", previews=False, hu_range=hu_range)
    batch = {"id": ["p_s0"], "patient": ["p"], "sample": [0], "background": ["prepared"], "spacing": [[1.0, 1.0]]}
    writer.write(batch, image, mask)
    import nibabel as nib

    written = nib.load(str(next((writer._staging / "p").glob("*_image.nii.gz")))).get_fdata()
    assert np.allclose(written, -300.0)
    writer.cleanup()


def test_no_other_module_writes_the_window():
    from pathlib import Path

    import rggan.handlers

    import rggan

    roots = [Path(rggan.__file__).parent, Path(rggan.handlers.__file__).parent]  # the core and handlers/
    offenders = [
        str(p) for root in roots for p in root.rglob("*.py")
        if p.name != "intensity.py" and any(s in p.read_text() for s in ("750.0", "HU_MIN", "hu_max: float = 500"))
    ]  # fmt: skip
    assert offenders == []


def test_hu_per_unit_is_the_slope_of_unit_to_hu():
    """Intensity differences on the [-1, 1] scale convert to HU by :func:`hu_per_unit` (750 by default)."""
    assert hu_per_unit() == 750.0 and hu_per_unit((-1200.0, 600.0)) == 900.0
    x = np.array([-0.3, 0.1, 0.8])
    for window in (DEFAULT_HU_RANGE, (-1200.0, 600.0)):
        np.testing.assert_allclose(np.diff(unit_to_hu(x, window)), np.diff(x) * hu_per_unit(window), rtol=1e-12)
