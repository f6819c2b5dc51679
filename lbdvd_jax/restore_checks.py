"""Checks of `restore`'s image and options, shared by `restore` and `restore_dask`.

Every bad argument is refused here, before any classification or deconvolution, with an
`InputError` that names the argument and the fix.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lbdvd_jax.constants import MODES, NUM_LEVELS
from lbdvd_jax.constants import PATCH_SIZE as PATCH
from lbdvd_jax.errors import InputError, InputTypeError
from lbdvd_jax.patches import patch_grid
from lbdvd_jax.pooling import pool_mode
from lbdvd_jax.psf import psf_stack
from lbdvd_jax.streaming import iteration_counts


def check_image(image):
    """The image as a float JAX array (2-D or a stack); InputError for other ranks, NaN/Inf or
    negative values."""
    image = jnp.asarray(image, copy=False)  # a float32 NumPy image is used in place (read only)
    if not jnp.issubdtype(image.dtype, jnp.floating):
        image = image.astype(jnp.float32)
    if image.ndim not in (2, 3):
        raise InputError(f"image: expected (H, W) or a stack (B, H, W) of one shape, got shape "
                         f"{image.shape}; restore each plane of other arrays separately")
    if not bool(jnp.all(jnp.isfinite(image))):
        raise InputError("image: holds NaN or Inf; replace them (np.nan_to_num) first")
    if float(jnp.min(image)) < 0:
        raise InputError(f"image: has negative values (min {float(jnp.min(image))}); RL needs "
                         "non-negative counts: clip at 0 or subtract less background")
    return image


def is_trained_model(model):
    """Whether `model` is a trained defocus estimator (the shipped one or the paper's DelpNet)."""
    from lbdvd_jax.estimator import DefocusEstimator
    from lbdvd_jax.model import DelpNet

    return isinstance(model, (DefocusEstimator, DelpNet))


def check_options(*, model, mode, levels, weights, stride, shape, optics, psf_depth_um, psf_size,
                   num_iter, defocus, z_um=None, pool=True):
    """Validate `restore`'s options (shared with `restore_dask`); returns the level PSF table."""
    if mode not in MODES:
        raise InputError(f"mode: got {mode!r}, expected one of {MODES}")
    if mode in ("dv", "soft") and model is None:
        raise InputError(f"model: mode {mode!r} needs a defocus estimator; pass model=load_delpnet()")
    if mode == "oracle" and (levels is None) == (z_um is None):
        raise InputError("levels, z_um: mode 'oracle' needs one of a level map (levels=(rows, cols) labels "
                         "or an (H, W) per-pixel map) or a depth map in µm (z_um=), not both")
    if mode != "oracle" and z_um is not None:
        raise InputError(f"z_um: a depth map is for mode='oracle', got mode={mode!r}")
    if not isinstance(weights, str):
        raise InputTypeError("weights: pass 'triangular' or 'rectangular' (array weights are "
                        "supported by patches.montage, not by restore)")
    if weights not in ("triangular", "rectangular"):
        raise InputError(f"weights: got {weights!r}, expected 'triangular' or 'rectangular'")
    if defocus not in ("levels", "continuous"):
        raise InputError(f"defocus: got {defocus!r}, expected 'levels' or 'continuous'")
    if defocus == "continuous" and mode != "dv":
        raise InputError(f"defocus: 'continuous' works with mode='dv', got mode={mode!r}")
    pool_mode(pool)  # an unknown pool is refused before any work
    patch_grid(tuple(shape), patch=PATCH, stride=stride)  # image size and stride
    if psf_depth_um is not None:
        depth = np.asarray(psf_depth_um, np.float64)
        if depth.shape != (NUM_LEVELS,) or not np.all(np.isfinite(depth)) or depth.min() < 0:
            raise InputError(f"psf_depth_um: got {psf_depth_um!r}, expected {NUM_LEVELS} finite depths "
                             ">= 0 in µm, one per level (e.g. DEFAULT_PSF_DEPTH_UM)")
        psfs = psf_stack(optics, jnp.asarray(depth, dtype=float), size=psf_size)
    else:
        psfs = psf_stack(optics, size=psf_size)
    iteration_counts(num_iter, jnp.zeros((1,), jnp.int32), psfs.shape[0])  # validate early
    return psfs
