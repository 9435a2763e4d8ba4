"""The training bundle (bundle/configs/train.yaml + demo.yaml) through monai.bundle.ConfigWorkflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from rggan.handlers import find_latest_checkpoint

from tests._prepared import make_prepared
from tests.conftest import modes

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"
CONFIG_FILES = [str(CONFIGS / "train.yaml"), str(CONFIGS / "demo.yaml")]
TINY = {
    "batch_size": 4,
    "g_n_feat": 2,
    "d_n_feat": 2,
    "embed_dim": 8,
    "g_ls": 4,
    "num_workers": 0,
    "log_interval": 1,
    "sample_interval": 1,
    "num_samples": 2,
}
N_TRAIN = 8  # -> 2 iterations per epoch at batch 4


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prep"), n_train=N_TRAIN, n_val=2, image_size=32, num_genes=12)


@pytest.fixture(scope="module")
def meta_file():
    return str(CONFIGS / "metadata.json")


def run_workflow(meta_file, prepared, output_dir, **override):
    wf = ConfigWorkflow(
        config_file=CONFIG_FILES,
        meta_file=meta_file,
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        dataset_dir=str(prepared),
        output_dir=str(output_dir),
        **{**TINY, **override},
    )
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    return wf


def scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list] = {}
    images: set[str] = set()
    for f in sorted(Path(log_dir).iterdir()):
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        images.update(acc.Tags()["images"])
    return out, images


def test_train_one_epoch_logs_everything_and_is_reproducible(meta_file, prepared, tmp_path):
    wf = run_workflow(meta_file, prepared, tmp_path / "a", epochs=1)
    assert wf.trainer.state.iteration == N_TRAIN // 4 and wf.trainer.state.epoch == 1
    tags, images = scalars(tmp_path / "a" / "tensorboard")
    # paired terms: on by default
    g_terms = {"g_isc", "g_i", "g_is", "g_bg", "g_rec", "g_tex", "g_size", "g_binary", "g_shape", "g_stray"}
    d_terms = {f"d_{p}_{h}" for p in ("real", "wrong", "wrongmask", "fake") for h in ("isc", "i", "is")}
    epoch_metrics = {"lr_g", "lr_d", "time_iteration_s", "time_data_s", "time_epoch_s", "active_genes"}
    assert set(tags) == {"g_loss", "d_loss"} | g_terms | d_terms | epoch_metrics
    assert [s for s, _ in tags["g_loss"]] == [1, 2] and tags["lr_g"] == [(1, pytest.approx(1e-4))]
    from rggan.data.dataset import read_datalist_info

    assert tags["active_genes"] == [(1, read_datalist_info(prepared)["num_genes"])]  # one epoch zeroes no gene
    assert images == {"samples"}
    assert (tmp_path / "a" / "samples" / "samples_epoch=1.png").is_file()
    ckpt = torch.load(find_latest_checkpoint(tmp_path / "a" / "models"), weights_only=True)
    assert set(ckpt) == {
        "trainer",
        "generator",
        "discriminator",
        "ema_generator",
        "g_optimizer",
        "d_optimizer",
        "g_lr_scheduler",
        "d_lr_scheduler",
        "g_scaler",
        "d_scaler",
    }
    assert ckpt["generator"].keys() == ckpt["ema_generator"].keys()

    # same seed, fresh output folder: the same loss sequence
    run_workflow(meta_file, prepared, tmp_path / "b", epochs=1)
    tags_b, _ = scalars(tmp_path / "b" / "tensorboard")
    assert tags_b["g_loss"] == tags["g_loss"] and tags_b["d_loss"] == tags["d_loss"]


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_switch_sets_both_backends(meta_file, prepared, tmp_path, tf32):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        wf = ConfigWorkflow(
            config_file=CONFIG_FILES,
            meta_file=meta_file,
            workflow_type="train",
            dataset_dir=str(prepared),
            output_dir=str(tmp_path),
            **{**TINY, "tf32": tf32},
        )
        wf.initialize()
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (tf32, tf32)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_rerun_resumes_from_latest_checkpoint(meta_file, prepared, tmp_path):
    run_workflow(meta_file, prepared, tmp_path, epochs=1, save_interval=1)
    wf = run_workflow(meta_file, prepared, tmp_path, epochs=2, save_interval=1)
    per_epoch = N_TRAIN // 4
    assert wf.trainer.state.iteration == 2 * per_epoch and wf.trainer.state.epoch == 2
    assert sorted(os.listdir(tmp_path / "models")) == [
        f"checkpoint_epoch=1_iteration={per_epoch}.pt",
        f"checkpoint_epoch=2_iteration={2 * per_epoch}.pt",
        "model.pt",  # the final EMA generator (bundle convention)
    ]
    tags, _ = scalars(tmp_path / "tensorboard")
    assert [s for s, _ in tags["g_loss"]] == [1, 2, 3, 4]  # the counter continued
    # --resume False starts again from scratch
    wf = run_workflow(meta_file, prepared, tmp_path, epochs=1, resume="false")  # as `--resume false` arrives
    assert wf.trainer.state.iteration == per_epoch


def test_nan_step_leaves_model_checkpoints_and_ema_intact(meta_file, prepared, tmp_path):
    """A non-finite loss stops training; the previous model.pt and checkpoints stay, the EMA skips the step."""
    out = tmp_path / "out"
    run_workflow(meta_file, prepared, out, epochs=1, save_interval=1)
    before = {p.name: p.read_bytes() for p in (out / "models").iterdir()}
    assert "model.pt" in before
    # test-only overlay: NaN gene vectors in the batch of iteration 4 (the 2nd step of the resumed run)
    poison = tmp_path / "poison.yaml"
    poison.write_text(
        "+initialize:\n"
        "  - \"$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_STARTED(once=4), "
        "lambda e: e.state.batch['rna'].fill_(float('nan')))\"\n"
    )
    wf = ConfigWorkflow(
        config_file=[*CONFIG_FILES, str(poison)], meta_file=meta_file, workflow_type="train",
        dataset_dir=str(prepared), output_dir=str(out), **{**TINY, "epochs": 3, "save_interval": 1},
    )  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    assert wf.trainer.state.iteration == 4 and wf.trainer.should_terminate
    assert not all(torch.isfinite(p).all() for p in wf.trainer.g_network.parameters())  # G itself diverged
    ema = wf.parser.get_parsed_content("train#ema").ema_model
    assert all(torch.isfinite(t).all() for t in ema.state_dict().values())  # weights and BatchNorm statistics
    after = {p.name: p.read_bytes() for p in (out / "models").iterdir()}
    assert after == before  # no new checkpoint, model.pt byte-identical


def test_amp_grad_scaler_state_is_checkpointed_and_restored(meta_file, prepared, tmp_path):
    """float16 autocast with loss scaling (CPU here): the GradScalers' state is saved and restored on resume."""
    amp = {"amp": True, "train#trainer#amp_kwargs": {"dtype": "$torch.float16"}}
    run_workflow(meta_file, prepared, tmp_path, epochs=1, **amp)
    ckpt = torch.load(find_latest_checkpoint(tmp_path / "models"), weights_only=True)
    fresh = torch.amp.GradScaler("cpu").state_dict()
    assert ckpt["g_scaler"].keys() == fresh.keys() and ckpt["g_scaler"] != fresh  # the scaler has moved
    wf = run_workflow(meta_file, prepared, tmp_path, epochs=1, **amp)  # resumes an already finished run
    assert wf.trainer.g_scaler.state_dict() == ckpt["g_scaler"]
    assert wf.trainer.d_scaler.state_dict() == ckpt["d_scaler"]


