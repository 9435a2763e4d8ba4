"""Group-lasso regularisation of the gene encoder's input layer, as a proximal step after each iteration.

With ~100 patients and hundreds to thousands of genes, the encoder's first layer has far more weights
than the data can pin down: the weights of genes that carry no image information keep their random
initial values (their gradients are mean-zero noise), and every such gene then has a small, spurious
effect in the synthesis map. The group lasso (Yuan & Lin 2006) penalises ``lam * sum_g ||W[:, g]||_2``
over the genes' weight columns; its proximal step (block soft-thresholding)::

    W[:, g] <- W[:, g] * max(0, 1 - tau / ||W[:, g]||_2)

shrinks every column by ``tau`` (Euclidean norm) per iteration and sets to zero those whose gradient
steps do not consistently outgrow it. Genes whose expression helps G satisfy its losses keep their
weights; genes that do not are removed from the encoder, and from the map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.engine import Engine, Events
from torch import nn

__all__ = ["GeneGroupLasso"]


class GeneGroupLasso:
    """Proximal group-lasso step on ``layer.weight`` (out_features x genes) after every iteration.

    Args:
        layer: the encoder's first linear layer (``generator.gene_encoder[0]``).
        tau: shrinkage of each gene column's norm per iteration (``lr * lambda`` of proximal gradient); 0: off.
        scales: optional per-gene multipliers of ``tau`` (the adaptive group lasso,
            :func:`rggan.adaptive_lasso.adaptive_lasso_scales`); None: the same ``tau`` for every gene.
    """

    def __init__(self, layer: nn.Linear, tau: float = 2e-4, scales: Sequence[float] | None = None) -> None:
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        self.layer = layer
        self.tau = float(tau)
        n_genes = layer.weight.shape[1]
        s = torch.ones(1, n_genes) if scales is None else torch.as_tensor(scales, dtype=torch.float32).reshape(1, -1)
        if s.shape[1] != n_genes or not bool((s >= 0).all()):
            raise ValueError(f"scales must be {n_genes} non-negative numbers (one per gene), got {tuple(s.shape)}")
        self.taus = (self.tau * s).to(layer.weight.device, layer.weight.dtype)  # per-column shrinkage

    def attach(self, engine: Engine) -> None:
        """One proximal step after every iteration; ``engine.state.metrics["active_genes"]`` at every epoch end.

        Attach it before the metric loggers (``StatsHandler``, ``TensorBoardStatsHandler``) so they log the count.
        """
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._record_active_genes)

    def _record_active_genes(self, engine: Engine) -> None:
        engine.state.metrics["active_genes"] = self.active_genes()

    @torch.no_grad()
    def step(self) -> None:
        """One proximal step (in place)."""
        if self.tau == 0:
            return
        w = self.layer.weight
        norms = w.norm(dim=0, keepdim=True)
        w.mul_((1 - self.taus / norms.clamp(min=1e-12)).clamp(min=0))

    def __call__(self, engine: Engine) -> None:
        """:meth:`step`."""
        self.step()

    def active_genes(self) -> int:
        """Number of genes whose column is non-zero."""
        return int((self.layer.weight.norm(dim=0) > 0).sum())
