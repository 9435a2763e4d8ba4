"""Prepared dataset folder -> MONAI dataset of RG-GAN training samples.

The prepared folder (written by ``rggan prepare``, format in ``docs/architecture.md``) holds one
``samples/<patient>/{image,mask,bases,rna}.npy`` set per patient and a ``datalist.json``, read by
:mod:`rggan.data.datalist` (whose names are re-exported here).

:class:`RGGANDataset` has two layers:

* a MONAI :class:`~monai.data.CacheDataset` that runs the *deterministic* part once per patient
  (``LoadImaged(reader="NumpyReader")`` + ``EnsureTyped``) and keeps the tensors in memory;
* a thin random layer that, at every ``__getitem__``, picks one of the patient's K background
  patches ("base") and a "wrong" image/mask pair from a *different* patient.  Both come from the
  cache: nothing is re-read from disk (with ``cache_rate=1``).

Batch keys: ``image`` (1,S,S), ``mask`` (1,S,S), ``wrong_image``, ``wrong_mask``, ``base`` (1,S,S),
``rna`` (G,), ``patient`` (str); with a folder prepared with ``margin_mm`` (or ``margin_slices``) also
``margin`` (), the patient's slice-averaged margin irregularity (NaN where none was measurable).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import CacheDataset
from monai.transforms import Compose, EnsureTyped, LoadImaged, RandGaussianNoised, Randomizable
from monai.utils import MAX_SEED

from rggan.data.datalist import (
    ARRAY_KEYS,
    DATALIST_NAME,
    ensure_prepared,
    load_datalist,
    read_datalist_info,
    sample_datalist,
)
from rggan.errors import NoUsableDataError

__all__ = [
    "DATALIST_NAME",
    "ARRAY_KEYS",
    "BATCH_KEYS",
    "load_datalist",
    "read_datalist_info",
    "sample_datalist",
    "ensure_prepared",
    "load_transform",
    "expression_noise",
    "RGGANDataset",
]

#: keys of one training sample / batch (plus ``margin`` from a folder prepared with ``margin_mm`` or ``margin_slices``)
BATCH_KEYS = ("image", "mask", "wrong_image", "wrong_mask", "base", "rna", "patient")


@functools.cache
def _load_numpy(keys: tuple[str, ...]) -> LoadImaged:
    # one instance per key set: MONAI's LoadImage builds every default reader at construction, and the DICOM
    # one warns each time that nvImageCodec is missing (stateless, so sharing it is safe)
    return LoadImaged(keys=keys, reader="NumpyReader", image_only=True)


def expression_noise(std: float) -> Compose | None:
    """The training samples' expression augmentation: N(0, std^2) added to every gene of ``rna``.

    The expression vectors are z-scored (``rggan.data.rna``), so ``std`` is in SDs of each gene. Noise on
    the inputs of a regression is a ridge penalty on its input-output map (Bishop 1995), aimed at the
    generator's fit of each training patient's slice noise; a ridge also spreads a driver's weight over its
    co-expressed genes (measured in the bundle's conditioning notes). A fresh draw per sample and epoch
    (the dataset seeds it); the evaluation and the maps see clean vectors.

    Args:
        std: noise SD in gene SDs; 0 turns the augmentation off.

    Returns:
        the transform for :class:`RGGANDataset` (``transform=``), or None when ``std`` is 0.
    """
    if not std >= 0:
        raise ValueError(f"rna noise std must be >= 0 (0: off), got {std!r}")
    if std == 0:
        return None
    return Compose(
        [
            RandGaussianNoised(keys="rna", prob=1.0, std=float(std), sample_std=False),
            EnsureTyped(keys="rna", data_type="tensor", dtype=torch.float32, track_meta=False),  # a plain tensor
        ]
    )


def load_transform(keys: KeysCollection = ARRAY_KEYS) -> Compose:
    """The deterministic (cacheable) part: ``.npy`` paths -> plain float tensors."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    return Compose(
        [
            _load_numpy(keys),
            EnsureTyped(keys=keys, data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )


class RGGANDataset(Randomizable, torch.utils.data.Dataset):
    """Cached per-patient samples plus the per-draw random base patch and "wrong" pair.

    Args:
        data: datalist items (:func:`load_datalist`), at least two different patients.
        transform: optional transform applied to each assembled sample dict (e.g. augmentation);
            if it is :class:`~monai.transforms.Randomizable` it is seeded together with this dataset.
        cache_rate: fraction of patients cached by :class:`~monai.data.CacheDataset`; the rest are
            loaded from disk each time they are used (as the sample or as a wrong pair).
        num_workers: threads used to fill the cache.
        seed: seed of the dataset's random generator.
        progress: show the cache-filling progress bar.
        base_pool: where each draw's background patch comes from: ``"patient"`` (one of the patient's own
            patches) or ``"any"`` (a patch of any patient in ``data``, so G cannot tell the patient by its
            background).

    Randomness and workers:
        all draws use ``self.R`` (a ``numpy.random.RandomState``, MONAI's ``Randomizable`` convention).
        With ``num_workers=0`` the same seed gives the same sequence of draws.  ``monai.data.DataLoader``
        re-seeds the dataset from torch's generator (seeded by ``monai.utils.set_determinism``): in the
        main process when it is built, and in every worker process (``worker_init_fn``) with the
        worker's own seed, so workers never repeat each other's draws and runs stay reproducible for a
        fixed ``num_workers``.  With a plain ``torch.utils.data.DataLoader`` the first draw inside a
        worker re-seeds from ``torch.utils.data.get_worker_info().seed`` for the same effect.
    """

    def __init__(
        self,
        data: Sequence[Mapping],
        transform: Callable | None = None,
        cache_rate: float = 1.0,
        num_workers: int | None = 1,
        seed: int = 0,
        progress: bool = False,
        base_pool: str = "patient",
    ) -> None:
        if base_pool not in ("patient", "any"):
            raise ValueError(f"base_pool must be 'patient' or 'any', got {base_pool!r}")
        self.base_pool = base_pool
        self.data = [dict(d) for d in data]
        patients = [str(d.get("patient", i)) for i, d in enumerate(self.data)]
        if len(set(patients)) < 2:
            raise NoUsableDataError(
                f"RG-GAN training needs at least two patients (for the 'wrong' pairs); got {len(set(patients))}."
            )
        self.patients = patients
        # indices grouped by patient: a patient's samples occupy order[start:stop]
        self._order = np.array(sorted(range(len(patients)), key=lambda i: patients[i]), dtype=np.int64)
        self._block: list[tuple[int, int]] = [(0, 0)] * len(patients)
        start = 0
        for k in range(1, len(patients) + 1):
            if k == len(patients) or patients[self._order[k]] != patients[self._order[start]]:
                for j in self._order[start:k]:
                    self._block[int(j)] = (start, k)
                start = k
        self.transform = transform
        self.cache = CacheDataset(
            data=self.data,
            transform=load_transform(),
            cache_rate=cache_rate,
            num_workers=num_workers,
            progress=progress,
        )
        self._rng_pid: int | None = None
        self.set_random_state(seed=seed)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RGGANDataset:
        super().set_random_state(seed=seed, state=state)
        self._rng_pid = os.getpid()
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed=self.R.randint(MAX_SEED, dtype="uint32"))
        return self

    def __len__(self) -> int:
        return len(self.data)

    def randomize(self, index: int) -> int:
        """Draw the index of the "wrong" pair for sample ``index``: uniform over the other patients' samples."""
        start, stop = self._block[index]
        k = int(self.R.randint(len(self.data) - (stop - start)))  # position among the other patients' samples
        return int(self._order[k if k < start else k + (stop - start)])

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = torch.utils.data.get_worker_info()
        if info is not None and self._rng_pid != os.getpid():  # plain torch DataLoader worker: own stream
            self.set_random_state(seed=info.seed % MAX_SEED)
        index = int(index)
        wrong = self.randomize(index)
        item, other = self.cache[index], self.cache[wrong]
        donor = item if self.base_pool == "patient" else self.cache[int(self.R.randint(len(self.data)))]
        bases = donor["bases"]
        k = int(self.R.randint(bases.shape[0]))
        sample = {
            "image": item["image"],
            "mask": item["mask"],
            "wrong_image": other["image"],
            "wrong_mask": other["mask"],
            "base": bases[k : k + 1],
            "rna": item["rna"],
            "patient": self.patients[index],
        }
        if "margin" in item:  # prepare's slice-averaged margin; NaN where none was measurable
            m = item["margin"]
            sample["margin"] = torch.tensor(float("nan") if m is None else float(m), dtype=torch.float32)
        return self.transform(sample) if self.transform is not None else sample
