"""`rggan train`: the original research code's training flags, mapped onto the bundle, reach the trainer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow

from rggan.system import available_cpus, default_num_workers
from rggan.train_cli import FLAG_TO_CONFIG, build_parser, bundle_dir, overrides_from_args
from tests._prepared import make_prepared

# The original research code's training flags: flag -> default (the contract users know).
SEED_TABLE = {
    "device": "cuda:0", "ep": 500, "bs": 16, "seed": 12345, "input": "./data", "output": "./ModelOut",
    "save_interval": 50, "g_lr": 0.0001, "d_lr": 0.0001, "g_n_feat": 32, "d_n_feat": 64, "embed_dim": 128,
    "g_ls": 10, "code_kernel": 8, "c_i": 8.0, "c_is": 1.0, "c_isc": 10.0, "c_bg": 100, "workers": 4, "cr": 1.0,
}  # fmt: skip


def test_every_seed_flag_exists_with_the_seed_default_in_cli_and_bundle():
    parser = build_parser()
    flags = {a.dest for a in parser._actions}
    assert set(SEED_TABLE) <= flags
    args = parser.parse_args([])
    assert args.input == SEED_TABLE["input"] and args.output == SEED_TABLE["output"]
    train = yaml.safe_load((bundle_dir() / "configs" / "train.yaml").read_text())
    for flag, (config_id, _, default, _) in FLAG_TO_CONFIG.items():
        assert default == SEED_TABLE[flag], flag
        if flag == "workers":  # sized to the machine: the seed's 4 wherever 4 workers leave a CPU to training
            assert train[config_id] == "$rggan.system.default_num_workers()"
            assert default_num_workers(cpus=8) == SEED_TABLE[flag] == default_num_workers(cpus=5)
            continue
        assert train[config_id] == SEED_TABLE[flag], (flag, config_id, train[config_id])


def test_default_num_workers_leaves_a_cpu_to_training():
    assert [default_num_workers(cpus=n) for n in (1, 2, 3, 4, 5, 64)] == [0, 1, 2, 3, 4, 4]
    assert default_num_workers(max_workers=8, cpus=64) == 8 and default_num_workers(max_workers=0, cpus=8) == 0
    assert 0 <= default_num_workers() < max(available_cpus(), 2)


def test_device_defaults_to_cuda_else_cpu_with_a_notice():
    notices = []
    overrides = overrides_from_args(build_parser().parse_args([]), notice=notices.append)
    if torch.cuda.is_available():
        assert overrides["device"] == "$torch.device('cuda:0')" and not notices
    else:
        assert overrides["device"] == "$torch.device('cpu')" and "CPU" in notices[0]
    assert overrides_from_args(build_parser().parse_args(["--device", "cpu"]))["device"] == "$torch.device('cpu')"


def test_unset_flags_leave_bundle_values_and_set_flags_override():
    args = build_parser().parse_args(["--ep", "3", "--c_bg", "0", "--set", "amp=true", "--input", "x"])
    overrides = overrides_from_args(args, notice=lambda m: None)
    assert overrides["epochs"] == 3 and overrides["c_bg"] == 0 and overrides["amp"] is True
    assert "g_n_feat" not in overrides and "batch_size" not in overrides
    assert overrides["dataset_dir"] == str(Path("x").resolve())


@pytest.fixture(scope="module")
def tiny_prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prep") / "p", image_size=32, n_train=6, n_val=2, num_genes=12)


def test_every_flag_reaches_the_trainer(tiny_prepared, tmp_path):
    argv = [
        "--device", "cpu", "--ep", "7", "--bs", "3", "--seed", "11", "--input", str(tiny_prepared),
        "--output", str(tmp_path / "out"), "--save_interval", "5", "--g_lr", "0.0003", "--d_lr", "0.0002",
        "--g_n_feat", "16", "--d_n_feat", "8", "--embed_dim", "24", "--g_ls", "6", "--code_kernel", "2",
        "--c_i", "1.5", "--c_is", "2.5", "--c_isc", "3.5", "--c_bg", "0", "--workers", "0", "--cr", "0.5",
    ]  # fmt: skip
    overrides = overrides_from_args(build_parser().parse_args(argv))
    root = bundle_dir()
    wf = ConfigWorkflow(
        config_file=[str(root / "configs" / "train.yaml"), str(root / "configs" / "demo.yaml")],
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        workflow_type="train",
        **overrides,
    )
    wf.initialize()
    get = wf.parser.get_parsed_content
    trainer = get("train#trainer")
    assert trainer.state.max_epochs == 7
    assert trainer.data_loader.batch_size == 3 and trainer.data_loader.num_workers == 0
    assert get("seed") == 11
    assert math.isclose(trainer.g_optimizer.param_groups[0]["lr"], 3e-4)
    assert math.isclose(trainer.d_optimizer.param_groups[0]["lr"], 2e-4)
    g, d = trainer.g_network, trainer.d_network
    assert (g.g_n_feat, g.embed_dim, g.latent_size, g.code_kernel) == (16, 24, 6, 2)
    assert d.d_n_feat == 8 and d.embed_dim == 24
    assert trainer.latent_shape == 6
    gloss, dloss = get("gloss"), get("dloss")
    assert gloss.c_bg == 0
    assert gloss.coefficients == dloss.coefficients == {"isc": 3.5, "i": 1.5, "is": 2.5}
    assert get("train#checkpoint_saver").save_interval == 5
    assert get("train#dataset").cache.cache_num == 3  # 6 training patients x 0.5
    assert Path(get("output_dir")) == tmp_path / "out"
    assert get("device") == torch.device("cpu")


def test_train_on_an_empty_folder_is_one_clear_error(tmp_path, capsys):
    from rggan.cli import main

    (tmp_path / "empty").mkdir()
    argv = ["train", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "out"), "--device", "cpu"]
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert "holds no data" in err and "datalist.json" in err and "GSE103584" in err
