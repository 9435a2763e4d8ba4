"""rggan.engine.RGGanTrainer: one conditional GAN iteration on tiny networks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.inferers import SimpleInferer
from monai.utils import GanKeys, set_determinism

from rggan.data.dataset import RGGANDataset, load_datalist
from rggan.engine import (
    HOST_LOSSES,
    RGGanTrainer,
    interval_loss_floats,
    loss_floats,
    loss_scalars,
    loss_totals,
    prepare_rg_batch,
)
from rggan.losses import DiscriminatorLoss, GeneratorLoss
from rggan.networks import RGDiscriminator, RGGenerator, init_weights
from tests._prepared import make_prepared

S, GENES, LATENT, EMBED = 32, 12, 4, 8


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prep"), n_train=6, n_val=1, image_size=S, num_genes=GENES)


def _params(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


class _Spy(torch.optim.Adam):
    """Adam that records snapshots of other networks' parameters around its step."""

    def __init__(self, params, watch: torch.nn.Module, log: list, tag: str, **kw):
        super().__init__(params, **kw)
        self.watch, self.log, self.tag = watch, log, tag

    def step(self, closure=None):
        grads_of_watched = [p.grad for p in self.watch.parameters()]
        self.log.append((self.tag, "before", _params(self.watch), grads_of_watched))
        out = super().step(closure)
        self.log.append((self.tag, "after", _params(self.watch), None))
        return out


def make_trainer(prepared, *, batch_size=4, epochs=1, spy_log=None, seed=0, g_loss=None, **kwargs):
    set_determinism(seed)
    g = RGGenerator(GENES, embed_dim=EMBED, latent_size=LATENT, g_n_feat=2, image_size=S).apply(init_weights)
    d = RGDiscriminator(embed_dim=EMBED, d_n_feat=2, image_size=S).apply(init_weights)
    if spy_log is not None:
        g_opt = _Spy(g.parameters(), watch=d, log=spy_log, tag="g", lr=1e-3)
        d_opt = _Spy(d.parameters(), watch=g, log=spy_log, tag="d", lr=1e-3)
    else:
        g_opt, d_opt = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
    ds = RGGANDataset(load_datalist(prepared), num_workers=0, seed=seed)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    trainer = RGGanTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        g_network=g,
        g_optimizer=g_opt,
        g_loss_function=g_loss or GeneratorLoss(erosion=3),
        d_network=d,
        d_optimizer=d_opt,
        d_loss_function=DiscriminatorLoss(),
        latent_shape=LATENT,
        **kwargs,
    )
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    return trainer, outputs


def test_iteration_output_and_finite_losses(prepared):
    trainer, outputs = make_trainer(prepared, batch_size=4)
    trainer.run()
    assert trainer.state.iteration == 2  # 6 samples, batch 4, short last batch kept
    out = outputs[0]
    for key in (GanKeys.GLOSS, GanKeys.DLOSS):  # detached 0-dim tensors: converted only when logged
        assert isinstance(out[key], torch.Tensor) and out[key].shape == () and not out[key].requires_grad
        assert math.isfinite(out[key])
    assert out[GanKeys.REALS].shape == (4, 1, S, S) and out[GanKeys.FAKES].shape == (4, 1, S, S)
    assert out["fake_mask"].shape == (4, 1, S, S) and out["base"].shape == (4, 1, S, S)
    assert list(out["patient"]) == ["R01-000", "R01-001", "R01-002", "R01-003"]
    assert set(out["g_terms"]) == {"g_isc", "g_i", "g_is", "g_bg"}
    assert len(out["d_terms"]) == 12 and all(not t.requires_grad for t in out["d_terms"].values())
    scalars = loss_scalars(out)
    assert set(scalars) == {"g_loss", "d_loss", *out["g_terms"], *out["d_terms"]}
    assert all(isinstance(v, float) and math.isfinite(v) for v in scalars.values())
    assert math.isclose(sum(scalars[k] for k in out["g_terms"]), scalars["g_loss"], rel_tol=1e-5)
    assert scalars["g_loss"] == out["g_loss"].item() and scalars["d_loss"] == out["d_loss"].item()
    assert loss_totals(out) == {"g_loss": out["g_loss"], "d_loss": out["d_loss"]}  # the tensors themselves
    assert loss_floats(out) == {"g_loss": scalars["g_loss"], "d_loss": scalars["d_loss"]}
    assert out[HOST_LOSSES] == scalars  # one transfer per output, shared by every handler that logs it


