"""The bundle's metadata passes MONAI's verify_metadata offline, against the vendored Model-Zoo schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from monai.bundle import verify_metadata

import rggan

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
SCHEMA = BUNDLE / "schema" / "meta_schema_20240725.json"


def test_verify_metadata_offline(tmp_path):
    schema = tmp_path / "schema.json"  # an existing file at --filepath: MONAI skips the download
    shutil.copy(SCHEMA, schema)
    verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(schema))
    assert schema.read_bytes() == SCHEMA.read_bytes()


def test_metadata_version_changelog_and_package():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert meta["schema"].endswith(SCHEMA.name)
    assert meta["required_packages_version"]["rggan"] == rggan.__version__
    assert set(meta["network_data_format"]["inputs"]) == {"rna", "latent", "base"}
    assert set(meta["network_data_format"]["outputs"]) == {"image", "mask"}


def test_bundle_has_the_required_files():
    for rel in ("LICENSE", "configs/metadata.json", "configs/train.yaml", "configs/inference.yaml",
                "configs/multi_gpu_train.yaml", "configs/logging.conf", "docs/README.md"):  # fmt: skip
        assert (BUNDLE / rel).is_file(), rel
