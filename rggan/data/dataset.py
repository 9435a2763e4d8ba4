"""Prepared dataset folder -> MONAI dataset of RG-GAN training samples.

The prepared folder (written by ``rggan prepare``, format in ``docs/architecture.md``) holds one
``samples/<patient>/{image,mask,bases,rna}.npy`` set per patient and a ``datalist.json``.

:class:`RGGANDataset` has two layers:

* a MONAI :class:`~monai.data.CacheDataset` that runs the *deterministic* part once per patient
  (``LoadImaged(reader="NumpyReader")`` + ``EnsureTyped``) and keeps the tensors in memory;
* a thin random layer that, at every ``__getitem__``, picks one of the patient's K background
  patches ("base") and a "wrong" image/mask pair from a *different* patient.  Both come from the
  cache: nothing is re-read from disk (with ``cache_rate=1``).

Batch keys: ``image`` (1,S,S), ``mask`` (1,S,S), ``wrong_image``, ``wrong_mask``, ``base`` (1,S,S),
``rna`` (G,), ``patient`` (str).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import CacheDataset
from monai.transforms import Compose, EnsureTyped, LoadImaged, Randomizable
from monai.utils import MAX_SEED

from rggan.errors import InputError, NoUsableDataError

__all__ = [
    "DATALIST_NAME",
    "ARRAY_KEYS",
    "BATCH_KEYS",
    "load_datalist",
    "read_datalist_info",
    "sample_datalist",
    "ensure_prepared",
    "load_transform",
    "RGGANDataset",
]

DATALIST_NAME = "datalist.json"
#: datalist keys that hold a path to an ``.npy`` file (relative to the prepared folder)
ARRAY_KEYS = ("image", "mask", "bases", "rna")
#: keys of one training sample / batch
BATCH_KEYS = ("image", "mask", "wrong_image", "wrong_mask", "base", "rna", "patient")


def _read_datalist_json(prepared_dir: str | os.PathLike) -> dict:
    folder = Path(prepared_dir)
    path = folder / DATALIST_NAME
    if not path.is_file():
        raise NoUsableDataError(
            f"{folder} is not a prepared dataset folder: {DATALIST_NAME} is missing. "
            f"Run `rggan prepare --input <raw download> --output {folder}` first."
        )
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise NoUsableDataError(f"cannot read {path}: {e}. Re-run `rggan prepare` into {folder}.") from e


def read_datalist_info(prepared_dir: str | os.PathLike) -> dict:
    """The top-level fields of ``datalist.json`` (``image_size``, ``num_genes``, ``num_bases``, ``seed``, ...).

    Raises:
        NoUsableDataError: the folder has no readable ``datalist.json``.
    """
    content = _read_datalist_json(prepared_dir)
    return {k: v for k, v in content.items() if not isinstance(v, list)}


def load_datalist(prepared_dir: str | os.PathLike, split: str = "training", *, required: bool = True) -> list[dict]:
    """Read one split of a prepared folder's ``datalist.json``, with absolute ``.npy`` paths.

    Args:
        prepared_dir: the prepared dataset folder (output of ``rggan prepare``).
        split: ``"training"`` or ``"validation"``.
        required: if True, an empty split is an error; otherwise an empty list is returned.

    Returns:
        one dict per sample; the keys in :data:`ARRAY_KEYS` are absolute paths.

    Raises:
        NoUsableDataError: ``datalist.json`` is missing or unreadable, or (``required``) the split is empty.
    """
    folder = Path(prepared_dir).resolve()
    content = _read_datalist_json(folder)
    items = content.get(split) or []
    if not items and required:
        raise NoUsableDataError(
            f"{folder / DATALIST_NAME} has no '{split}' samples. Run `rggan prepare` again and check its "
            f"report ({folder / 'report.txt'}) for the patients that were excluded."
        )
    out = []
    for item in items:
        item = dict(item)
        for key in ARRAY_KEYS:
            if key not in item:
                raise NoUsableDataError(f"{folder / DATALIST_NAME}: a '{split}' entry has no '{key}' key: {item}")
            item[key] = str(folder / item[key])
        out.append(item)
    return out


def sample_datalist(prepared_dir: str | os.PathLike, num: int = 8) -> list[dict]:
    """``num`` fixed samples for visual monitoring: validation patients first, topped up with training ones."""
    items = load_datalist(prepared_dir, "validation", required=False)
    if len(items) < num:
        items = items + load_datalist(prepared_dir, "training")[: num - len(items)]
    return items[:num]


def ensure_prepared(
    dataset_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    *,
    image_size: int | None = None,
    progress: bool = True,
    **prepare_kwargs: Any,
) -> str:
    """Return a prepared dataset folder for ``dataset_dir``, preparing a raw download if needed.

    * ``dataset_dir`` holds a ``datalist.json``: it is used as it is.
    * otherwise it is taken to be a raw download (DICOM + RNA table) and
      :func:`rggan.data.prepare.prepare_dataset` writes ``prepared_dir`` (a no-op when the inputs and
      settings are unchanged, so calling this at every training start is cheap).

    Args:
        dataset_dir: a prepared folder or a raw download.
        prepared_dir: where to prepare a raw download.
        image_size: the image size the networks are built for; used to prepare, checked against a
            prepared folder.
        progress: show the prepare step's progress.
        prepare_kwargs: :class:`rggan.data.prepare.PrepareConfig` fields (``num_bases``, ``seed``, ...)
            and ``prepare_dataset`` arguments (``workers``, ``rna_path``).

    Raises:
        InputError: ``dataset_dir`` does not exist, or was prepared at another image size.
        NoUsableDataError: ``dataset_dir`` holds no file at all.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.exists():
        raise InputError(f"dataset folder {dataset_dir} does not exist (set --dataset_dir).")
    if (dataset_dir / DATALIST_NAME).is_file():
        folder = dataset_dir
    elif not dataset_dir.is_dir() or not any(p.is_file() for p in dataset_dir.rglob("*")):
        raise NoUsableDataError(
            f"dataset folder {dataset_dir} holds no data: expected a prepared folder (datalist.json, written by "
            "`rggan prepare`) or a raw download (the NBIA DICOM tree and GSE103584_R01_NSCLC_RNAseq.txt.gz)."
        )
    else:
        import dataclasses

        from rggan.data.prepare import PrepareConfig, prepare_dataset  # lazy: DICOM readers only when needed

        fields = {f.name for f in dataclasses.fields(PrepareConfig)}
        if image_size is not None:
            prepare_kwargs["image_size"] = int(image_size)
        config = PrepareConfig(**{k: v for k, v in prepare_kwargs.items() if k in fields})
        other = {k: v for k, v in prepare_kwargs.items() if k not in fields}
        log = logging.getLogger("rggan.train")
        log.info("preparing %s into %s", dataset_dir, prepared_dir)
        result = prepare_dataset(dataset_dir, prepared_dir, config=config, progress=progress, **other)
        n_train = sum(r.split == "training" for r in result.patients)
        log.info(
            "prepared %d patients (%d training, %d validation), excluded %d%s: see %s",
            len(result.included), n_train, len(result.included) - n_train, len(result.excluded),
            " (up to date)" if result.no_op else "", result.report.with_suffix(".txt"),
        )  # fmt: skip
        folder = Path(prepared_dir)
    info = read_datalist_info(folder)
    if image_size is not None and info.get("image_size") not in (None, int(image_size)):
        raise InputError(
            f"{folder} was prepared at image_size={info['image_size']} but image_size={image_size} was asked for: "
            f"pass --image_size {info['image_size']} or prepare the raw data again."
        )
    return str(folder)


@functools.cache
def _load_numpy(keys: tuple[str, ...]) -> LoadImaged:
    # one instance per key set: MONAI's LoadImage builds every default reader at construction, and the DICOM
    # one warns each time that nvImageCodec is missing (stateless, so sharing it is safe)
    return LoadImaged(keys=keys, reader="NumpyReader", image_only=True)


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
    ) -> None:
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
        bases = item["bases"]
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
        return self.transform(sample) if self.transform is not None else sample
