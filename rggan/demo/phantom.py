"""Synthetic chest phantoms: body, lungs with texture, spine, and one nodule shaped by its phenotypes.

Coordinates are patient LPS millimetres (x to the patient's left, y posterior, z head-wards); volumes are
``(Z, Y, X)`` with slice 0 lowest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Anatomy", "Nodule", "Phantom", "sample_phantom", "render", "pet_activity", "lung_taper"]

_CHEST_WALL_MM = 12.0


@dataclass
class Anatomy:
    """Elliptic body and lungs (semi-axes and lung centres in mm) and the lung-texture plane waves."""

    body_ax: float
    body_ay: float
    lung_cx: float
    lung_cy: float
    lung_ax: float
    lung_ay: float
    waves: np.ndarray  # (K, 4): kx, ky, kz (rad/mm), phase


@dataclass
class Nodule:
    """A nodule: a sphere whose radius is modulated by lobulation and spicules (``irregularity``)."""

    center: np.ndarray  # (x, y, z) mm
    radius: float
    irregularity: float
    mean_hu: float
    texture_hu: float
    side: str
    lob_dirs: np.ndarray
    lob_phase: np.ndarray
    spike_dirs: np.ndarray

    def radius_at(self, u: np.ndarray) -> np.ndarray:
        """Radius (mm) along unit directions ``u`` (..., 3)."""
        lob = np.cos(2.0 * np.pi * (u @ self.lob_dirs.T) + self.lob_phase).mean(axis=-1)
        spk = np.minimum(np.clip(u @ self.spike_dirs.T, 0.0, None) ** 40, 1.0).sum(axis=-1)
        return self.radius * (1.0 + self.irregularity * (0.4 * lob + 1.0 * np.minimum(spk, 1.0)))

    @property
    def max_radius(self) -> float:
        """An upper bound of :meth:`radius_at`."""
        return self.radius * (1.0 + 1.4 * self.irregularity)


@dataclass
class Phantom:
    """One patient's phantom: anatomy, nodule, the IPP of the first slice and the nodule's slice index."""

    anatomy: Anatomy
    nodule: Nodule
    origin: tuple[float, float, float]
    centre_slice: float


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def lung_taper(t: np.ndarray | float) -> np.ndarray | float:
    """Lung size factor along z (t = 0 bottom slice, 1 top slice: lungs narrow towards the apex)."""
    return 1.0 - 0.2 * np.asarray(t) ** 2


def _z_centre(nz: int, rz: float, rng: np.random.Generator) -> float:
    """Nodule centre (slice index, float) kept inside the volume and away from the middle slice."""
    lo, hi = rz + 1.0, nz - 2.0 - rz
    c = (nz - 1) / 2.0
    band = max(2.0, 0.12 * nz)
    if hi < lo:
        return c
    segments = [(lo, min(hi, c - band)), (max(lo, c + band), hi)]
    segments = [(a, b) for a, b in segments if b >= a]
    if not segments:
        return lo if abs(lo - c) >= abs(hi - c) else hi
    a, b = segments[int(rng.integers(0, len(segments)))]
    return float(rng.uniform(a, b))


def _sample_anatomy(rng: np.random.Generator) -> Anatomy:
    f = float(rng.uniform(0.96, 1.02))
    return Anatomy(
        body_ax=168.0 * float(rng.uniform(0.96, 1.02)),
        body_ay=132.0 * float(rng.uniform(0.95, 1.03)),
        lung_cx=80.0 * f,
        lung_cy=-5.0,
        lung_ax=72.0 * f,
        lung_ay=103.0 * f,
        waves=np.concatenate(
            [_unit_vectors(rng, 8) * (2 * np.pi / rng.uniform(6.0, 25.0, (8, 1))), rng.uniform(0, 2 * np.pi, (8, 1))],
            axis=1,
        ),
    )


def sample_phantom(
    rng: np.random.Generator,
    phenotypes: Mapping[str, float],
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
) -> Phantom:
    """Draw anatomy, scan position and a nodule with the given phenotypes, placed inside one lung.

    Args:
        rng: the patient's generator.
        phenotypes: ``radius_mm``, ``irregularity``, ``mean_hu`` and ``texture_hu`` of the nodule.
        shape: ``(Z, Y, X)`` of the CT.
        spacing: ``(dz, dy, dx)`` in mm.

    Returns:
        the phantom; the nodule centre lies off the middle slice, at least its maximum radius inside the lung.
    """
    nz, ny, nx = shape
    dz, dy, dx = spacing
    anat = _sample_anatomy(rng)
    origin = (round(-(nx - 1) / 2 * dx, 4), round(-(ny - 1) / 2 * dy, 4), round(float(rng.uniform(-320, -150)), 1))
    nod = Nodule(
        center=np.zeros(3),
        radius=phenotypes["radius_mm"],
        irregularity=phenotypes["irregularity"],
        mean_hu=phenotypes["mean_hu"],
        texture_hu=phenotypes["texture_hu"],
        side="left" if rng.random() < 0.5 else "right",
        lob_dirs=_unit_vectors(rng, 3),
        lob_phase=rng.uniform(0, 2 * np.pi, 3),
        spike_dirs=_unit_vectors(rng, 10),
    )
    rmax = nod.max_radius
    kc = _z_centre(nz, rmax / dz, rng)
    s = float(lung_taper(min(1.0, (kc + rmax / dz) / max(nz - 1, 1))))
    ax_ = max(anat.lung_ax * s - rmax - 4.0, 0.0)
    ay_ = max(anat.lung_ay * s - rmax - 4.0, 0.0)
    rr, th = math.sqrt(float(rng.random())) * 0.8, float(rng.uniform(0, 2 * np.pi))
    sgn = 1.0 if nod.side == "left" else -1.0  # LPS: +x is the patient's left
    nod.center = np.array(
        [sgn * anat.lung_cx + rr * ax_ * math.cos(th), anat.lung_cy + rr * ay_ * math.sin(th), origin[2] + kc * dz]
    )
    return Phantom(anatomy=anat, nodule=nod, origin=origin, centre_slice=kc)


def _nodule_in_slice(
    nod: Nodule, xx: np.ndarray, yy: np.ndarray, z: float, lung: np.ndarray, step: float
) -> np.ndarray | None:
    """Pixels of the slice at height ``z`` inside the nodule and the lung, or None when none is near."""
    ddx = xx - nod.center[0]
    ddy = yy - nod.center[1]
    ddz = np.full_like(ddx, z - nod.center[2])
    dist = np.sqrt(ddx**2 + ddy**2 + ddz**2)
    near = dist <= nod.max_radius + step
    if not near.any():
        return None
    u = np.stack([ddx[near], ddy[near], ddz[near]], axis=-1) / np.maximum(dist[near], 1e-6)[:, None]
    inside = np.zeros(xx.shape, bool)
    inside[near] = dist[near] <= nod.radius_at(u)
    inside &= lung
    return inside


def _lung_slice(anat: Anatomy, xx: np.ndarray, yy: np.ndarray, inner: np.ndarray, taper: float) -> np.ndarray:
    lg = np.zeros(xx.shape, bool)
    for sgn in (-1.0, 1.0):
        ex = ((xx - sgn * anat.lung_cx) / (anat.lung_ax * taper)) ** 2
        lg |= ex + ((yy - anat.lung_cy) / (anat.lung_ay * taper)) ** 2 <= 1
    return lg & inner


def render(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    anat: Anatomy,
    nod: Nodule | None,
    rng: np.random.Generator,
    fov_padding: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HU volume (float32, NaN outside the scan FOV when ``fov_padding``), lung mask and nodule mask, (Z, Y, X)."""
    nz, ny, nx = shape
    dz, dy, dx = spacing
    xs = origin[0] + dx * np.arange(nx)
    ys = origin[1] + dy * np.arange(ny)
    xx, yy = np.meshgrid(xs, ys)
    hu = np.empty(shape, np.float32)
    lung = np.zeros(shape, bool)
    mask = np.zeros(shape, np.uint8)
    body = (xx / anat.body_ax) ** 2 + (yy / anat.body_ay) ** 2 <= 1.0
    # the lungs stay inside a chest wall (~12 mm), as in a real thorax: they never touch the outside air
    inner = (xx / (anat.body_ax - _CHEST_WALL_MM)) ** 2 + (yy / (anat.body_ay - _CHEST_WALL_MM)) ** 2 <= 1.0
    spine = (xx**2 + (yy - anat.body_ay * 0.72) ** 2) <= 16.0**2
    fov = (xx - xs.mean()) ** 2 + (yy - ys.mean()) ** 2 <= (min(nx * dx, ny * dy) / 2.0) ** 2
    # lung texture: sum of plane waves; cos(a + b) = cos a cos b - sin a sin b with a in-plane, b per slice
    kxy = anat.waves[:, 0:1] * xx.reshape(1, -1) + anat.waves[:, 1:2] * yy.reshape(1, -1)
    cos_a, sin_a = np.cos(kxy), np.sin(kxy)
    norm = math.sqrt(len(anat.waves) / 2.0)
    base = np.where(body, 40.0, -1000.0)
    noise_sd = np.where(body, 12.0, 4.0)
    n_spine = int((spine & body).sum())
    for k in range(nz):
        z = origin[2] + k * dz
        lg = _lung_slice(anat, xx, yy, inner, float(lung_taper(k / max(nz - 1, 1))))
        b = anat.waves[:, 2] * z + anat.waves[:, 3]
        tex = ((np.cos(b) @ cos_a - np.sin(b) @ sin_a) / norm).reshape(ny, nx)
        noise = rng.standard_normal((ny, nx))
        sl = np.where(lg, -850.0 + 35.0 * tex + 18.0 * noise, base + noise_sd * noise)
        sl[spine & body] = 450.0 + 40.0 * rng.standard_normal(n_spine)
        if nod is not None and abs(z - nod.center[2]) <= nod.max_radius + dz:
            inside = _nodule_in_slice(nod, xx, yy, z, lg, max(dx, dy))
            if inside is not None:
                mask[k] = inside
                sl[inside] = nod.mean_hu + nod.texture_hu * rng.standard_normal(int(inside.sum()))
        if fov_padding:
            sl = np.where(fov, sl, np.nan)
        hu[k] = sl
        lung[k] = lg
    return hu, lung, mask


