"""Image-quality metrics in JAX: PSNR with the 16-bit peak, and SSIM (Wang et al. 2004).

Both work on one image pair `(..., H, W)` and reduce over the last two axes, so a stack of
patches gives one value per patch. Intensities are raw camera counts; the paper's PSNR values
(59-64 dB) imply the 16-bit peak 65535.

References:
  Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
  visibility to structural similarity", IEEE Trans. Image Process. 13(4):600-612, 2004.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lbdvd_jax.errors import InputError

PEAK_16BIT = 65535.0


def _check_pair(reference, estimate):
    reference = jnp.asarray(reference)
    estimate = jnp.asarray(estimate)
    if reference.ndim < 2 or estimate.ndim < 2:
        raise InputError(f"reference: expected images (..., H, W), got shapes {reference.shape} "
                         f"and {estimate.shape}")
    if reference.shape[-2:] != estimate.shape[-2:]:
        raise InputError(f"estimate: shape {estimate.shape} differs from reference "
                         f"{reference.shape}; pass images of the same (H, W)")
    dtype = jnp.result_type(reference.dtype, estimate.dtype, jnp.float32)
    shape = jnp.broadcast_shapes(reference.shape, estimate.shape)
    return (jnp.broadcast_to(reference.astype(dtype), shape),
            jnp.broadcast_to(estimate.astype(dtype), shape))


def psnr(reference, estimate, *, data_range: float = PEAK_16BIT):
    """Peak signal-to-noise ratio in dB over the last two axes.

    Args:
      reference: ground-truth image(s), shape (..., H, W), in counts.
      estimate: image(s) of the same (H, W); leading axes broadcast.
      data_range: the peak value (keyword-only; default 65535, the 16-bit peak the paper uses).

    Returns:
      Array of shape (...) in dB; +inf where the images are identical.

    Examples:
      >>> float(psnr(jnp.zeros((8, 8)), jnp.ones((8, 8))))  # doctest: +ELLIPSIS
      96.32...
    """
    reference, estimate = _check_pair(reference, estimate)
    mse = jnp.mean((reference - estimate) ** 2, axis=(-2, -1))
    safe = jnp.where(mse > 0, mse, 1.0)
    return jnp.where(mse > 0, 10.0 * jnp.log10(data_range**2 / safe), jnp.inf)


def _gaussian_taps(sigma: float, truncate: float, dtype):
    radius = int(truncate * sigma + 0.5)  # scipy.ndimage.gaussian_filter's radius
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return jnp.asarray(w / w.sum(), dtype=dtype)


def _valid_filter(x, taps):
    """Separable 'valid' correlation with a symmetric 1-D kernel over the last two axes."""
    k = taps.shape[0]
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    rows = sum(taps[i] * x[..., i:i + h, :] for i in range(k))
    return sum(taps[j] * rows[..., :, j:j + w] for j in range(k))


def ssim(reference, estimate, *, data_range: float | jnp.ndarray = PEAK_16BIT,
         sigma: float = 1.5, truncate: float = 3.5, k1: float = 0.01, k2: float = 0.03,
         return_map: bool = False):
    """Mean structural similarity (Wang et al. 2004) with an 11-tap Gaussian window.

    Equals `skimage.metrics.structural_similarity(reference, estimate, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=data_range)`: the SSIM map is averaged
    over the pixels at least `radius` (5 px) from the border, where no padding is involved.

    Args:
      reference: ground-truth image(s), shape (..., H, W) with H, W >= 11.
      estimate: image(s) of the same shape.
      data_range: dynamic range L in C1 = (k1 L)^2, C2 = (k2 L)^2 (keyword-only; default the
        16-bit peak 65535; may be an array broadcasting against (...), e.g. per-patch ranges).
      sigma: Gaussian window width in pixels (keyword-only, static).
      truncate: window radius in units of sigma, as scipy's (keyword-only, static).
      k1: luminance constant (keyword-only).
      k2: contrast constant (keyword-only).
      return_map: also return the SSIM map over the valid region (keyword-only, static).

    Returns:
      Array of shape (...) (and the map, shape (..., H - 2r, W - 2r), when `return_map`).

    References:
      Wang et al., IEEE TIP 13(4):600-612, 2004.
    """
    reference, estimate = _check_pair(reference, estimate)
    taps = _gaussian_taps(sigma, truncate, reference.dtype)
    if min(reference.shape[-2:]) < taps.shape[0]:
        raise InputError(f"reference: images must be at least {taps.shape[0]} px on each side "
                         f"for sigma={sigma}, got {reference.shape[-2:]}")
    data_range = jnp.asarray(data_range, reference.dtype)[..., None, None]
    mu_x = _valid_filter(reference, taps)
    mu_y = _valid_filter(estimate, taps)
    var_x = _valid_filter(reference * reference, taps) - mu_x * mu_x
    var_y = _valid_filter(estimate * estimate, taps) - mu_y * mu_y
    cov = _valid_filter(reference * estimate, taps) - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
            / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))
    value = jnp.mean(smap, axis=(-2, -1))
    return (value, smap) if return_map else value


def psnr_gain(reference, degraded, restored, *, data_range: float = PEAK_16BIT):
    """PSNR improvement in dB of `restored` over `degraded` (the paper's Fig. 8(a) quantity)."""
    return (psnr(reference, restored, data_range=data_range)
            - psnr(reference, degraded, data_range=data_range))


__all__ = ["PEAK_16BIT", "psnr", "psnr_gain", "ssim"]
