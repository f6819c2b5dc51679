"""Synthetic defocus of whole images, and the bundled sample fields.

A real in-focus field blurred by the Eq. 2 PSF of a depth that varies over the field (a tilted
plane plus a smooth undulation: the paper's motivating case, Sec. 2.3), with camera noise as
calibrated on BBBC006 (`camera.py`): what the demo, the evaluation and the examples restore.
Library code: it imports no application module.
"""

from __future__ import annotations

import importlib.resources
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.camera import OFFSET, add_camera_noise
from lbdvd_jax.optics import Optics
from lbdvd_jax.psf import psf_stack

__all__ = ["blur_same_reflect", "bundled_path", "depth_variant_blur", "synthesize_defocus", "tilted_depth_map",
           "true_patch_levels"]


def bundled_path(name: str) -> pathlib.Path:
    """Path of a bundled demo image: 'a01_infocus.tif' or 'a01_z00.tif'."""
    return pathlib.Path(str(importlib.resources.files("lbdvd_jax") / "data" / name))


def tilted_depth_map(shape, *, z_max_um: float = 20.0, seed: int = 0) -> np.ndarray:
    """A tilted plane plus a smooth undulation, clipped to [0, z_max_um] µm.

    Args:
      shape: (H, W).
      z_max_um: largest defocus in µm (keyword-only).
      seed: phase of the undulation (keyword-only).

    Returns:
      float32 array (H, W) of defocus distances in µm.
    """
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 2)
    tilt = 0.05 + 0.9 * x / max(w - 1, 1)
    wave = 0.12 * np.sin(2 * np.pi * y / (0.9 * h) + phase[0]) * np.cos(np.pi * x / w + phase[1])
    return (z_max_um * np.clip(tilt + wave, 0.0, 1.0)).astype(np.float32)


def blur_same_reflect(image, kernel):
    """'same'-size FFT convolution of `image` with an odd `kernel`, borders reflected."""
    r = kernel.shape[-1] // 2
    padded = jnp.pad(image, r, mode="symmetric")
    return jax.scipy.signal.fftconvolve(padded, kernel, mode="valid")


def depth_variant_blur(image, depth_um, *, optics=Optics(), size: int = 49,
                       offset: float = 0.0):
    """Blurs each object pixel with the Eq. 2 PSF of its own depth (linear in z between levels).

    out = offset + sum_k h_k * (w_k(z) (image - offset)), with w_k the linear interpolation
    weights of z between the 2-µm levels; borders are reflected.

    Args:
      image: (H, W) in-focus image in counts.
      depth_um: (H, W) defocus in µm, within [0, 20].
      optics: `Optics` (keyword-only).
      size: odd kernel size (keyword-only, static).
      offset: camera offset in counts, kept out of the blur (keyword-only).
    """
    image = jnp.asarray(image, jnp.float32)
    psfs = psf_stack(optics, size=size).astype(image.dtype)
    level = jnp.clip(jnp.asarray(depth_um, image.dtype) / 2.0, 0.0, psfs.shape[0] - 1.0)
    signal = image - offset
    out = jnp.zeros_like(image)
    for k in range(psfs.shape[0]):
        weight = jnp.clip(1.0 - jnp.abs(level - k), 0.0, 1.0)
        out = out + blur_same_reflect(signal * weight, psfs[k])
    return out + offset


def synthesize_defocus(image, *, optics=Optics(), level: int | None = None, seed: int = 0,
                       noise: bool = True):
    """Synthetic defocus of an in-focus image: one level everywhere, or the tilted depth map.

    Camera noise is `lbdvd_jax.data.add_camera_noise` (Poisson photoelectrons above the 100-count
    offset, gain 0.33, read noise), less the part the blurred real field still carries.

    Returns:
      (blurred image float32 (H, W), depth map in µm (H, W)).
    """
    image = np.asarray(image, np.float32)
    if level is None:
        depth = tilted_depth_map(image.shape, seed=seed)
    else:
        depth = np.full(image.shape, 2.0 * level, np.float32)
    blurred = depth_variant_blur(image, depth, optics=optics, offset=OFFSET)
    if noise:
        # the real field already carries camera noise, and blurring keeps sum(psf^2) of it
        psfs = psf_stack(optics, size=49)
        kept = jnp.sum(psfs**2, axis=(1, 2))
        lev = jnp.clip(jnp.asarray(depth) / 2.0, 0.0, 10.0)
        present = jnp.interp(lev, jnp.arange(11.0), kept)
        blurred = jnp.round(add_camera_noise(jax.random.PRNGKey(seed), blurred, present=present))
    return np.asarray(blurred, np.float32), depth


def true_patch_levels(depth_um, origins, *, patch: int = 84):
    """Oracle labels: the depth at each patch centre, rounded to the nearest 2-µm level."""
    cy = np.minimum(origins[:, 0] + patch // 2, depth_um.shape[0] - 1)
    cx = np.minimum(origins[:, 1] + patch // 2, depth_um.shape[1] - 1)
    return np.clip(np.rint(np.asarray(depth_um)[cy, cx] / 2.0), 0, 10).astype(np.int32)