def test_latents_sized_from_short_last_batch(prepared):
    trainer, outputs = make_trainer(prepared, batch_size=4)
    trainer.run()
    assert [o[GanKeys.LATENTS].shape for o in outputs] == [(4, LATENT), (2, LATENT)]
    assert outputs[1][GanKeys.FAKES].shape[0] == 2


def test_d_step_leaves_g_unchanged_and_vice_versa(prepared):
    log: list = []
    trainer, _ = make_trainer(prepared, batch_size=4, spy_log=log, epoch_length=1)
    g0, d0 = _params(trainer.g_network), _params(trainer.d_network)
    trainer.run()
    assert [(tag, when) for tag, when, _, _ in log] == [
        ("d", "before"),
        ("d", "after"),
        ("g", "before"),
        ("g", "after"),
    ]
    # D step: G neither changed nor received gradients (the D loss detaches the fakes)
    _, _, g_at_d, g_grads_at_d = log[0]
    assert _same(g_at_d, g0) and _same(log[1][2], g0)
    assert all(gr is None or not gr.any() for gr in g_grads_at_d)
    # G step: D's parameters are those D's own step produced
    d_after_d_step = _params(trainer.d_network)
    assert _same(log[2][2], d_after_d_step) and _same(log[3][2], d_after_d_step)
    assert not _same(d_after_d_step, d0)  # D did learn
    assert not _same(_params(trainer.g_network), g0)  # G did learn
    assert trainer.g_network.training and trainer.d_network.training


def test_d_train_steps_and_update_latents(prepared):
    trainer, outputs = make_trainer(prepared, batch_size=4, d_train_steps=2, g_update_latents=True, epoch_length=1)
    trainer.g_network.eval()  # the iteration must switch the networks back to training mode
    trainer.run()
    assert trainer.g_network.training
    assert math.isfinite(outputs[0][GanKeys.DLOSS]) and len(outputs[0]["d_terms"]) == 12
    assert not trainer.amp and not trainer.g_scaler.is_enabled()  # amp is off by default


