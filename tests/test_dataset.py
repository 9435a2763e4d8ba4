"""rggan.data.dataset: datalist reading and the cached RG-GAN dataset (wrong pairs, random bases)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from monai.data import DataLoader

from rggan.data.dataset import (
    BATCH_KEYS,
    RGGANDataset,
    ensure_prepared,
    expression_noise,
    load_datalist,
    read_datalist_info,
    sample_datalist,
)
from rggan.errors import InputError, NoUsableDataError
from tests._prepared import make_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prep"), n_train=6, n_val=2, image_size=32, num_genes=12, num_bases=3)


def _patient_number(pid: str) -> int:
    return int(pid.split("-")[1])


def test_load_datalist_resolves_paths(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths must not depend on the working directory
    items = load_datalist(prepared)
    assert len(items) == 6 and len(load_datalist(prepared, "validation")) == 2
    for item in items:
        for key in ("image", "mask", "bases", "rna"):
            assert item[key].startswith(str(prepared.resolve())) and np.load(item[key]).dtype == np.float32
    info = read_datalist_info(prepared)
    assert info["image_size"] == 32 and info["num_genes"] == 12 and "training" not in info


def test_missing_or_empty_datalist_is_a_clear_error(tmp_path, prepared):
    with pytest.raises(NoUsableDataError, match=r"rggan prepare") as err:
        load_datalist(tmp_path)
    assert str(tmp_path) in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "datalist.json").write_text(json.dumps({"image_size": 32, "training": []}))
    with pytest.raises(NoUsableDataError, match="no 'training' samples"):
        load_datalist(empty)
    assert load_datalist(empty, "validation", required=False) == []


def test_sample_datalist_validation_first(prepared):
    items = sample_datalist(prepared, 4)
    assert [d["patient"] for d in items] == ["R01-006", "R01-007", "R01-000", "R01-001"]


def test_ensure_prepared(prepared, tmp_path):
    assert ensure_prepared(prepared, tmp_path / "unused", image_size=32) == str(prepared)
    with pytest.raises(InputError, match="image_size=32"):
        ensure_prepared(prepared, tmp_path / "unused", image_size=64)
    with pytest.raises(InputError, match="does not exist"):
        ensure_prepared(tmp_path / "nope", tmp_path / "unused")
    # a folder prepared without slice-averaged margins: training that asks for them is told how to get them
    with pytest.raises(InputError, match="margin_mm=0.*`rggan prepare --margin-mm 8`"):
        ensure_prepared(prepared, tmp_path / "unused", image_size=32, margin_mm=8.0)
    with pytest.raises(InputError, match="--margin-slices 2"):
        ensure_prepared(prepared, tmp_path / "unused", image_size=32, margin_slices=2)
    assert ensure_prepared(prepared, tmp_path / "unused", image_size=32, margin_mm=0.0) == str(prepared)


def test_sample_keys_wrong_pair_and_base(prepared):
    data = load_datalist(prepared)
    ds = RGGANDataset(data, num_workers=0, seed=1)
    images = {d["patient"]: torch.from_numpy(np.load(d["image"])) for d in data}
    for _ in range(20):
        for i in range(len(ds)):
            s = ds[i]
            assert tuple(s) == BATCH_KEYS
            assert s["patient"] == data[i]["patient"]
            assert s["base"].shape == (1, 32, 32) and s["image"].shape == (1, 32, 32) and s["rna"].shape == (12,)
            # base k of patient n is the constant n + k/100 (see tests/_prepared.py)
            k = round((float(s["base"][0, 0, 0]) - _patient_number(s["patient"])) * 100)
            assert 0 <= k < 3
            assert not torch.equal(s["wrong_image"], s["image"])
            owners = [p for p, im in images.items() if torch.equal(im, s["wrong_image"])]
            assert owners and owners[0] != s["patient"]


def test_base_pool_any_draws_every_training_patients_backgrounds(prepared):
    data = load_datalist(prepared)
    numbers = {_patient_number(d["patient"]) for d in data}
    ds = RGGANDataset(data, num_workers=0, seed=2, base_pool="any")
    donors = set()
    for _ in range(30):
        for i in range(len(ds)):
            s = ds[i]
            assert s["patient"] == data[i]["patient"]  # the sample itself stays the patient's
            value = float(s["base"][0, 0, 0])  # base k of patient n is the constant n + k/100
            donors.add(int(round(value - (round(value * 100) % 100) / 100)))
    assert donors == numbers  # every patient's patches are drawn, not only the sample's own
    with pytest.raises(ValueError, match="base_pool"):
        RGGANDataset(data, num_workers=0, base_pool="other")


def test_wrong_pair_never_same_patient_with_repeated_patients(prepared):
    data = load_datalist(prepared)
    # three samples of R01-000 (e.g. several slices), two of R01-001, one of R01-002
    rep = [dict(data[0]), dict(data[0]), dict(data[1]), dict(data[0]), dict(data[1]), dict(data[2])]
    ds = RGGANDataset(rep, num_workers=0, seed=3)
    seen = set()
    for _ in range(200):
        for i in range(len(ds)):
            wrong = ds.randomize(i)
            assert ds.patients[wrong] != ds.patients[i]
            seen.add((i, wrong))
    # every other-patient sample is reachable
    assert all((0, j) in seen for j in (2, 4, 5))


def test_reproducible_and_cached(prepared, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(prepared, folder)
    data = load_datalist(folder)
    a = RGGANDataset(data, num_workers=0, seed=7)
    b = RGGANDataset(data, num_workers=0, seed=7)
    shutil.rmtree(folder / "samples")  # everything must now come from the cache
    seq_a = [(a[i]["base"][0, 0, 0].item(), a[i]["wrong_image"].sum().item()) for i in range(6) for _ in range(3)]
    seq_b = [(b[i]["base"][0, 0, 0].item(), b[i]["wrong_image"].sum().item()) for i in range(6) for _ in range(3)]
    assert seq_a == seq_b
    c = RGGANDataset(load_datalist(prepared), num_workers=0, seed=8)
    seq_c = [(c[i]["base"][0, 0, 0].item(), c[i]["wrong_image"].sum().item()) for i in range(6) for _ in range(3)]
    assert seq_c != seq_a


def test_expression_noise_perturbs_only_the_genes_reproducibly(prepared):
    data = load_datalist(prepared)
    clean = RGGANDataset(data, num_workers=0, seed=3)
    noisy = RGGANDataset(data, transform=expression_noise(0.5), num_workers=0, seed=3)
    again = RGGANDataset(data, transform=expression_noise(0.5), num_workers=0, seed=3)
    draws = [noisy[i] for i in range(6) for _ in range(50)]
    assert all(type(d["rna"]) is torch.Tensor and d["rna"].dtype == torch.float32 for d in draws)  # no MetaTensor
    diffs = torch.stack([d["rna"] - clean[i]["rna"] for i, d in zip([i for i in range(6) for _ in range(50)], draws)])
    assert 0.45 < diffs.std().item() < 0.55 and abs(diffs.mean().item()) < 0.05  # N(0, 0.5^2) on every gene
    assert not torch.equal(draws[0]["rna"], draws[1]["rna"])  # a fresh draw each time the sample is read
    assert torch.equal(draws[0]["rna"], again[0]["rna"])  # seeded with the dataset
    for key in ("image", "mask"):  # the nodule itself is untouched (the "wrong" partner is drawn at random)
        assert torch.equal(draws[0][key], clean[0][key])
    assert expression_noise(0.0) is None
    with pytest.raises(ValueError, match="rna noise"):
        expression_noise(-0.1)


def test_one_patient_is_not_enough(prepared):
    with pytest.raises(NoUsableDataError, match="two patients"):
        RGGANDataset(load_datalist(prepared)[:1], num_workers=0)


def test_dataloader_batches_and_workers(prepared):
    ds = RGGANDataset(load_datalist(prepared), num_workers=0, seed=0)
    torch.manual_seed(0)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False, num_workers=0)))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["base"].shape == (4, 1, 32, 32)
    assert batch["rna"].shape == (4, 12) and list(batch["patient"]) == [f"R01-{i:03d}" for i in range(4)]

    def draws(num_workers):
        torch.manual_seed(1)  # (with seed 0 the two streams happen to agree on all three choices)
        loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=num_workers)
        return [float(b["base"][0, 0, 0, 0]) for b in loader]

    two = draws(2)
    assert two == draws(2)  # reproducible for a fixed number of workers
    # with two workers, worker 0 serves items 0, 2, 4 and worker 1 serves 1, 3, 5, each with its own stream
    picks = [round((v - i) * 100) for i, v in enumerate(two)]
    assert all(0 <= k < 3 for k in picks)
    assert picks[0::2] != picks[1::2]  # identical worker streams would give identical choices
