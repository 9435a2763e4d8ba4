"""RG-GAN training engine: a :class:`monai.engines.GanTrainer` with a conditional iteration.

MONAI's ``GanTrainer`` feeds G only random latents and gives the losses only the fakes (and the
reals).  RG-GAN's generator needs the batch (gene expression ``rna``, background patch ``base``) and
its losses need the discriminator plus real, "wrong" and fake image/mask pairs.
:class:`RGGanTrainer` keeps GanTrainer's constructor, state and handler machinery and overrides
only ``_iteration`` (plus an ``amp`` flag: float16 autocast on CUDA, bfloat16 on CPU).

Call contract (set by the trainer, implemented in :mod:`rggan.networks` / :mod:`rggan.losses`):

* ``fake = g_inferer(rna, g_network, z, base)``, i.e. ``g_network(rna, z, base)`` -> ``GeneratorOutput``
  (``.embedding .image .mask .switch``);
* ``d_loss_function(d_network, image, mask, wrong_image, wrong_mask, fake, backward=f, rna=rna) -> {"total": ..., ...}``
  (detaches the fakes itself and calls ``f`` on each pair's loss right after that pair's D call);
* ``g_loss_function(d_network, fake, base, rna=rna, real_image=image, real_mask=mask) -> {"total": ..., <term>: ...}``;
  a loss whose ``paired_samples`` attribute is 2 also gets ``fake2=g_inferer(rna, g_network, z2, base)``, a
  second sample with independent latents ``z2`` (the CRPS paired terms of :class:`rggan.losses.GeneratorLoss`);
  one whose ``uses_margin`` attribute is true also gets ``real_margin=batch["margin"]``, each patient's
  slice-averaged margin irregularity from prepare (``margin_mm`` or ``margin_slices`` set).

``engine.state.output`` after each iteration (a plain, batched dict)::

    {"reals": image, "fakes": fake.image, "latents": z, "g_loss": 0-dim tensor, "d_loss": 0-dim tensor,
     "fake_mask": fake.mask, "base": base, "patient": [ids], "g_terms": {name: 0-dim tensor},
     "d_terms": {name: 0-dim tensor}}

The iteration never waits for the device: every loss stays a detached tensor on the device.  The
handlers that need numbers convert them when they log (every ``log_interval`` iterations in
``train.yaml``): :func:`loss_scalars` / :func:`loss_floats` copy all losses of one output to the host in
a single transfer, shared by every handler that logs the same iteration.  :func:`loss_totals` returns
the two totals as tensors, without a transfer (for tensor-side checks such as
:class:`rggan.handlers.TerminateOnNan`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines import GanTrainer
from monai.engines.workflow import Workflow
from monai.utils import GanKeys

from rggan.system import resolve_amp

__all__ = [
    "RGGanTrainer",
    "prepare_rg_batch",
    "loss_scalars",
    "loss_floats",
    "loss_totals",
    "interval_loss_floats",
    "TERMS_G",
    "TERMS_D",
    "HOST_LOSSES",
]

TERMS_G = "g_terms"
TERMS_D = "d_terms"
#: key under which :func:`loss_scalars` caches its host copy in the output dict (one transfer per output)
HOST_LOSSES = "host_losses"


def prepare_rg_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """Move every tensor of an RG-GAN batch dict to ``device``; other values (patient ids) pass through.

    This is :class:`RGGanTrainer`'s default ``d_prepare_batch``.
    """
    if not isinstance(batchdata, Mapping):
        raise TypeError(f"RG-GAN batches are dicts (see rggan.data.dataset), got {type(batchdata).__name__}.")
    return {
        k: v.to(device=device, non_blocking=non_blocking, **kwargs) if isinstance(v, torch.Tensor) else v
        for k, v in batchdata.items()
    }


def loss_totals(output: Mapping[str, Any]) -> dict[str, Any]:
    """``{"g_loss": ..., "d_loss": ...}`` of an engine output as held: 0-dim device tensors, no host transfer.

    For checks that stay on the device (:class:`rggan.handlers.TerminateOnNan`); loggers use :func:`loss_floats`.
    """
    return {GanKeys.GLOSS: output[GanKeys.GLOSS], GanKeys.DLOSS: output[GanKeys.DLOSS]}


def loss_scalars(output: Mapping[str, Any]) -> dict[str, float]:
    """Every loss of an engine output as python floats, with a single device-to-host transfer.

    Keys: ``g_loss``, ``d_loss`` and one per loss term (``g_isc``, ``d_real_i``, ..., as named by
    :mod:`rggan.losses`; a name is prefixed ``g_``/``d_`` if it lacks it).  Use it as the ``output_transform`` of
    ``TensorBoardStatsHandler``.  The result is cached in ``output[HOST_LOSSES]`` (when ``output`` is a mutable
    dict), so that every handler logging the same iteration shares the one transfer.
    """
    cached = output.get(HOST_LOSSES)
    if cached is not None:
        return dict(cached)
    names, values = [], []
    for name, value in loss_totals(output).items():
        names.append(name)
        values.append(value)
    for prefix, key in (("g", TERMS_G), ("d", TERMS_D)):
        for name, value in (output.get(key) or {}).items():
            if name == "total":
                continue
            names.append(name if name.startswith(f"{prefix}_") else f"{prefix}_{name}")
            values.append(value)
    values = [v.detach().float().reshape(()) if isinstance(v, torch.Tensor) else v for v in values]
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if tensors:
        host = iter(torch.stack([t.to(tensors[0].device) for t in tensors]).tolist())  # the one transfer
        values = [next(host) if isinstance(v, torch.Tensor) else float(v) for v in values]
    out = {n: float(v) for n, v in zip(names, values)}
    if isinstance(output, dict):
        output[HOST_LOSSES] = out
    return dict(out)


def loss_floats(output: Mapping[str, Any]) -> dict[str, float]:
    """``{"g_loss": float, "d_loss": float}`` from the (shared, cached) transfer of :func:`loss_scalars`.

    The ``output_transform`` of ``StatsHandler``; call it only when logging (it synchronises with the device).
    """
    host = loss_scalars(output)
    return {GanKeys.GLOSS: host[GanKeys.GLOSS], GanKeys.DLOSS: host[GanKeys.DLOSS]}


def interval_loss_floats(engine: Engine, interval: int) -> Callable[[Mapping[str, Any]], dict[str, float]]:
    """An ``output_transform`` for per-iteration displays (a progress bar) that syncs only every ``interval``.

    On iterations divisible by ``interval`` it returns :func:`loss_floats` of the output and remembers them; on
    the others it returns the remembered values (none before the first log), so the display advances every
    iteration while the losses it shows refresh at the log interval.
    """
    interval = max(int(interval), 1)
    last: dict[str, float] = {}

    def transform(output: Mapping[str, Any]) -> dict[str, float]:
        if engine.state.iteration % interval == 0:
            last.clear()
            last.update(loss_floats(output))
        return dict(last)

    return transform


def _detached_terms(terms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in terms.items() if k != "total"}


class RGGanTrainer(GanTrainer):
    """GanTrainer whose generator is conditioned on the batch (gene expression + background patch).

    All arguments are :class:`~monai.engines.GanTrainer`'s, with three differences:

    * ``d_prepare_batch`` defaults to :func:`prepare_rg_batch` (the whole batch dict on the device);
    * ``g_update_latents`` defaults to False: the G step re-uses the fakes the D step saw (as RG-GAN's
      reference code does) instead of running G a second time;
    * ``optim_set_to_none`` defaults to True (gradients dropped, not zero-filled, before each step);
    * ``amp``: mixed precision with ``torch.autocast`` on the trainer's device: float16 on CUDA, with
      one ``torch.amp.GradScaler`` per network (``engine.g_scaler`` / ``engine.d_scaler``), and
      bfloat16 on other devices (CPU), where no loss scaling is needed and the scalers stay disabled;
      ``"auto"``: bfloat16 on a CPU with AMX, off elsewhere (:func:`rggan.system.resolve_amp`).
      ``amp_kwargs`` are passed to ``torch.autocast``; ``amp_kwargs={"dtype": torch.bfloat16}`` selects
      bfloat16 on CUDA too (scalers then disabled as well).

    Each iteration: the latents are sized from the real batch (a short last batch is fine), G makes
    one batch of fakes, D takes ``d_train_steps`` steps on it, then G takes one step.
    """

    def __init__(self, *args: Any, amp: bool | str = False, **kwargs: Any) -> None:
        kwargs.setdefault("d_prepare_batch", prepare_rg_batch)
        kwargs.setdefault("g_update_latents", False)
        # every parameter receives a gradient each step, so dropping the gradients instead of zero-filling
        # ~50 M of them is equivalent for Adam and saves ~9 % of a CPU step (docs/performance.md)
        kwargs.setdefault("optim_set_to_none", True)
        super().__init__(*args, **kwargs)
        device_type = torch.device(self.state.device).type
        self.amp = resolve_amp(amp, self.state.device)
        default_dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
        self.amp_dtype: torch.dtype = (self.amp_kwargs or {}).get("dtype", default_dtype)
        scaling = self.amp and self.amp_dtype == torch.float16  # bfloat16 has float32's range: no scaling
        self.g_scaler = torch.amp.GradScaler(device_type, enabled=scaling)
        self.d_scaler = torch.amp.GradScaler(device_type, enabled=scaling)
        self._autocast_kwargs = {
            **(self.amp_kwargs or {}),
            "device_type": device_type,
            "dtype": self.amp_dtype,
            "enabled": self.amp,
        }

    def run(self) -> None:  # type: ignore[override]
        """Run the training, as MONAI's ``Trainer.run`` minus its ``torch.cuda.amp.GradScaler``.

        ``Trainer.run`` makes that scaler whenever ``amp`` is set, on any device (two warnings on a CPU), and
        never uses it here: this trainer keeps one scaler per network (``g_scaler``, ``d_scaler``).
        """
        self.scaler = None
        Workflow.run(self)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(**self._autocast_kwargs)

    def _latents(self, engine: RGGanTrainer, num: int) -> torch.Tensor:
        return engine.g_prepare_batch(
            num_latents=num,
            latent_size=engine.latent_shape,
            device=engine.state.device,
            non_blocking=engine.non_blocking,
            **engine.to_kwargs,
        )

    def _iteration(self, engine: RGGanTrainer, batchdata: dict | Sequence) -> dict[str, Any]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        image, mask, base, rna = batch["image"], batch["mask"], batch["base"], batch["rna"]
        g_net, d_net = engine.g_network, engine.d_network
        g_net.train()
        d_net.train()

        z = self._latents(engine, image.shape[0])
        with self._autocast():
            fake = engine.g_inferer(rna, g_net, z, base)

        # (1) discriminator: d_train_steps updates on the same fakes (the loss detaches them)
        d_total = torch.zeros((), device=image.device)
        d_terms: dict[str, torch.Tensor] = {}
        for _ in range(engine.d_train_steps):
            engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            with self._autocast():  # backward per pair: one D graph alive at a time (see DiscriminatorLoss)
                d_out = engine.d_loss_function(
                    d_net, image, mask, batch["wrong_image"], batch["wrong_mask"], fake,
                    backward=lambda loss: engine.d_scaler.scale(loss).backward(), rna=rna,
                )  # fmt: skip
            engine.d_scaler.step(engine.d_optimizer)
            engine.d_scaler.update()
            d_total = d_total + d_out["total"].detach().float()
            for k, v in _detached_terms(d_out).items():
                d_terms[k] = d_terms[k] + v if k in d_terms else v
        steps = max(engine.d_train_steps, 1)
        d_total = d_total / steps
        d_terms = {k: v / steps for k, v in d_terms.items()}

        # (2) generator
        if engine.g_update_latents:
            z = self._latents(engine, image.shape[0])
            with self._autocast():
                fake = engine.g_inferer(rna, g_net, z, base)
        engine.g_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        extra = {}
        if getattr(engine.g_loss_function, "uses_margin", False):  # prepare's slice-averaged margins (GeneratorLoss)
            if "margin" not in batch:
                raise ValueError(
                    "the G loss reads each patient's slice-averaged margin (shape_target='slices') but the batch "
                    "has none: prepare the data with margin_mm > 0 (`rggan prepare --margin-mm 8`)"
                )
            extra["real_margin"] = batch["margin"]
        if getattr(engine.g_loss_function, "paired_samples", 1) > 1:  # a second sample, independent latents
            with self._autocast():
                extra["fake2"] = engine.g_inferer(rna, g_net, self._latents(engine, image.shape[0]), base)
        with self._autocast():
            g_out = engine.g_loss_function(d_net, fake, base, rna=rna, real_image=image, real_mask=mask, **extra)
        if getattr(engine.g_loss_function, "mixup", 0.0) > 0:  # a sample from mixed expression (GeneratorLoss.mixup)
            partner = torch.randperm(image.shape[0], device=image.device)
            lam = torch.rand(image.shape[0], device=image.device)
            rna_mix = lam[:, None] * rna + (1 - lam[:, None]) * rna[partner]
            with self._autocast():
                fake_mix = engine.g_inferer(rna_mix, g_net, self._latents(engine, image.shape[0]), base)
                mixed = engine.g_loss_function.mixed_terms(
                    fake_mix, base, image, mask, partner, lam, rna, real_margin=extra.get("real_margin")
                )
            if mixed:
                g_out = {**g_out, **mixed, "total": g_out["total"] + torch.stack(list(mixed.values())).sum()}
        engine.g_scaler.scale(g_out["total"]).backward()
        engine.g_scaler.step(engine.g_optimizer)
        engine.g_scaler.update()

        # no host transfer here: the losses stay on the device until a handler logs them (loss_scalars)
        return {
            GanKeys.REALS: image,
            GanKeys.FAKES: fake.image.detach(),
            GanKeys.LATENTS: z,
            GanKeys.GLOSS: g_out["total"].detach().float(),
            GanKeys.DLOSS: d_total,
            "fake_mask": fake.mask.detach(),
            "base": base,
            "patient": batch.get("patient"),
            TERMS_G: _detached_terms(g_out),
            TERMS_D: d_terms,
        }
