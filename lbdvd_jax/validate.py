"""Eager input checks shared by the deconvolution engine (raise, never assert).

Every check names the argument, says what was expected and what came, and how to fix it.
Value checks (NaN/Inf, negatives, PSF normalisation) only run on concrete arrays: inside
``jit``/``vmap``/``grad`` the values are tracers and only shapes and dtypes are checked.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.errors import InputError, InputTypeError

__all__ = ["check_float_array", "check_image", "check_patches", "check_psf", "is_concrete"]


def is_concrete(x):
    """True when ``x`` holds values (NumPy or a committed jax.Array), not a tracer."""
    return not isinstance(x, jax.core.Tracer)


def check_float_array(x, name, *, ndim):
    """Shape/dtype check: a real floating array of rank ``ndim`` (ints are rejected).

    Returns:
        ``x`` as a jax array (no dtype change).
    """
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        x = np.asarray(x)
    dt = np.dtype(x.dtype)
    if not np.issubdtype(dt, np.floating):
        raise InputTypeError(f"{name} must be a real floating array (float32 or float64); got dtype "
                        f"{dt!s}. Fix: convert first, e.g. {name}.astype(np.float32).")
    if x.ndim != ndim:
        raise InputError(f"{name} must have rank {ndim}; got shape {tuple(x.shape)!r}. Fix: pass "
                         f"{'a single 2-D (H, W) plane' if ndim == 2 else f'a rank-{ndim} array'} "
                         f"(vmap over leading axes yourself).")
    return jnp.asarray(x)


def _check_values(x, name, *, allow_negative=False):
    if not is_concrete(x):
        return
    v = np.asarray(x)
    if not np.all(np.isfinite(v)):
        raise InputError(f"{name} contains NaN or Inf ({int(np.sum(~np.isfinite(v)))} values). "
                         f"Fix: replace them, e.g. np.nan_to_num({name}).")
    if not allow_negative and v.size and v.min() < 0:
        raise InputError(f"{name} has negative values (min {float(v.min())!r}); Richardson-Lucy "
                         f"needs non-negative intensities. Fix: subtract less background or "
                         f"np.clip({name}, 0, None).")


def check_image(image, name="image", *, ndim=2):
    """A non-negative, finite, floating image of rank ``ndim``; returns it as a jax array."""
    image = check_float_array(image, name, ndim=ndim)
    _check_values(image, name)
    return image


def check_psf(psf, name="psf", *, ndim=2, rtol=1e-3):
    """A finite, non-negative PSF with odd sizes that sums to 1 (within ``rtol``).

    Odd sizes put the centre on a pixel (index ``size // 2``) so that 'same' cropping is
    unambiguous, exactly as ``scipy.signal.fftconvolve(mode='same')`` for odd kernels.
    """
    psf = check_float_array(psf, name, ndim=ndim)
    for s in psf.shape[-2:]:
        if s % 2 == 0:
            raise InputError(f"{name} must have odd sizes (centre at size // 2); got shape "
                             f"{tuple(psf.shape)!r}. Fix: pad with one row/column of zeros or use "
                             f"an odd size such as kernel_size_for(optics, z).")
    _check_values(psf, name)
    if is_concrete(psf):
        sums = np.asarray(psf, np.float64).sum(axis=(-2, -1))
        if np.any(np.abs(sums - 1.0) > rtol):
            raise InputError(f"{name} must be normalised to sum 1 (per kernel); got sum(s) "
                             f"{np.round(sums, 6).tolist()!r}. Fix: {name} / {name}.sum() (a PSF of "
                             f"all zeros cannot be normalised).")
    return psf


def check_patches(patches, side, *, batch_size):
    """Raw patches for a classifier: (n, side, side) (or one (side, side), or (..., 1)), numeric,
    finite; returns them as a float32 NumPy array of shape (n, side, side)."""
    arr = np.asarray(patches)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputTypeError(f"patches: must be a numeric array of raw values, got dtype {arr.dtype}. "
                        "Fix: pass the image's pixels (uint8, uint16, float).")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3 or arr.shape[1:] != (side, side):
        raise InputError(f"patches: must have shape (n, {side}, {side}), got {np.shape(patches)}. "
                         f"Fix: cut the image into {side}x{side} patches first (patch_grid, "
                         "extract_patches).")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size: must be a positive int, got {batch_size!r}.")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"patches: hold {bad} NaN/Inf value(s). Fix: replace them "
                         "(np.nan_to_num) or drop those patches.")
    return arr