def test_cli_from_another_directory(meta_file, prepared, tmp_path):
    """`python -m monai.bundle run training` works from any directory, without PYTHONPATH or --bundle_root."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    args = [f"--{k}={v}" for k, v in TINY.items()]
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", str(CONFIG_FILES), "--meta_file", meta_file,
        "--dataset_dir", str(prepared), "--output_dir", str(tmp_path / "out"), "--epochs", "1", *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Epoch: 1/1, Iter: 2/2 -- d_loss:" in proc.stdout
    assert find_latest_checkpoint(tmp_path / "out" / "models").endswith("checkpoint_epoch=1_iteration=2.pt")


def test_non_terminal_log_is_short_and_clean(meta_file, tmp_path):
    """A log file gets losses every log interval, an epoch summary every epochs // 5, no bars, no repeats."""
    from rggan.data.demo import generate_demo_dataset

    raw = tmp_path / "raw"
    generate_demo_dataset(raw, patients=8, extras=False, ct_shape=(16, 64, 64), n_genes=20)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    settings = {**TINY, "batch_size": 6, "epochs": 40, "log_interval": 4, "sample_interval": 5, "save_interval": 10}
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIG_FILES),
        "--meta_file", meta_file, "--dataset_dir", str(raw), "--output_dir", str(tmp_path / "out"),
        *[f"--{k}={v}" for k, v in settings.items()],
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    lines = log.splitlines()
    assert "\r" not in log and not any("prepare:" in line for line in lines)  # no tqdm bar off a terminal
    assert sum("-- d_loss:" in line for line in lines) == 40 // 4  # 1 iteration per epoch (6 training patients)
    assert [line.split(" - ")[-1].split(" Metrics")[0] for line in lines if "] Metrics --" in line] == [
        f"Epoch[{e}]" for e in (8, 16, 24, 32, 40)
    ]
    assert not any("Complete. Time taken" in line for line in lines)  # Ignite's per-epoch line
    assert sum("nvImageCodec" in line for line in lines) <= 1
    assert sum("saved checkpoint" in line for line in lines) == 4 and "prepared 8 patients" in log
    assert len(lines) <= 60, log


