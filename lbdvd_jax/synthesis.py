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

from lbdvd_jax.camera import GAIN, OFFSET, READ_NOISE, add_camera_noise, camera_variance, shaped_normal
from lbdvd_jax.errors import InputError
from lbdvd_jax.optics import Optics
from lbdvd_jax.psf import psf_stack

__all__ = ["NOISE_MODES", "blur_same_reflect", "bundled_path", "depth_variant_blur", "matched_noise",
           "synthesize_defocus", "tilted_depth_map", "true_patch_levels"]


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


NOISE_MODES = ("white", "matched")  #: `synthesize_defocus(noise=...)`: how the camera noise is completed


def matched_noise(key, expected, depth_um, *, optics=Optics(), size: int = 49, gain: float = GAIN,
                  offset: float = OFFSET, read_noise: float = READ_NOISE):
    """`expected` plus the camera noise that a blurred real field lacks, frequency by frequency.

    A real in-focus field carries white camera noise; blurred by a PSF with transfer function H,
    that noise keeps power v |H(f)|^2. Fresh white noise of variance (1 - sum(h^2)) v (the
    'white' completion) restores the variance but not the spectrum: low frequencies keep more
    than v, high ones less (1.75x and 0.88x at 2 µm, `examples/focus_ambiguity.py`), a texture no
    real defocused image has. Here the fresh noise is filtered by sqrt(1 - |H(f)|^2) instead, so
    that the blurred old noise plus the fresh noise has the flat spectrum v of real camera noise
    (v = gain (mu - offset) + read_noise^2 at the expected counts mu). Between levels the
    filtered noises of the two neighbouring levels are mixed with the blur's linear weights.

    Args:
        key: `jax.random` key.
        expected: (H, W) blurred counts (the field's own noise blurred in).
        depth_um: (H, W) defocus in µm (as `depth_variant_blur`).
        optics, size, gain, offset, read_noise: the PSF and the camera (keyword-only).

    Returns:
        (H, W) float counts (not rounded).
    """
    expected = jnp.asarray(expected, jnp.float32)
    h, w = expected.shape
    psfs = psf_stack(optics, size=size).astype(jnp.float32)
    level = np.clip(np.asarray(depth_um, np.float32) / 2.0, 0.0, psfs.shape[0] - 1.0)
    fresh = jnp.zeros((h, w), jnp.float32)
    for k in np.unique(np.concatenate([np.floor(level).ravel(), np.ceil(level).ravel()])).astype(int):
        weight = jnp.asarray(np.clip(1.0 - np.abs(level - k), 0.0, 1.0))  # the levels with a weight only
        kernel = jnp.zeros((h, w), jnp.float32).at[:size, :size].set(psfs[k] / jnp.sum(psfs[k]))
        kept = jnp.abs(jnp.fft.rfft2(kernel)) ** 2  # |H|: the kernel's place on the grid does not matter
        fresh = fresh + weight * shaped_normal(key, (h, w), kept)
    return expected + jnp.sqrt(camera_variance(expected, gain=gain, offset=offset, read_noise=read_noise)) * fresh


def synthesize_defocus(image, *, optics=Optics(), level: int | None = None, seed: int = 0,
                       noise: bool | str = True):
    """Synthetic defocus of an in-focus image: one level everywhere, or the tilted depth map.

    Camera noise is `lbdvd_jax.data.add_camera_noise` (Poisson photoelectrons above the 100-count
    offset, gain 0.33, read noise), less the part the blurred real field still carries.

    Args:
      image: (H, W) in-focus field in counts (it carries its own camera noise).
      optics: `Optics` (keyword-only).
      level: one level 0..10 everywhere, or None for `tilted_depth_map` (keyword-only).
      seed: noise and depth-map seed (keyword-only).
      noise: True / 'white' (default): fresh white noise of the variance the blur removed, as
        the training data and the paper; 'matched': fresh noise shaped so that the total has the
        flat spectrum of real camera noise (`matched_noise`); False: none.

    Returns:
      (blurred image float32 (H, W), depth map in µm (H, W)).
    """
    if noise is True:
        noise = "white"
    if noise is not False and noise not in NOISE_MODES:
        raise InputError(f"noise: got {noise!r}, expected True, False or one of {NOISE_MODES}")
    image = np.asarray(image, np.float32)
    if level is None:
        depth = tilted_depth_map(image.shape, seed=seed)
    else:
        depth = np.full(image.shape, 2.0 * level, np.float32)
    blurred = depth_variant_blur(image, depth, optics=optics, offset=OFFSET)
    if noise == "white":
        # the real field already carries camera noise, and blurring keeps sum(psf^2) of it
        psfs = psf_stack(optics, size=49)
        kept = jnp.sum(psfs**2, axis=(1, 2))
        lev = jnp.clip(jnp.asarray(depth) / 2.0, 0.0, 10.0)
        present = jnp.interp(lev, jnp.arange(11.0), kept)
        blurred = jnp.round(add_camera_noise(jax.random.PRNGKey(seed), blurred, present=present))
    elif noise == "matched":
        blurred = jnp.round(matched_noise(jax.random.PRNGKey(seed), blurred, depth, optics=optics))
    return np.asarray(blurred, np.float32), depth


def true_patch_levels(depth_um, origins, *, patch: int = 84):
    """Oracle labels: the depth at each patch centre, rounded to the nearest 2-µm level."""
    cy = np.minimum(origins[:, 0] + patch // 2, depth_um.shape[0] - 1)
    cx = np.minimum(origins[:, 1] + patch // 2, depth_um.shape[1] - 1)
    return np.clip(np.rint(np.asarray(depth_um)[cy, cx] / 2.0), 0, 10).astype(np.int32)