class _RecordingInferer(SimpleInferer):
    """The default inferer, recording the (rna, z, base) of every generator call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, ...]] = []

    def __call__(self, rna, network, z, base, *args, **kwargs):
        self.calls.append((rna.clone(), z.clone(), base.clone()))
        return super().__call__(rna, network, z, base, *args, **kwargs)


def test_crps_loss_gets_a_second_sample_with_independent_latents(prepared):
    inferer = _RecordingInferer()
    loss = GeneratorLoss(erosion=3, c_rec=1.0, c_tex=1.0, c_size=1.0, paired_score="crps")
    trainer, outputs = make_trainer(prepared, batch_size=4, epoch_length=1, g_loss=loss, g_inferer=inferer)
    trainer.run()
    assert len(inferer.calls) == 2  # the fakes D saw, then the second sample for the paired terms
    (rna1, z1, base1), (rna2, z2, base2) = inferer.calls
    assert torch.equal(rna1, rna2) and torch.equal(base1, base2) and not torch.equal(z1, z2)
    assert {"g_rec", "g_tex", "g_size"} <= set(outputs[0]["g_terms"])
    assert all(math.isfinite(v) for v in loss_scalars(outputs[0]).values())
    plain = _RecordingInferer()
    make_trainer(prepared, batch_size=4, epoch_length=1, g_inferer=plain)[0].run()
    assert len(plain.calls) == 1  # an L1 loss: one generator call per iteration


def test_mixup_adds_a_sample_from_mixed_expression_on_the_same_backgrounds(prepared):
    inferer = _RecordingInferer()
    loss = GeneratorLoss(erosion=3, c_tex=1.0, c_shape=1.0, c_size=1.0, mixup=0.5)
    trainer, outputs = make_trainer(prepared, batch_size=4, epoch_length=1, g_loss=loss, g_inferer=inferer)
    trainer.run()
    assert len(inferer.calls) == 2  # the fakes D saw, then the mixed sample
    (rna1, z1, base1), (rna2, z2, base2) = inferer.calls
    assert torch.equal(base1, base2) and not torch.equal(z1, z2)
    # each mixed row lies on the segment between its own expression and another row's
    for i in range(4):
        hits = []
        for j in range(4):
            d = rna1[i] - rna1[j]
            t = ((rna2[i] - rna1[j]) @ d / (d @ d)).item() if d.abs().sum() > 0 else 1.0
            if torch.allclose(rna2[i], t * rna1[i] + (1 - t) * rna1[j], atol=1e-5) and 0 <= t <= 1:
                hits.append(t)
        assert hits, f"row {i} is not a mix of two batch rows"
    terms = outputs[0]["g_terms"]
    assert {"g_mix_tex", "g_mix_shape", "g_mix_size", "g_tex", "g_shape", "g_size"} <= set(terms)
    scalars = loss_scalars(outputs[0])
    assert math.isclose(sum(scalars[k] for k in terms), scalars["g_loss"], rel_tol=1e-5)


def test_same_seed_same_losses(prepared):
    def losses(seed):
        trainer, outputs = make_trainer(prepared, batch_size=3, epochs=2, seed=seed)
        trainer.run()
        return [(float(o["g_loss"]), float(o["d_loss"])) for o in outputs]

    first = losses(0)
    assert len(first) == 4
    assert losses(0) == first
    assert losses(1) != first


def test_prepare_rg_batch_moves_tensors_only():
    batch = {"image": torch.zeros(2, 1, 4, 4), "patient": ["a", "b"]}
    out = prepare_rg_batch(batch, torch.device("cpu"))
    assert out["patient"] == ["a", "b"] and out["image"].device.type == "cpu"
    with pytest.raises(TypeError, match="dicts"):
        prepare_rg_batch([torch.zeros(1)], "cpu")


def test_amp_on_cpu_is_bfloat16_autocast_without_scaling(prepared):
    """``amp=True`` on CPU: G and D run under bfloat16 autocast, no loss scaling, both networks learn."""
    trainer, outputs = make_trainer(prepared, batch_size=4, epoch_length=1, amp=True)
    assert trainer.amp and trainer.amp_dtype == torch.bfloat16
    assert not trainer.g_scaler.is_enabled() and not trainer.d_scaler.is_enabled()
    seen: dict[str, set] = {"g": set(), "d": set()}
    convs = {"g": trainer.g_network.head[0], "d": trainer.d_network.heads["isc"]}
    for key, module in convs.items():
        module.register_forward_hook(lambda m, i, o, key=key: seen[key].add(o.dtype))
    g0, d0 = _params(trainer.g_network), _params(trainer.d_network)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*GradScaler.*")  # no unused CUDA scaler on a CPU run
        trainer.run()
    assert seen == {"g": {torch.bfloat16}, "d": {torch.bfloat16}}
    out = outputs[0]
    assert math.isfinite(out["g_loss"]) and math.isfinite(out["d_loss"])
    assert all(p.dtype == torch.float32 for p in trainer.g_network.parameters())  # weights stay float32
    assert not _same(_params(trainer.g_network), g0) and not _same(_params(trainer.d_network), d0)


def test_amp_auto_is_bfloat16_exactly_on_cpus_with_amx(prepared, monkeypatch):
    """``amp="auto"``: bfloat16 autocast when the CPU has AMX tiles, full precision when it has not; strings parse."""
    import rggan.system

    trainer, _ = make_trainer(prepared, batch_size=4, epoch_length=1, amp="auto")
    assert trainer.amp == rggan.system.cpu_has_fast_bf16()  # this machine's answer, whatever it is
    for has_amx in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda has_amx=has_amx: has_amx, raising=False)
        trainer, _ = make_trainer(prepared, batch_size=4, epoch_length=1, amp="auto")
        assert trainer.amp is has_amx and trainer._autocast_kwargs["enabled"] is has_amx
        assert rggan.system.resolve_amp("auto", "cuda:0") is False  # float16 on CUDA stays opt-in
    assert rggan.system.resolve_amp("true", "cpu") is True and rggan.system.resolve_amp("False", "cpu") is False
    with pytest.raises(ValueError):
        rggan.system.resolve_amp("sometimes", "cpu")


def test_amp_float16_path_with_gradient_scaling(prepared):
    """The CUDA recipe (float16 autocast + one GradScaler per network), run on CPU by asking for float16.

    With GradScaler's initial scale (65536) the float16 gradients of these tiny networks overflow, so the
    first steps are skipped (weights unchanged) and the scale halves each time until the steps go through
    (measured: scale 16 and the first applied G step at iteration 13).
    """
    trainer, outputs = make_trainer(
        prepared, batch_size=4, epoch_length=1, epochs=16, amp=True, amp_kwargs={"dtype": torch.float16}
    )
    assert trainer.amp_dtype == torch.float16
    assert trainer.g_scaler.is_enabled() and trainer.d_scaler.is_enabled()
    g0 = _params(trainer.g_network)
    trainer.run()
    assert all(math.isfinite(o["g_loss"]) and math.isfinite(o["d_loss"]) for o in outputs)
    assert 0 < trainer.g_scaler.get_scale() < 65536 and 0 < trainer.d_scaler.get_scale() < 65536
    assert not _same(_params(trainer.g_network), g0)


# ----------------------------------------------------------------------------- host synchronisation
LOG_INTERVAL = 4


def _logged_trainer(prepared, tmp_path, device, epochs=4):
    """A tiny trainer with the bundle's per-iteration handlers: 3 iterations per epoch, losses logged every 4."""
    from ignite.handlers import ProgressBar
    from monai.handlers import StatsHandler, TensorBoardStatsHandler
    from rggan.handlers import ForeachEMAHandler, GeneGroupLasso, TerminateOnNan
    from tensorboardX import SummaryWriter

    set_determinism(0)
    g = RGGenerator(GENES, embed_dim=EMBED, latent_size=LATENT, g_n_feat=2, image_size=S).apply(init_weights)
    d = RGDiscriminator(embed_dim=EMBED, d_n_feat=2, image_size=S).apply(init_weights)
    g, d = g.to(device), d.to(device)
    dataset = RGGANDataset(load_datalist(prepared), num_workers=0, seed=0)
    loader = DataLoader(dataset, batch_size=2, num_workers=0, pin_memory=torch.device(device).type == "cuda")
    writer = SummaryWriter(str(tmp_path / "tb"))
    every = lambda engine, i: i % LOG_INTERVAL == 0  # noqa: E731
    trainer = RGGanTrainer(
        device=torch.device(device),
        max_epochs=epochs,
        train_data_loader=loader,
        g_network=g,
        g_optimizer=torch.optim.Adam(g.parameters(), 1e-3, fused=True),  # the bundle's optimisers
        g_loss_function=GeneratorLoss(erosion=3),
        d_network=d,
        d_optimizer=torch.optim.Adam(d.parameters(), 1e-3, fused=True),
        d_loss_function=DiscriminatorLoss(),
        latent_shape=LATENT,
        non_blocking=True,
        train_handlers=[  # train.yaml's per-iteration handlers, in its order
            GeneGroupLasso(g.gene_encoder[0], tau=1e-4),
            TerminateOnNan(output_transform=loss_totals, interval=LOG_INTERVAL),
            StatsHandler(tag_name="loss", output_transform=loss_floats, iteration_log=every, epoch_log=False),
            TensorBoardStatsHandler(summary_writer=writer, output_transform=loss_scalars, iteration_log=LOG_INTERVAL),
        ],
    )
    ForeachEMAHandler(g, momentum=1e-3, output_transform=loss_totals).attach(trainer)  # as train.yaml
    ProgressBar(persist=False).attach(trainer, output_transform=interval_loss_floats(trainer, LOG_INTERVAL))
    return trainer, writer


