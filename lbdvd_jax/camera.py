"""Camera noise of the synthetic data, calibrated on BBBC006, and the paper's bg rule.

Eq. 1's Poisson model made camera-like: counts = offset + gain * N + read, N ~ Poisson((mu -
offset) / gain) photoelectrons, read ~ Normal(0, read_noise). Measured on the real BBBC006
images (high-pass variance vs local mean, flat regions of the in-focus fields and all of the z00
fields, 118-690 counts, spatially white): var = gain * (mean - offset) + read_noise^2 with gain
~ 0.33 counts per photoelectron, offset 100 counts, read_noise ~ 1.3 counts.

References:
    D. He et al., IEEE Photonics J. 12(2):3900513 (2020), Sec. 2.1, Eq. 1 (bg rule: max < 230
    and max - min < 30 counts).
    S. J. Yang et al., BMC Bioinformatics 19:77 (2018): degrade.py (photoelectrons, offset).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.errors import InputError

__all__ = ["GAIN", "OFFSET", "READ_NOISE", "CameraModel", "add_camera_noise", "bg_mask", "camera_variance",
           "shaped_normal"]

GAIN = 0.33  #: camera gain in counts per photoelectron (measured on BBBC006, see module doc)
OFFSET = 100.0  #: camera offset in counts (BBBC006, Yang et al.'s degrade.py)
READ_NOISE = 1.3  #: read noise, standard deviation in counts (BBBC006 fit intercept)

class CameraModel(NamedTuple):
    """Camera noise parameters (a pytree); defaults measured on BBBC006 (module docstring).

    Pass as keywords: `synth_batch(..., **CameraModel(gain=0.5)._asdict())`.

    Attributes:
        gain: counts per photoelectron (variance slope of counts vs mean counts).
        offset: camera offset in counts (the count of zero photoelectrons).
        read_noise: Gaussian read noise, standard deviation in counts.
    """

    gain: float = GAIN
    offset: float = OFFSET
    read_noise: float = READ_NOISE


def _normal(key, shape, dtype):
    """Standard normals by Box-Muller on 16-bit halves of one random word per pair.

    About 2x faster than `jax.random.normal` on CPU; |z| is capped at 4.7 (P = 3e-6 per draw).
    """
    n = int(np.prod(shape))
    bits = jax.random.bits(key, ((n + 1) // 2,), jnp.uint32)
    u1 = ((bits >> 16).astype(dtype) + 0.5) / 65536.0
    u2 = (bits & 0xFFFF).astype(dtype) * (2.0 * np.pi / 65536.0)
    r = jnp.sqrt(-2.0 * jnp.log(u1))
    return jnp.concatenate([r * jnp.cos(u2), r * jnp.sin(u2)])[:n].reshape(shape)


def add_camera_noise(key, expected_counts, *, gain=GAIN, offset=OFFSET, read_noise=READ_NOISE,
                     present=0.0, method="normal"):
    """Camera noise on expected counts: Poisson photoelectrons above the offset, plus read noise.

    counts = offset + gain * N + read, N ~ Poisson(max(mu - offset, 0) / gain),
    read ~ Normal(0, read_noise); so E = mu (above the offset) and
    Var = gain * (mu - offset) + read_noise^2.

    Args:
        key: `jax.random` key.
        expected_counts: array of expected counts mu.
        gain: counts per photoelectron (BBBC006: ~0.33, i.e. ~3 photoelectrons per count).
        offset: camera offset in counts.
        read_noise: standard deviation of the Gaussian read noise in counts.
        present: fraction (0..1, broadcastable) of that variance the input already carries
            (e.g. sum(psf^2) for a blurred noisy field); only the rest, (1 - present), is added.
        method: static; 'normal' (default): a Gaussian with the Poisson mean and variance (fast;
            exact in the first two moments, indistinguishable after integer rounding at the
            >= 20 photoelectrons of BBBC006's background), or 'poisson': exact Poisson draws
            (`jax.random.poisson`, about 20x slower on CPU).

    Returns:
        Noisy counts (not rounded), dtype of `expected_counts` (float).
    """
    mu = jnp.asarray(expected_counts)
    if not jnp.issubdtype(mu.dtype, jnp.floating):
        mu = mu.astype(jnp.float32)
    dtype = mu.dtype
    electrons = jnp.maximum(mu - offset, 0.0) / gain
    if method == "normal":  # shot and read noise in one Gaussian draw
        noise = jnp.sqrt(gain * gain * electrons + read_noise ** 2) * _normal(key, mu.shape, dtype)
    elif method == "poisson":
        k_shot, k_read = jax.random.split(key)
        shot = jax.random.poisson(k_shot, electrons, mu.shape).astype(dtype) - electrons
        noise = gain * shot + read_noise * jax.random.normal(k_read, mu.shape, dtype)
    else:
        raise InputError(f"method: got {method!r}, expected 'normal' or 'poisson'")
    scale = jnp.sqrt(jnp.clip(1.0 - jnp.asarray(present, dtype), 0.0, 1.0))
    return (mu + scale * noise).astype(dtype)


def camera_variance(expected_counts, *, gain=GAIN, offset=OFFSET, read_noise=READ_NOISE):
    """Variance of the counts at expected counts mu: gain * max(mu - offset, 0) + read_noise^2
    (NumPy in, NumPy out; JAX in, JAX out)."""
    xp = jnp if isinstance(expected_counts, jax.Array) else np
    return gain * xp.maximum(expected_counts - offset, 0.0) + read_noise ** 2


def shaped_normal(key, shape, kept_power, dtype=jnp.float32):
    """Standard normals over the last two axes of `shape` with power spectrum 1 - kept_power(f):
    the fresh part of camera noise when a blurred field still holds kept_power(f) = kept x
    |H(f)|^2 of its own (white) noise, so that the two add up to a flat spectrum.

    Args:
        key: `jax.random` key.
        shape: (..., h, w) of the noise.
        kept_power: broadcastable to (..., h, w // 2 + 1) (`jnp.fft.rfft2` layout), clipped to [0, 1].
        dtype: float dtype.
    """
    white = jnp.fft.rfft2(jax.random.normal(key, shape, dtype))
    return jnp.fft.irfft2(white * jnp.sqrt(jnp.clip(1.0 - kept_power, 0.0, 1.0)), s=tuple(shape[-2:]))


def bg_mask(patches, *, bg_max=230.0, bg_range=30.0):
    """The paper's bg rule on patches in counts: max < bg_max and max - min < bg_range.

    Args:
        patches: (..., h, w) counts (16-bit scale, not divided by 65535).
        bg_max, bg_range: thresholds in counts (paper: 230 and 30).

    Returns:
        bool array of shape patches.shape[:-2].
    """
    hi = jnp.max(patches, axis=(-2, -1))
    lo = jnp.min(patches, axis=(-2, -1))
    return (hi < bg_max) & (hi - lo < bg_range)
