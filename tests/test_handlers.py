"""rggan.handlers on real Ignite engines."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image
from rggan.handlers import (
    CheckpointSaver,
    SampleSaver,
    TerminateOnNan,
    TrainingStats,
    find_latest_checkpoint,
    make_grid,
)
from tensorboardX import SummaryWriter


def _engine(losses=None, epoch_length=3):
    losses = losses or {}

    def step(engine, batch):
        return {"g_loss": losses.get(engine.state.iteration, 1.0), "d_loss": 0.5}

    return Engine(step), list(range(epoch_length))


def test_checkpoint_saver_interval_final_atomic_and_latest(tmp_path):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    engine, data = _engine()
    saver = CheckpointSaver(tmp_path / "models", {"trainer": engine, "net": net, "opt": opt}, save_interval=2)
    saver.attach(engine)
    assert saver.checkpoint.save_handler._atomic  # temporary file + os.replace
    engine.run(data, max_epochs=5)
    names = sorted(os.listdir(tmp_path / "models"))
    assert names == [
        "checkpoint_epoch=2_iteration=6.pt",
        "checkpoint_epoch=4_iteration=12.pt",
        "checkpoint_epoch=5_iteration=15.pt",
    ]
    latest = find_latest_checkpoint(tmp_path / "models")
    assert latest.endswith("checkpoint_epoch=5_iteration=15.pt")
    ckpt = torch.load(latest, weights_only=True)
    assert set(ckpt) == {"trainer", "net", "opt"} and ckpt["trainer"]["iteration"] == 15
    # the final save coinciding with an interval save is written once
    engine2, data2 = _engine()
    CheckpointSaver(tmp_path / "m2", {"trainer": engine2}, save_interval=2).attach(engine2)
    engine2.run(data2, max_epochs=2)
    assert os.listdir(tmp_path / "m2") == ["checkpoint_epoch=2_iteration=6.pt"]
    # unrelated files and other prefixes are ignored; an empty or missing folder has no checkpoint
    (tmp_path / "models" / "checkpoint_epoch=9_iteration=99.pt.tmp").write_text("x")
    (tmp_path / "models" / "other_epoch=9_iteration=99.pt").write_text("x")
    assert find_latest_checkpoint(tmp_path / "models") == latest
    assert find_latest_checkpoint(tmp_path / "nothing") is None
    with pytest.raises(ValueError):
        CheckpointSaver(tmp_path, {"net": net}, save_interval=-1)


def test_terminate_on_nan_logs_and_skips_final_checkpoint(tmp_path, caplog):
    from ignite.engine import Events
    from rggan.handlers import FinalModelSaver

    engine, data = _engine({6: float("nan")})  # the last iteration of epoch 2: no epoch-2 checkpoint either
    TerminateOnNan(output_transform=lambda o: {"g_loss": o["g_loss"], "d_loss": o["d_loss"]}).attach(engine)
    CheckpointSaver(tmp_path, {"trainer": engine}, save_interval=1).attach(engine)
    FinalModelSaver(torch.nn.Linear(2, 2), tmp_path / "model.pt").attach(engine)
    fired = []
    for event in (Events.TERMINATE, Events.COMPLETED):
        engine.add_event_handler(event, lambda e, name=event.name: fired.append(name))
    with caplog.at_level(logging.ERROR, logger="rggan.train"):
        engine.run(data, max_epochs=4)
    assert engine.state.iteration == 6 and engine.should_terminate
    assert fired == ["TERMINATE"]  # Ignite's skip_completed: no COMPLETED handler runs
    assert "training diverged at epoch 2, iteration 6" in caplog.text and "g_loss" in caplog.text
    assert os.listdir(tmp_path) == ["checkpoint_epoch=1_iteration=3.pt"]  # the last healthy one, no model.pt


def test_ema_skips_the_step_that_terminates():
    from rggan.handlers import ForeachEMAHandler

    live = torch.nn.Linear(2, 2)

    def step(engine, batch):
        with torch.no_grad():
            live.weight.fill_(float("nan") if engine.state.iteration == 3 else float(engine.state.iteration))
        return {"g_loss": float(live.weight.detach().sum()), "d_loss": 0.0}

    engine = Engine(step)
    TerminateOnNan(output_transform=lambda o: o).attach(engine)  # before the EMA: same event, attach order
    ema = ForeachEMAHandler(live, momentum=0.5)
    ema.attach(engine)
    engine.run(range(4), max_epochs=1)
    assert engine.state.iteration == 3
    # the EMA saw iterations 1 and 2 only: copy of the initial weights, then 0.5 * w + 0.5 * 1, then ... + 0.5 * 2
    assert torch.isfinite(ema.ema_model.weight).all()
    assert not torch.isfinite(live.weight).all()


@pytest.mark.parametrize("guarded", [True, False])
def test_ema_never_takes_a_non_finite_step_between_divergence_checks(guarded):
    """TerminateOnNan reads its flags every 4 iterations (no host sync per step); the EMA checks each step's
    losses on the device, so the diverged iteration 3 never reaches it (without the check it does)."""
    from rggan.handlers import ForeachEMAHandler

    live = torch.nn.Linear(2, 2)
    w0 = live.weight.detach().clone()

    def step(engine, batch):
        with torch.no_grad():
            live.weight.fill_(float("nan") if engine.state.iteration == 3 else float(engine.state.iteration))
        loss = live.weight.detach().sum()
        return {"g_loss": loss, "d_loss": torch.zeros(())}

    engine = Engine(step)
    TerminateOnNan(output_transform=lambda o: o, interval=4).attach(engine)
    ema = ForeachEMAHandler(live, momentum=0.5, output_transform=(lambda o: o) if guarded else None)
    ema.attach(engine)
    engine.run(range(6), max_epochs=1)
    assert engine.state.iteration == 4 and engine.should_terminate  # found at the check of iteration 4
    if guarded:  # iterations 1 and 2 only: lerp(lerp(w0, 1), 2)
        torch.testing.assert_close(ema.ema_model.weight, 0.5 * (0.5 * w0 + 0.5) + 1.0)
    else:
        assert not torch.isfinite(ema.ema_model.weight).all()


def test_checkpoint_saver_keeps_last_n_plus_final_across_resume(tmp_path):
    net = torch.nn.Linear(2, 2)

    def names():
        return sorted(os.listdir(tmp_path), key=lambda n: int(n.split("=")[-1][:-3]))

    engine, data = _engine(epoch_length=1)
    CheckpointSaver(tmp_path, {"trainer": engine, "net": net}, save_interval=2, n_saved=2).attach(engine)
    engine.run(data, max_epochs=7)
    # intervals 2, 4, 6 -> the last two kept; the final (7) beside them
    assert names() == ["checkpoint_epoch=4_iteration=4.pt", "checkpoint_epoch=6_iteration=6.pt",
                       "checkpoint_epoch=7_iteration=7.pt"]  # fmt: skip
    (tmp_path / "best_epoch=3_iteration=3.pt").write_text("x")  # another prefix: never pruned
    # a resumed run (state loaded from the latest) counts the checkpoints it continues from
    engine2, data2 = _engine(epoch_length=1)
    engine2.load_state_dict(torch.load(find_latest_checkpoint(tmp_path), weights_only=True)["trainer"])
    CheckpointSaver(tmp_path, {"trainer": engine2, "net": net}, save_interval=2, n_saved=2).attach(engine2)
    engine2.run(data2, max_epochs=12)
    assert names() == ["best_epoch=3_iteration=3.pt", "checkpoint_epoch=8_iteration=8.pt",
                       "checkpoint_epoch=10_iteration=10.pt", "checkpoint_epoch=12_iteration=12.pt"]  # fmt: skip
    with pytest.raises(ValueError):
        CheckpointSaver(tmp_path, {"net": net}, n_saved=0)


def test_terminate_on_nan_ignores_finite_values():
    engine, data = _engine({2: 1e30})
    TerminateOnNan(output_transform=lambda o: [o["g_loss"], torch.tensor(o["d_loss"])]).attach(engine)
    engine.run(data, max_epochs=2)
    assert engine.state.iteration == 6 and not engine.should_terminate


def test_training_stats_metrics():
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.25)
    engine, data = _engine()
    TrainingStats({"g": opt}).attach(engine)
    engine.run(data, max_epochs=1)
    m = engine.state.metrics
    assert m["lr_g"] == 0.25
    assert {"time_iteration_s", "time_data_s", "time_epoch_s"} <= set(m)
    assert all(math.isfinite(m[k]) and m[k] >= 0 for k in ("time_iteration_s", "time_data_s", "time_epoch_s"))


@dataclass
class _Out:
    image: torch.Tensor
    mask: torch.Tensor


class _ToyG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, rna, z, base):
        self.calls.append((self.training, torch.is_grad_enabled(), z.clone()))
        return _Out(image=base * 0 + self.w * 0.5, mask=-torch.ones_like(base))


def test_sample_saver_png_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = 8
    data = [
        {
            "image": torch.full((1, s, s), -1.0),
            "mask": torch.zeros(1, s, s),
            "rna": torch.zeros(3),
            "bases": torch.zeros(2, s, s),
        }
        for _ in range(3)
    ]
    g = _ToyG().train()
    writer = SummaryWriter(str(tmp_path / "tb"))
    saver = SampleSaver(
        g, data, tmp_path / "samples", latent_size=5, interval=2, num_samples=2, summary_writer=writer, seed=3
    )
    engine, batches = _engine(epoch_length=1)
    saver.attach(engine)
    engine.run(batches, max_epochs=3)
    writer.close()
    assert sorted(os.listdir(tmp_path / "samples")) == ["samples_epoch=2.png", "samples_epoch=3.png"]
    img = np.asarray(Image.open(tmp_path / "samples" / "samples_epoch=2.png"))
    pad = 2
    s = s * -(-96 // s)  # small tiles are enlarged to >= 96 px
    assert img.shape == (2 * (s + pad) + pad, 4 * (s + pad) + pad)
    row = img[pad + s // 2]
    cols = [row[pad + j * (s + pad) + s // 2] for j in range(4)]  # base | generated | mask | real
    assert cols == [128, 191, 0, 0]
    assert len(g.calls) == 2 and all(not train and not grad for train, grad, _ in g.calls)
    assert torch.equal(g.calls[0][2], g.calls[1][2])  # fixed latents
    assert g.training  # mode restored
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Images("samples")] == [2, 3]


def test_make_grid_range():
    grid = make_grid([[torch.full((2, 2), -5.0), torch.full((1, 2, 2), 1.0)]], pad=1, min_tile=1)
    assert grid.dtype == np.uint8 and grid.shape == (4, 7)
    assert grid[1, 1] == 0 and grid[1, 4] == 255 and grid[0, 0] == 255
    big = make_grid([[torch.tensor([[-1.0, 1.0], [1.0, -1.0]])]], pad=0, min_tile=5)  # enlarged x3, nearest
    assert big.shape == (6, 6) and big[:3, :3].max() == 0 and big[:3, 3:].min() == 255


def test_foreach_ema_matches_ignite_ema():
    from ignite.engine import Engine
    from ignite.handlers import EMAHandler
    from rggan.handlers import ForeachEMAHandler

    torch.manual_seed(0)
    live = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ours, ref = ForeachEMAHandler(live, momentum=0.1), EMAHandler(live, momentum=0.1)

    def step(engine, batch):
        with torch.no_grad():
            for p in live.parameters():
                p.add_(torch.randn_like(p))
            live(torch.randn(5, 4))  # moves the BatchNorm running statistics
        return 0

    engine = Engine(step)
    ours.attach(engine, name="m_ours")
    ref.attach(engine, name="m_ref")
    engine.run(range(5), max_epochs=1)
    for a, b in zip(ours.ema_model.state_dict().values(), ref.ema_model.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(ours.ema_model[0].weight, live[0].weight)


def test_gene_group_lasso_zeroes_the_genes_without_signal_and_reports_how_many_remain():
    """Proximal steps on a real Ignite engine: columns whose gradient steps do not outgrow tau reach exactly 0."""
    from rggan.handlers import GeneGroupLasso

    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4, bias=False)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(64, 6)
    y = 2.0 * x[:, :1].expand(-1, 4)  # only gene 0 carries the target

    def step(engine, _):
        opt.zero_grad()
        loss = ((layer(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    engine = Engine(step)
    lasso = GeneGroupLasso(layer, tau=0.02)
    lasso.attach(engine)
    epochs = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs.append(e.state.metrics["active_genes"]))
    engine.run(range(20), max_epochs=5)
    norms = layer.weight.norm(dim=0)
    assert norms[0] > 1.0 and torch.all(norms[1:] == 0)
    assert epochs[-1] == lasso.active_genes() == 1 and epochs[0] >= epochs[-1]
    with pytest.raises(ValueError, match="tau"):
        GeneGroupLasso(layer, tau=-1.0)


def test_best_generator_saver_keeps_the_best_and_writes_it_as_model_pt(tmp_path):
    from ignite.engine import Engine, Events
    from rggan.handlers import BestGeneratorSaver

    net = torch.nn.Linear(2, 1)
    scores = {1: 0.1, 2: 0.7, 3: 0.3, 4: float("nan")}
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _validate(e):  # a validation handler writing its key metric, then the weights change
        e.state.metrics["eval_key_metric"] = scores[e.state.epoch]
        with torch.no_grad():
            net.weight.fill_(float(e.state.epoch))

    saver = BestGeneratorSaver(net, tmp_path / "models", tmp_path / "models" / "model.pt", interval=1)
    saver.attach(engine)
    engine.run([0], max_epochs=4)
    files = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert files == ["best_generator_epoch=2_eval_key_metric=0.7000.pt", "model.pt"]
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert torch.all(state["weight"] == 2.0)  # epoch 2's weights, not the last (4)
    assert (tmp_path / "models" / "model.pt").stat().st_mode & 0o777 != 0


def test_best_generator_saver_needs_its_metric(tmp_path):
    from ignite.engine import Engine
    from rggan.handlers import BestGeneratorSaver

    saver = BestGeneratorSaver(torch.nn.Linear(2, 1), tmp_path, interval=1)
    engine = Engine(lambda e, b: None)
    saver.attach(engine)
    with pytest.raises(KeyError, match="eval_key_metric"):
        engine.run([0], max_epochs=1)


def test_conditioning_probe_reports_hu_in_the_prepared_window(tmp_path):
    """The probe's HU effects use the prepared dataset's hu_range (750 HU per unit for the default window)."""
    import json

    from rggan.handlers import ConditioningProbe

    from rggan.networks import RGDiscriminator, RGGenerator, init_weights
    from tests._prepared import make_prepared

    torch.manual_seed(0)
    g = RGGenerator(12, embed_dim=8, latent_size=4, g_n_feat=4, image_size=32).apply(init_weights)
    d = RGDiscriminator(embed_dim=8, d_n_feat=4, image_size=32, condition_dim=12).apply(init_weights)
    folder = make_prepared(tmp_path / "prepared", n_train=3, n_val=2, image_size=32, num_genes=12)
    default = ConditioningProbe(g, d, str(folder), seed=1)
    base = default.measure()
    assert default.hu_per_unit == 750.0
    info = json.loads((folder / "datalist.json").read_text())
    (folder / "datalist.json").write_text(json.dumps({**info, "hu_range": [-1200.0, 600.0]}))
    wide = ConditioningProbe(g, d, str(folder), seed=1)
    result = wide.measure()
    assert wide.hu_per_unit == 900.0
    for key in ("gene_effect_hu", "z_effect_hu", "gene_effect_nodule_hu"):
        assert result[key] == pytest.approx(base[key] * 900.0 / 750.0, rel=1e-5)
    assert result["isc_gap_train"] == base["isc_gap_train"]  # logits do not depend on the window


def test_gene_group_lasso_scales_shrink_each_gene_by_its_own_tau():
    """Adaptive weights: one proximal step shrinks column g's norm by exactly tau * scales[g] (never below 0)."""
    from rggan.handlers import GeneGroupLasso

    layer = torch.nn.Linear(3, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.ones(4, 3))  # every column has norm 2
    GeneGroupLasso(layer, tau=0.5, scales=[0.0, 1.0, 10.0]).step()
    assert torch.allclose(layer.weight.norm(dim=0), torch.tensor([2.0, 1.5, 0.0]))
    with pytest.raises(ValueError, match="one per gene"):
        GeneGroupLasso(layer, tau=0.5, scales=[1.0, 1.0])
    with pytest.raises(ValueError, match="one per gene"):
        GeneGroupLasso(layer, tau=0.5, scales=[1.0, -1.0, 1.0])