def test_raw_download_is_prepared_then_trained(meta_file, tmp_path):
    """A dataset_dir without datalist.json is prepared into <output_dir>/prepared first (demo download)."""
    from rggan.data.demo import generate_demo_dataset

    raw = tmp_path / "raw"
    generate_demo_dataset(raw, patients=6, extras=False, ct_shape=(16, 64, 64), n_genes=20)
    old_umask = os.umask(0o022)
    try:
        wf = run_workflow(meta_file, raw, tmp_path / "out", epochs=1, batch_size=2)
    finally:
        os.umask(old_umask)
    prepared = tmp_path / "out" / "prepared"
    assert (prepared / "datalist.json").is_file() and (prepared / "report.txt").is_file()
    assert wf.trainer.state.iteration >= 1
    assert find_latest_checkpoint(tmp_path / "out" / "models") is not None
    # every output honours the umask: 0644 files (datalist, reports, npy, checkpoints, model.pt), 0755 folders
    written = modes(tmp_path / "out")
    assert {"prepared/datalist.json", "prepared/samples", "models/model.pt", "samples"} <= set(written)
    wrong = {k: oct(m) for k, m in written.items() if m != (0o755 if (tmp_path / "out" / k).is_dir() else 0o644)}
    assert wrong == {}


def test_training_seed_never_reprepares_or_changes_the_split(meta_file, tmp_path):
    """The split belongs to prepare (`prepare_seed`, recorded in datalist.json); `--seed` only seeds training."""
    from rggan.data.demo import generate_demo_dataset

    raw = tmp_path / "raw"
    generate_demo_dataset(raw, patients=8, extras=False, ct_shape=(16, 64, 64), n_genes=20)
    out = tmp_path / "out"
    run_workflow(meta_file, raw, out, epochs=1, batch_size=2, seed=1)
    datalist = out / "prepared" / "datalist.json"
    before, stamp = datalist.read_bytes(), datalist.stat().st_mtime_ns
    assert json.loads(before)["seed"] == 12345  # prepare_seed's default, not the training seed
    wf = run_workflow(meta_file, raw, out, epochs=2, batch_size=2, seed=2)  # resumed with another seed
    assert wf.trainer.state.epoch == 2
    assert datalist.read_bytes() == before and datalist.stat().st_mtime_ns == stamp  # not even re-prepared
    # prepare_seed does choose the split
    run_workflow(meta_file, raw, tmp_path / "other", epochs=1, batch_size=2, prepare_seed=7)
    other = json.loads((tmp_path / "other" / "prepared" / "datalist.json").read_text())
    assert other["seed"] == 7