def test_step_syncs_with_the_host_only_at_log_intervals(prepared, tmp_path, monkeypatch):
    """Between log intervals, neither the step nor a bundle handler turns a tensor into a Python value.

    Every ``Tensor.item/tolist/numpy/__bool__/__float__/__int__/__index__`` call made while an iteration runs
    (ITERATION_STARTED to the last ITERATION_COMPLETED handler) is recorded with its iteration: on a GPU each
    would wait for the device. Calls are allowed only at log iterations and at each epoch's last iteration
    (TerminateOnNan reads its flags there, before any epoch-end handler writes a checkpoint).
    """
    trainer, writer = _logged_trainer(prepared, tmp_path, "cpu")
    calls: list[tuple[int, str]] = []
    inside = {"on": False}
    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if inside["on"]:
                calls.append((trainer.state.iteration, _name))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: inside.update(on=True))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: inside.update(on=False))  # attached last
    trainer.run()
    monkeypatch.undo()
    writer.close()
    assert trainer.state.iteration == 12 and trainer.state.epoch_length == 3
    allowed = {3, 4, 6, 8, 9, 12}  # log iterations (4, 8, 12) and epoch ends (3, 6, 9, 12)
    assert calls, "the log iterations read the losses: the spies must have seen them"
    assert {it for it, _ in calls} <= allowed, sorted(set(calls))
    assert {it for it, _ in calls} >= {4, 8, 12}
    assert not trainer.should_terminate


