"""Per-variant training steps of ``benchmarks/train_step.py``.

* :mod:`steps.batches`: the in-memory data of the plain loops;
* :mod:`steps.nets`: networks, optimisers and EMA copy they share, and the shared start of a step;
* :mod:`steps.bare`: (b) a bare PyTorch loop over the product's networks and losses;
* :mod:`steps.proto`: (c) a re-creation of the prototype's step;
* :mod:`steps.loop`: runs and times (b) or (c);
* :mod:`steps.product`: (a) the product path (bundle config + ``RGGanTrainer`` + handlers), timed by Ignite events;
* :mod:`steps.report`: the summary, ratios, table and JSON payload of the driver.

The modules import the benchmarks' ``common`` module, so ``benchmarks/`` must be on ``sys.path``
(``train_step.py`` puts it there).
"""

#: the variants, in the order they are launched in a round
VARIANTS: tuple[str, ...] = ("product", "bare", "proto")

#: seed of networks, batches and latents in every variant
SEED = 12345
