"""SIGKILL a training run (mid-epoch and while a checkpoint is being written), re-run it: it resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rggan.handlers import find_latest_checkpoint
from rggan.handlers.checkpoint import CHECKPOINT_PATTERN

from rggan.train_cli import bundle_dir
from tests._prepared import make_prepared

N_TRAIN = 8  # 4 iterations per epoch at batch 2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("kill") / "p", image_size=32, n_train=N_TRAIN, n_val=2, num_genes=12)


def _command(prepared: Path, out: Path, epochs: int, g_n_feat: int) -> list[str]:
    root = bundle_dir() / "configs"
    configs = f"['{root / 'train.yaml'}','{root / 'demo.yaml'}']"
    return [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir", str(prepared),
        "--output_dir", str(out), "--epochs", str(epochs), "--batch_size", "2", "--save_interval", "1",
        "--sample_interval", "1000", "--g_n_feat", str(g_n_feat), "--num_workers", "0",
    ]  # fmt: skip


def _checkpoints(models: Path) -> list[Path]:
    return sorted(p for p in models.glob("*.pt") if CHECKPOINT_PATTERN.match(p.name)) if models.is_dir() else []


def _assert_all_checkpoints_load(models: Path) -> None:
    for path in _checkpoints(models):
        state = torch.load(path, map_location="cpu", weights_only=True)  # a truncated file raises here
        assert {"trainer", "generator", "discriminator", "ema_generator", "g_optimizer", "d_optimizer"} <= set(state)


def _kill_when(proc: subprocess.Popen, condition, timeout: float = 240.0) -> bool:
    """Poll ``condition()`` and SIGKILL the process as soon as it holds; False if the run ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    return False


def _trainer_state(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["trainer"]


def test_sigkill_mid_epoch_then_rerun_resumes(prepared, tmp_path):
    out = tmp_path / "out"
    models = out / "models"
    cmd = _command(prepared, out, epochs=200, g_n_feat=8)
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # two checkpoints exist, then the next epoch is running: kill it in the middle
    assert _kill_when(proc, lambda: len(_checkpoints(models)) >= 2)
    _assert_all_checkpoints_load(models)
    latest = find_latest_checkpoint(models)
    before = _trainer_state(latest)
    assert before["iteration"] == before["epoch_length"] * int(CHECKPOINT_PATTERN.match(Path(latest).name)["epoch"])

    epochs = int(CHECKPOINT_PATTERN.match(Path(latest).name)["epoch"]) + 2
    done = subprocess.run(_command(prepared, out, epochs, 8), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Restored all variables from" in done.stdout + done.stderr
    after = _trainer_state(find_latest_checkpoint(models))
    assert after["iteration"] == before["iteration"] + 2 * before["epoch_length"]  # counters continued
    _assert_all_checkpoints_load(models)


def test_sigkill_while_saving_never_leaves_a_truncated_checkpoint(prepared, tmp_path):
    out = tmp_path / "out"
    models = out / "models"

    def saving() -> bool:
        """A checkpoint is being written (ignite's atomic DiskSaver: temporary file, then rename) after one
        complete checkpoint exists, so every run also leaves something to resume from."""
        names = [p.name for p in models.iterdir()] if models.is_dir() else []
        complete = [n for n in names if CHECKPOINT_PATTERN.match(n)]
        return bool(complete) and len(complete) < len(names)

    caught = 0
    for _ in range(2):  # each run resumes from the previous one and is killed during its next save
        # wide G (g_n_feat 64): checkpoints of ~100 MB take long enough to be caught while being written
        proc = subprocess.Popen(
            _command(prepared, out, epochs=400, g_n_feat=64), cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        caught += _kill_when(proc, saving)
        _assert_all_checkpoints_load(models)
    assert caught >= 1, "never caught the run while it was writing a checkpoint"
    latest = find_latest_checkpoint(models)
    assert latest is not None
    before = _trainer_state(latest)
    epochs = int(CHECKPOINT_PATTERN.match(Path(latest).name)["epoch"]) + 1
    done = subprocess.run(_command(prepared, out, epochs, 64), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _trainer_state(find_latest_checkpoint(models))
    assert after["iteration"] == before["iteration"] + before["epoch_length"]
