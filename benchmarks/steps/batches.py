"""In-memory training data of the plain loops (bare and proto)."""

from __future__ import annotations

import torch


def load_arrays(prepared: str) -> dict[str, torch.Tensor]:
    """Every training patient's arrays as stacked tensors (the bare/proto loops' in-memory data).

    Args:
        prepared: a prepared dataset folder.

    Returns:
        ``{"image", "mask", "bases", "rna"}`` stacked over the training patients.
    """
    import numpy as np

    from rggan.data.dataset import load_datalist

    items = load_datalist(prepared, "training")
    return {
        "image": torch.from_numpy(np.stack([np.load(d["image"]) for d in items])),
        "mask": torch.from_numpy(np.stack([np.load(d["mask"]) for d in items])),
        "bases": torch.from_numpy(np.stack([np.load(d["bases"]) for d in items])),
        "rna": torch.from_numpy(np.stack([np.load(d["rna"]) for d in items])),
    }


class Batches:
    """Random batches like the dataset's: shuffled patients, a wrong pair from another patient, a random base.

    Args:
        arrays: the output of :func:`load_arrays`.
        batch_size: samples per batch.
        seed: seed of the batch generator.
        channels_last: return 4-D tensors in ``torch.channels_last``.
    """

    def __init__(self, arrays: dict, batch_size: int, seed: int, channels_last: bool = False) -> None:
        self.a, self.b = arrays, batch_size
        self.n = arrays["image"].shape[0]
        self.gen = torch.Generator().manual_seed(seed)
        self.cl = channels_last

    def __call__(self) -> dict[str, torch.Tensor]:
        """The next batch: image, mask, wrong_image, wrong_mask, base (B, 1, S, S) and rna."""
        n, b = self.n, self.b
        idx = torch.randperm(n, generator=self.gen)[:b]
        wrong = (idx + torch.randint(1, n, (b,), generator=self.gen)) % n
        k = torch.randint(self.a["bases"].shape[1], (b,), generator=self.gen)
        out = {
            "image": self.a["image"][idx],
            "mask": self.a["mask"][idx],
            "wrong_image": self.a["image"][wrong],
            "wrong_mask": self.a["mask"][wrong],
            "base": self.a["bases"][idx, k][:, None],
            "rna": self.a["rna"][idx],
        }
        if self.cl:
            out = {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in out.items()}
        return out
