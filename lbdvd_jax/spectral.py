"""Scale-free spectral evidence of defocus in one patch: noise floor, radial power spectrum.

Defocus multiplies the object's spectrum by the OTF |H_z(f)|^2, which falls off and rings
faster the larger z is (Eq. 2), while camera noise adds a flat floor. The radially averaged
power spectrum of a patch over its own noise floor therefore shows where the signal sinks into
the noise and where the OTF's rings sit, independently of the object's brightness. Every
function here works on one patch of raw values and is *affine-invariant*: ``f(a x + b) ==
f(x)`` for a > 0, so an image given as uint16 counts, 8-bit (÷16), float 0..1 or 3x brighter
yields the same features up to quantisation. Batch with ``jax.vmap``.

Noise floor: the 2x2 Haar diagonal detail d = (x00 - x01 - x10 + x11) / 2 has the standard
deviation σ of white pixel noise and almost no smooth signal. Iterative 2σ clipping of d
(each mean square corrected by the truncated-Gaussian factor `CLIP_FACTOR`) estimates σ
robustly where sharp objects cover part of the patch: Donoho's wavelet-MAD idea with a
clipped mean square instead of the median, so that quantised 8-bit data with most details 0
still gives σ > 0, and without a sort (XLA's CPU sort would cost more than the rest).

References:
    D. L. Donoho, "De-noising by soft-thresholding", IEEE Trans. Inf. Theory 41(3), 1995.
    S. J. Yang et al., BMC Bioinformatics 19:77 (2018) (focus from local image statistics).
    S. Jiang et al., Biomed. Opt. Express 9(4):1601 (2018) (Fourier-domain inputs for defocus).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.errors import InputError

__all__ = ["NUM_STATS", "CLIP_FACTOR", "feature_size", "noise_sigma", "normalise_patch", "radial_bin_matrix",
           "radial_power_spectrum", "spectral_features"]

_CLIP = 2.0  # clip |d| at this many current σ
_CLIP_ITERS = 8
_PHI = math.exp(-0.5 * _CLIP ** 2) / math.sqrt(2.0 * math.pi)
#: E[z² | |z| < 2] for z ~ N(0, 1): the clipped mean square of pure noise is σ² times this
CLIP_FACTOR = 1.0 - 2.0 * _CLIP * _PHI / math.erf(_CLIP / math.sqrt(2.0))
NUM_STATS = 4  #: intensity statistics appended after the spectral bins


def _haar_diagonal(patch):
    return 0.5 * (patch[:-1, :-1] - patch[:-1, 1:] - patch[1:, :-1] + patch[1:, 1:])


@jax.jit  # eager callers (the domain warning) reuse one program per shape instead of a new loop
def noise_sigma(patch):
    """Standard deviation of the white pixel noise of one patch, from its finest-scale detail.

    Args:
        patch: (h, w) float array, any intensity scale (h, w >= 4).

    Returns:
        scalar σ in the patch's units (0 for a constant patch); σ(a x + b) = a σ(x).
    """
    d2 = jnp.square(_haar_diagonal(patch))
    var = jnp.mean(d2)

    def clip(_, v):
        keep = d2 < (_CLIP * _CLIP) * v
        n = jnp.maximum(jnp.sum(keep), 1)
        return jnp.where(v > 0, jnp.sum(jnp.where(keep, d2, 0.0)) / n / CLIP_FACTOR, v)

    return jnp.sqrt(jax.lax.fori_loop(0, _CLIP_ITERS, clip, var))


@functools.lru_cache(maxsize=16)
def radial_bin_matrix(height, width, num_bins):
    """(height * (width // 2 + 1), num_bins + 1) averaging matrix of an rfft2 power spectrum.

    Bin b < num_bins averages the frequencies with radius ρ (cycles/px) in
    (b / (2 num_bins), (b + 1) / (2 num_bins)]; bin num_bins the corners ρ > 0.5. DC is left out.
    Rows and columns are real Hermitian halves, so the half-plane average equals the full one
    up to the Nyquist column's weight. NumPy float64, cached per shape.
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    rho = np.sqrt(fy ** 2 + fx ** 2).ravel()
    idx = np.minimum(np.ceil(rho * 2 * num_bins).astype(int) - 1, num_bins)
    m = np.zeros((rho.size, num_bins + 1), np.float64)
    ok = rho > 0
    m[np.flatnonzero(ok), idx[ok]] = 1.0
    counts = m.sum(0)
    if np.any(counts == 0):
        raise InputError(f"num_bins: {num_bins} bins leave some empty for a {height}x{width} patch; "
                         f"use at most {min(height, width) // 4} bins")
    return m / counts


def _taper(n, dtype, taper=1.0):
    """Tukey window of length n: cosine tapers over `taper` / 2 of each end (1.0 = Hann)."""
    t = (jnp.arange(n, dtype=dtype) + 0.5) / n
    if taper <= 0:
        return jnp.ones((n,), dtype)
    a = taper / 2.0
    rise = 0.5 - 0.5 * jnp.cos(jnp.pi * jnp.minimum(t, 1.0 - t) / a)
    return jnp.where(jnp.minimum(t, 1.0 - t) < a, rise, 1.0).astype(dtype)


def radial_power_spectrum(patch, *, num_bins=24, taper=1.0):
    """Radially averaged power of the windowed, mean-removed patch, bins as
    `radial_bin_matrix` (static `num_bins`; static `taper`: Tukey window, 1.0 = Hann).

    Args:
        patch: (h, w) float array.

    Returns:
        (num_bins + 1,) mean |FFT|² per bin, in the patch's units squared.
    """
    h, w = patch.shape
    win = _taper(h, patch.dtype, taper)[:, None] * _taper(w, patch.dtype, taper)[None, :]
    x = (patch - jnp.mean(patch)) * win
    power = jnp.square(jnp.abs(jnp.fft.rfft2(x))).ravel()
    return power @ jnp.asarray(radial_bin_matrix(h, w, num_bins), patch.dtype)


def feature_size(num_bins=24):
    """Length of `spectral_features`' vector."""
    return num_bins + 1 + NUM_STATS


def spectral_features(patch, *, num_bins=24, taper=1.0):
    """The scale-free defocus evidence of one patch (affine-invariant, see module docstring).

    Args:
        patch: (h, w) raw values (counts, 8-bit, float; any offset and gain).
        num_bins: static number of radial bins up to Nyquist (plus one corner bin).
        taper: static Tukey taper of the window (1.0 = Hann; smaller keeps objects near the
            patch border in view, at the price of more spectral leakage).

    Returns:
        (num_bins + 1 + 4,) float: log10 of each bin's power over the white-noise floor
        σ² Σ window² (0 where noise alone), then log10 of std/σ, of 1 + (max - mean)/σ,
        of 1 + (mean - min)/σ, and of the untrimmed over the trimmed finest-scale detail (edges).
    """
    patch = jnp.asarray(patch)
    if not jnp.issubdtype(patch.dtype, jnp.floating):
        patch = patch.astype(jnp.float32)
    h, w = patch.shape
    mean = jnp.mean(patch)
    std = jnp.std(patch)
    tiny = jnp.finfo(patch.dtype).tiny
    # floor relative to the patch's own scale, so a constant or ultra-smooth patch stays finite
    sigma = jnp.maximum(noise_sigma(patch), 1e-6 * (std + jnp.abs(mean)) + tiny)
    win2 = (jnp.sum(jnp.square(_taper(h, patch.dtype, taper)))
            * jnp.sum(jnp.square(_taper(w, patch.dtype, taper))))
    spec = radial_power_spectrum(patch, num_bins=num_bins, taper=taper) / (sigma ** 2 * win2)
    edges = jnp.sqrt(jnp.mean(jnp.square(_haar_diagonal(patch)))) / sigma
    stats = jnp.stack([std / sigma, 1.0 + (jnp.max(patch) - mean) / sigma,
                       1.0 + (mean - jnp.min(patch)) / sigma, edges])
    return jnp.log10(jnp.concatenate([spec + 1e-3, stats + 1e-3]))


def normalise_patch(patch):
    """(patch - mean) / std (affine-invariant; a constant patch gives zeros)."""
    patch = jnp.asarray(patch)
    mean = jnp.mean(patch)
    std = jnp.std(patch)
    safe = jnp.where(std > 0, std, 1.0)
    return jnp.where(std > 0, (patch - mean) / safe, jnp.zeros_like(patch))
