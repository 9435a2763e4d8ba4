"""Test helper: damage a fraction of a download's DICOM files in five ways (the prepare hardening test).

The damage is deterministic for a seed. Every damaged file is returned with the way it was damaged, so a test
can compare prepare's report with what was done.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

__all__ = ["MODES", "pixel_data_offset", "damage_file", "damage_download"]

#: The five kinds of damage, applied round-robin to the chosen files.
MODES = ("truncated", "emptied", "header", "pixel", "preamble")


def pixel_data_offset(path: Path) -> int:
    """Byte offset of the PixelData value of a DICOM file (its length is read from the header, not decoded)."""
    ds = pydicom.dcmread(path, defer_size=256)
    item = ds.get_item(0x7FE00010, keep_deferred=True)
    return int(item.value_tell)


def damage_file(path: Path, mode: str, rng: np.random.Generator, n_bytes: int = 6) -> None:
    """Damage one file in place.

    Args:
        path: a DICOM file with pixel data.
        mode: one of :data:`MODES`: ``truncated`` keeps 20-90 % of the bytes (cut inside the pixel data or the
            header), ``emptied`` leaves 0 bytes, ``header`` flips ``n_bytes`` bytes between the DICM marker and
            the pixel data, ``pixel`` flips ``n_bytes`` pixel-data bytes, ``preamble`` overwrites the 128-byte
            preamble and the DICM marker.
        rng: random generator.
        n_bytes: bytes flipped by ``header`` and ``pixel``.
    """
    data = bytearray(path.read_bytes())
    if mode == "truncated":
        data = data[: int(len(data) * rng.uniform(0.2, 0.9))]
    elif mode == "emptied":
        data = bytearray()
    elif mode in ("header", "pixel"):
        start = pixel_data_offset(path)
        lo, hi = (132, start - 8) if mode == "header" else (start, len(data))
        for pos in rng.choice(np.arange(lo, hi), size=n_bytes, replace=False):
            data[int(pos)] ^= 0xFF
    elif mode == "preamble":
        data[:132] = rng.integers(0, 256, 132, dtype=np.uint8).tobytes()
    else:
        raise ValueError(f"unknown damage mode {mode!r}; expected one of {MODES}")
    path.write_bytes(bytes(data))


def damage_download(root: Path, fraction: float = 0.03, seed: int = 0) -> dict[Path, str]:
    """Damage ``fraction`` of the ``.dcm`` files under ``root``, the five :data:`MODES` in turn.

    Args:
        root: a (copied) demo download.
        fraction: share of the DICOM files to damage (at least 5 files, one per mode).
        seed: seed of the file choice and of the damaged bytes.

    Returns:
        Damaged file -> mode.
    """
    rng = np.random.default_rng(seed)
    files = sorted(Path(root).rglob("*.dcm"))
    n = max(len(MODES), int(round(fraction * len(files))))
    chosen = [files[i] for i in sorted(rng.choice(len(files), size=n, replace=False))]
    modes = [MODES[i % len(MODES)] for i in rng.permutation(n)]
    damaged = {}
    for path, mode in zip(chosen, modes):
        damage_file(path, mode, rng)
        damaged[path] = mode
    return damaged
