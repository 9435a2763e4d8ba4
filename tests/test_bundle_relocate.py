"""The bundle is relocatable and writes nothing inside itself by default (issue 12, item 11)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from rggan import paths
from tests._prepared import make_prepared
from tests.conftest import tree_snapshot
from tests.test_bundle_train import TINY

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the bundle folder somewhere else, as a user who downloaded it would have."""
    dst = tmp_path / "zoo" / "rggan_bundle"
    shutil.copytree(BUNDLE, dst, ignore=shutil.ignore_patterns("ModelOut"))
    return dst


def test_default_paths_never_lie_inside_the_bundle(copy, tmp_path):
    assert paths.bundle_root(cwd=copy) == str(copy)  # run from inside a copy: that copy
    installed = Path(paths.bundle_root(cwd=tmp_path))  # elsewhere: the bundle installed with rggan
    assert (installed / "configs" / "train.yaml").is_file() and installed != copy
    for cwd in (copy, copy / "configs"):
        assert paths.default_output_dir(copy, cwd=cwd) == str(copy.parent / "ModelOut")
        assert paths.default_data_dir(copy, cwd=cwd) == str(copy.parent / "data")
    assert paths.default_output_dir(copy, cwd=tmp_path) == str(tmp_path / "ModelOut")
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        _no_bundle(tmp_path)


def _no_bundle(tmp_path: Path) -> None:
    """bundle_root with no bundle anywhere: the error names the places searched and the fix."""
    from unittest import mock

    with mock.patch.object(paths, "_candidates", lambda: [tmp_path / "nowhere"]):
        paths.bundle_root(cwd=tmp_path)


@pytest.mark.parametrize("config", ["train.yaml", "inference.yaml", "evaluate.yaml", "radiogenomic_map.yaml"])
def test_bundle_root_override_moves_the_defaults(copy, tmp_path, monkeypatch, config):
    """`--bundle_root DIR` from another directory: the defaults follow, and stay outside the bundle."""
    monkeypatch.chdir(tmp_path)
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / config))
    parser["bundle_root"] = str(copy)
    key = "output_dir" if config == "train.yaml" else "train_output_dir"
    out = Path(parser.get_parsed_content(key))
    assert out == tmp_path / "ModelOut" and copy not in out.parents


def test_relocated_bundle_trains_from_inside_and_writes_nothing_in_it(copy, tmp_path):
    """Copy bundle/ elsewhere, run a tiny training from inside it: it works, outputs land beside the copy."""
    prepared = make_prepared(tmp_path / "prepared", n_train=8, n_val=2, image_size=32, num_genes=12)
    before = tree_snapshot(copy)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", "['configs/train.yaml','configs/demo.yaml']", "--meta_file", "configs/metadata.json",
        "--logging_file", "configs/logging.conf", "--dataset_dir", str(prepared), "--epochs", "1",
        *[f"--{k}={v}" for k, v in TINY.items()],
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (copy.parent / "ModelOut" / "models" / "model.pt").is_file()
    assert tree_snapshot(copy) == before  # nothing written, changed or left inside the bundle


@pytest.mark.slow
def test_built_wheel_ships_the_bundle_and_trains_from_it(tmp_path):
    """The wheel (not the source tree) carries the bundle: built, installed into a fresh environment that sees
    only the dependencies, it finds its configs as package data and trains the demo from an empty folder."""
    repo = Path(__file__).resolve().parents[1]
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(repo)]
    subprocess.run(build, check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("rggan-*.whl")
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([py, "-c", purelib], text=True).strip())
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "deps.pth").write_text("\n".join(deps) + "\n")  # torch, monai, ...: a plain path line, no editable finder
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    where = subprocess.check_output(
        [py, "-c", "import rggan, rggan.paths; print(rggan.__file__); print(rggan.paths.bundle_root())"],
        cwd=work, env=env, text=True,
    ).split()  # fmt: skip
    assert all(Path(w).is_relative_to(site) for w in where), where  # the installed copy, not the source tree
    bundle = Path(where[1])
    prepared = make_prepared(tmp_path / "prepared", n_train=8, n_val=2, image_size=32, num_genes=12)
    cmd = [
        py, "-m", "monai.bundle", "run", "training",
        "--config_file", f"['{bundle}/configs/train.yaml','{bundle}/configs/demo.yaml']",
        "--dataset_dir", str(prepared), "--output_dir", "out", "--epochs", "1",
        *[f"--{k}={v}" for k, v in TINY.items()],
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (work / "out" / "models" / "model.pt").is_file()
