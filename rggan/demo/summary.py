"""What a demo generation wrote: :class:`DemoSummary`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoSummary"]


@dataclass
class DemoSummary:
    """What :func:`rggan.demo.generate_demo_dataset` wrote.

    ``root`` is the folder holding ``NSCLC Radiogenomics/`` (i.e. ``<output>/manifest-<n>``); ``collection`` the
    ``NSCLC Radiogenomics`` folder itself. Patient lists by category (sorted):

    * ``gan_cohort``: R01 with CT + SEG + RNA (the usable patients)
    * ``no_rna``: R01 with CT + SEG but no RNA column
    * ``no_seg``: R01 with CT + RNA but no SEG
    * ``rna_only``: R01 in the RNA table without any imaging
    * ``ct_only``: AMC patients with CT only
    """

    output: Path
    root: Path
    collection: Path
    metadata_csv: Path
    rna_file: Path
    truth_file: Path
    masks_file: Path
    layout: str
    seed: int
    ct_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    gan_cohort: list[str] = field(default_factory=list)
    no_rna: list[str] = field(default_factory=list)
    no_seg: list[str] = field(default_factory=list)
    rna_only: list[str] = field(default_factory=list)
    ct_only: list[str] = field(default_factory=list)
    seg_kinds: dict[str, str] = field(default_factory=dict)
    n_files: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        """A short human summary (what ``rggan demo-data`` prints)."""
        extras = len(self.no_rna) + len(self.no_seg) + len(self.rna_only) + len(self.ct_only)
        z, y, x = self.ct_shape
        return "\n".join([
            f"Demo download written to {self.output} in {self.seconds:.1f} s "
            f"({self.layout} NBIA layout, seed {self.seed}):",
            f"  {self.n_files} DICOM files: {len(self.gan_cohort)} usable patients (CT + SEG + RNA) and {extras} that "
            f"prepare must exclude; CT {x}x{y}x{z} voxels",
            f"  RNA table: {self.rna_file}",
            f"  planted gene effects: {self.truth_file}",
            f"Next: rggan prepare --input {self.output} --output <prepared folder>, or train on it directly.",
        ])  # fmt: skip

    @property
    def imaging_patients(self) -> list[str]:
        """Patients with imaging (sorted)."""
        return sorted(self.gan_cohort + self.no_rna + self.no_seg + self.ct_only)

    @property
    def rna_patients(self) -> list[str]:
        """Patients in the RNA table (sorted)."""
        return sorted(self.gan_cohort + self.no_seg + self.rna_only)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict, paths as strings."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
        return d