def pet_activity(
    hu: np.ndarray, lung: np.ndarray, mask: np.ndarray, radius_mm: float, rng: np.random.Generator
) -> tuple[np.ndarray, int, int]:
    """A PET activity map (Bq/ml) of the phantom, block-averaged to about 64 pixels across, with 10 % noise.

    Args:
        hu: the CT volume (NaN outside the field of view).
        lung: lung mask.
        mask: nodule mask.
        radius_mm: nodule radius (the nodule's uptake grows with it).
        rng: draws the noise.

    Returns:
        ``(activity, fz, fxy)``: the map and its block sizes along z and in-plane.
    """
    nz, ny, nx = hu.shape
    fxy = max(1, nx // 64)
    fz = 2 if nz >= 8 else 1
    act = np.where(np.isnan(hu), 0.0, np.where(hu > -500, 1500.0, 50.0))
    act[lung] = 300.0
    act[mask > 0] = 6000.0 + 40.0 * radius_mm
    pz, py, px = nz // fz, ny // fxy, nx // fxy
    act = act[: pz * fz, : py * fxy, : px * fxy].reshape(pz, fz, py, fxy, px, fxy).mean(axis=(1, 3, 5))
    act = act * (1.0 + 0.1 * rng.standard_normal(act.shape))
    return act, fz, fxy
