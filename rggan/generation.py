"""Running the generator on generation requests (:func:`rggan.inputs.build_inputs`) in batches.

:func:`generate` is the plain loop used by evaluation and the radiogenomic map;
:func:`collate_inputs` and :func:`prepare_generator_batch` are the ``collate_fn`` and ``prepare_batch``
of the ``SupervisedEvaluator`` of ``bundle/configs/inference.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["collate_inputs", "prepare_generator_batch", "generate"]

#: request entries batched as float32 tensors (the others become lists)
TENSOR_KEYS = ("rna", "z", "base", "spacing")


def collate_inputs(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch requests.

    Args:
        items: requests of :func:`rggan.inputs.build_inputs`.

    Returns:
        Stacked float32 tensors for :data:`TENSOR_KEYS`; lists for the other entries.
    """
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if key in TENSOR_KEYS:
            out[key] = torch.as_tensor(np.stack([np.asarray(v, dtype=np.float32) for v in vals]))
        else:
            out[key] = vals
    return out


def prepare_generator_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, None, tuple[torch.Tensor, torch.Tensor], dict]:
    """``SupervisedEvaluator`` prepare_batch: the inferer then calls ``G(rna, z, base)``.

    (A plain function, not a lambda, so the config can reference it.)

    Args:
        batchdata: a batch of :func:`collate_inputs`.
        device, non_blocking, kwargs: passed to ``Tensor.to``.

    Returns:
        ``(rna, None, (z, base), {})``.
    """

    def to(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, non_blocking=non_blocking, **kwargs)

    return to(batchdata["rna"]), None, (to(batchdata["z"]), to(batchdata["base"])), {}


@torch.no_grad()
def generate(
    network: torch.nn.Module,
    requests: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Run G on every request in batches, in eval mode (the network's mode is restored after).

    Args:
        network: the generator.
        requests: requests of :func:`rggan.inputs.build_inputs`.
        batch_size: requests per forward pass.
        device: where to run (default: the network's).
        progress: show a progress bar (on a terminal).

    Returns:
        CPU float tensors ``image``, ``mask``, ``alpha``, each (N, 1, S, S).
    """
    device = device or next(network.parameters()).device
    was_training = network.training
    network.eval()
    chunks: dict[str, list[torch.Tensor]] = {"image": [], "mask": [], "alpha": []}
    starts = range(0, len(requests), max(1, int(batch_size)))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generating", unit="batch", disable=None)  # None: no bar off a terminal
    try:
        for s in starts:
            b = collate_inputs(requests[s : s + batch_size])
            out = network(b["rna"].to(device), b["z"].to(device), b["base"].to(device))
            for k in chunks:
                chunks[k].append(getattr(out, k).float().cpu())
    finally:
        network.train(was_training)
    return {k: torch.cat(v) for k, v in chunks.items()}