@pytest.mark.cuda
def test_step_makes_no_cuda_sync_between_log_intervals(prepared, tmp_path):
    """On CUDA, ``set_sync_debug_mode('error')`` during every non-log iteration but the first (lazy CUDA init).

    Marked ``cuda``: deselected by default (setup.cfg), run on a GPU machine with ``pytest -m cuda``, where it
    fails if CUDA is missing; the CPU test above spies on the same path everywhere.
    """
    assert torch.cuda.is_available(), "pytest -m cuda needs a CUDA device"
    trainer, writer = _logged_trainer(prepared, tmp_path, "cuda")
    allowed = lambda it: it % LOG_INTERVAL == 0 or it % 3 == 0 or it == 1  # noqa: E731
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda e: torch.cuda.set_sync_debug_mode(0 if allowed(e.state.iteration) else 2)
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: torch.cuda.set_sync_debug_mode(0))
    try:
        trainer.run()
    finally:
        torch.cuda.set_sync_debug_mode(0)
        writer.close()
    assert trainer.state.iteration == 12 and not trainer.should_terminate


def test_slice_averaged_margins_reach_the_g_loss_from_the_datalist(prepared, tmp_path):
    """A folder prepared with ``margin_mm``: the dataset carries each patient's ``margin`` into the batch
    and the trainer passes it to a loss with ``shape_target="slices"``; without it the step says what to do."""
    import json
    import shutil

    folder = tmp_path / "margins"
    shutil.copytree(prepared, folder)
    datalist = json.loads((folder / "datalist.json").read_text())
    for i, item in enumerate(datalist["training"]):
        item["margin"] = None if i == 0 else 0.01 * i
    (folder / "datalist.json").write_text(json.dumps(datalist))
    ds = RGGANDataset(load_datalist(folder), num_workers=0)
    margins = [ds[i]["margin"] for i in range(len(ds))]
    assert math.isnan(margins[0]) and [round(m.item(), 4) for m in margins[1:]] == [0.01 * i for i in range(1, 6)]

    def g_shape(root, scale):
        d = json.loads((root / "datalist.json").read_text())
        for item in d["training"]:
            item["margin"] = None if item.get("margin") is None else item["margin"] * scale
        (root / "datalist.json").write_text(json.dumps(d))
        loss = GeneratorLoss(erosion=3, c_shape=1.0, shape_target="slices")
        trainer, outputs = make_trainer(root, batch_size=4, epoch_length=1, g_loss=loss)
        trainer.run()
        return loss_scalars(outputs[0])["g_shape"]

    low, high = g_shape(folder, 1.0), g_shape(folder, 20.0)  # the same step against margins 20x larger
    assert high > low + 0.1, (low, high)
    loss = GeneratorLoss(erosion=3, c_shape=1.0, shape_target="slices")
    with pytest.raises(ValueError, match="margin-mm"):
        make_trainer(prepared, batch_size=4, epoch_length=1, g_loss=loss)[0].run()