@pytest.mark.slow
def test_multi_gpu_overlay_with_gloo(meta_file, prepared, tmp_path):
    """multi_gpu_train.yaml with two CPU processes (gloo): rank 0 alone writes; a rerun resumes."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    files = [*CONFIG_FILES, str(CONFIGS / "multi_gpu_train.yaml")]
    args = [f"--{k}={v}" for k, v in {**TINY, "batch_size": 2, "save_interval": 1}.items()]

    def run(epochs):
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
            "-m", "monai.bundle", "run", "--config_file", str(files), "--meta_file", meta_file,
            "--dataset_dir", str(prepared), "--output_dir", str(tmp_path), "--epochs", str(epochs), *args,
        ]  # fmt: skip
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    run(1)
    proc = run(2)
    per_epoch = N_TRAIN // 2 // 2  # 2 ranks, batch 2 per rank
    assert f"Epoch: 2/2, Iter: {per_epoch}/{per_epoch}" in proc.stdout
    assert sorted(os.listdir(tmp_path / "models")) == [
        f"checkpoint_epoch=1_iteration={per_epoch}.pt",
        f"checkpoint_epoch=2_iteration={2 * per_epoch}.pt",
        "model.pt",  # the final EMA generator (bundle convention)
    ]
    assert len(os.listdir(tmp_path / "tensorboard")) == 2  # one file per run, none from rank 1


def test_multi_gpu_ranks_see_disjoint_demo_samples(meta_file, prepared_demo, tmp_path):
    """Two gloo ranks train one epoch on the prepared demo data; their batches hold disjoint patients."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    # test-only overlay: every rank appends the patients of each of its batches to its own file
    record = tmp_path / "record.yaml"
    record.write_text(
        "+initialize:\n"
        "  - \"$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED, lambda e: "
        "open(os.path.join(@output_dir, f'seen_rank{dist.get_rank()}.txt'), 'a')"
        ".write(''.join(p + chr(10) for p in e.state.output['patient'])))\"\n"
    )
    files = [*CONFIG_FILES, str(CONFIGS / "multi_gpu_train.yaml"), str(record)]
    info = json.loads((prepared_demo.output_dir / "datalist.json").read_text())
    n_train = len(info["training"])
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "--config_file", str(files), "--meta_file", meta_file,
        "--dataset_dir", str(prepared_demo.output_dir), "--output_dir", str(tmp_path / "out"), "--epochs", "1",
        "--image_size", str(info["image_size"]), "--batch_size", "2", "--sample_interval", "0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = [(tmp_path / "out" / f"seen_rank{r}.txt").read_text().split() for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == (n_train // 2) // 2 * 2  # each rank: its half, in full batches
    assert set(seen[0]).isdisjoint(seen[1])
    assert set(seen[0]) | set(seen[1]) <= {e["patient"] for e in info["training"]}
    written = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file() and "seen_rank" not in p.name)
    assert len([n for n in written if n.startswith("events.out.tfevents")]) == 1  # rank 0 only
    assert "model.pt" in written


def _train_parser(**override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(CONFIG_FILES)
    parser.update(override)
    return parser


def test_resolving_the_config_prepares_nothing(prepared, tmp_path):
    """`prepared_dir` is a path known without preparing; the `prepare` step in `initialize` does the work."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "some_file.dcm").write_bytes(b"not read")
    out = tmp_path / "out"
    parser = _train_parser(dataset_dir=str(raw), output_dir=str(out))
    assert parser.get_parsed_content("prepared_dir") == str(out / "prepared")
    assert not out.exists()  # resolving wrote nothing
    assert parser["initialize"][-1] == "$@prepare.run()"  # `initialize` prepares, after seeding
    parser = _train_parser(dataset_dir=str(prepared), output_dir=str(out))
    assert parser.get_parsed_content("prepared_dir") == str(prepared)  # a prepared folder is used as it is
    assert parser.get_parsed_content("prepare").run() == str(prepared)
    assert not out.exists()


@pytest.mark.parametrize(
    ("resume", "resumes"),
    [(True, True), ("true", True), ("yes", True), ("1", True), (False, False), ("false", False), ("False", False),
     ("no", False), ("0", False)],
)  # fmt: skip
def test_resume_switch_is_a_boolean(tmp_path, resume, resumes):
    """`--resume` arrives as a bool or a string (`--resume false`); MONAI's str2bool reads both."""
    ckpt = tmp_path / "models" / "checkpoint_epoch=1_iteration=2.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    parser = _train_parser(output_dir=str(tmp_path), resume=resume)
    assert parser.get_parsed_content("resume_ckpt") == (str(ckpt) if resumes else None)
