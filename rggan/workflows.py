"""Components of the MONAI bundle's workflows: the bundle configs wire them, they do the work.

* :class:`PrepareStep`: training's prepare step (``train.yaml`` calls it in its ``initialize`` list), so no
  data are prepared while the config resolves.
* :class:`ConfigOverlay`: one bundle config file parsed on its own, with ids handed over by the config that
  uses it. ``inference.yaml``, ``radiogenomic_map.yaml`` and ``evaluate.yaml`` share the checkpoint generator
  block of ``configs/generator.yaml`` this way: MONAI merges config files only when a command lists them all,
  and each of these workflows runs from a single ``--config_file``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from rggan.data.dataset import DATALIST_NAME, ensure_prepared

__all__ = ["PrepareStep", "ConfigOverlay"]


class PrepareStep:
    """Training's prepare step: a raw download is prepared into ``output_dir``, a prepared folder is used as is.

    Building the step reads no data; :meth:`run` prepares (the bundle's ``initialize`` list calls it, after
    seeding and before anything reads the prepared folder). A re-run on unchanged inputs and settings is a
    no-op, so calling it at every training start is cheap.

    Args:
        dataset_dir: a prepared folder (holding ``datalist.json``) or a raw download (DICOM + RNA table).
        output_dir: where a raw download is prepared.
        image_size: the image size the networks are built for: used to prepare, checked against a prepared
            folder.
        progress: show the prepare step's progress.
        prepare_kwargs: :class:`rggan.data.prepare.PrepareConfig` fields (``num_bases``, ``crop_mm``,
            ``permute_rna``, ``seed``, ...) and ``prepare_dataset`` arguments (``workers``, ``rna_path``).
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        *,
        image_size: int | None = None,
        progress: bool = True,
        **prepare_kwargs: Any,
    ) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.output_dir = Path(output_dir)
        self.image_size = image_size
        self.progress = progress
        self.prepare_kwargs = prepare_kwargs

    @property
    def prepared_dir(self) -> str:
        """The folder training reads: ``dataset_dir`` if it holds ``datalist.json``, else ``output_dir``.

        Returns:
            The path :meth:`run` returns, known before it runs.
        """
        prepared = (self.dataset_dir / DATALIST_NAME).is_file()
        return str(self.dataset_dir if prepared else self.output_dir)

    def run(self) -> str:
        """Prepare a raw download (if ``dataset_dir`` is one) and check the image size.

        Returns:
            :attr:`prepared_dir`.

        Raises:
            InputError: ``dataset_dir`` does not exist, or was prepared at another image size.
            NoUsableDataError: ``dataset_dir`` holds no file at all.
        """
        return ensure_prepared(
            self.dataset_dir, self.output_dir, image_size=self.image_size, progress=self.progress,
            **self.prepare_kwargs,
        )  # fmt: skip


class ConfigOverlay:
    """A bundle config file parsed on its own, with ids set by the config that uses it.

    The overlay's ``@`` references resolve among its own ids and the ``values`` given here, so the including
    config keeps its overridable ids (``--embed_dim 128`` on the command line) and hands them over as
    arguments, while the wiring they feed is written once, in the overlay.

    Args:
        config_file: the overlay, e.g. ``<bundle_root>/configs/generator.yaml``.
        values: ids of the overlay to set, taken as config content (already resolved values: paths,
            numbers, devices; a string starting with ``$``, ``@`` or ``%`` would be parsed again).
    """

    def __init__(self, config_file: str | os.PathLike, **values: Any) -> None:
        self.config_file = str(config_file)
        self.parser = ConfigParser()
        self.parser.read_config(self.config_file)
        self.parser.update(values)

    def get(self, id: str) -> Any:
        """The overlay's item ``id``, resolved (instantiated or evaluated) once and then cached.

        Args:
            id: a config id of the overlay, e.g. ``"network"``.

        Returns:
            The parsed content.
        """
        return self.parser.get_parsed_content(id)
