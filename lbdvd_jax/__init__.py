"""lbdvd-jax: learning-based depth-variant deconvolution (He et al., IEEE Photonics J. 2020) in JAX."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("lbdvd-jax")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

# Public API: one explicit re-export per name (add yours below, keep __all__ sorted).
from lbdvd_jax.optics import Optics
from lbdvd_jax.psf import DEFOCUS_LEVELS_UM, defocus_psf, kernel_size_for, psf_stack
from lbdvd_jax.bessel import j0, j1
from lbdvd_jax.fit import FitResult, fit_defocus
from lbdvd_jax.data import (
    BG_LABEL, CameraModel, add_camera_noise, bg_mask, defocus_crops, load_infocus_fields,
    make_eval_set, select_focal_plane, split_fields, synth_batch, tile_fields,
)
from lbdvd_jax.phantoms import phantom

__all__ = [
    "BG_LABEL",
    "CameraModel",
    "DEFOCUS_LEVELS_UM",
    "FitResult",
    "Optics",
    "__version__",
    "add_camera_noise",
    "bg_mask",
    "defocus_crops",
    "defocus_psf",
    "fit_defocus",
    "j0",
    "j1",
    "kernel_size_for",
    "load_infocus_fields",
    "make_eval_set",
    "phantom",
    "psf_stack",
    "select_focal_plane",
    "split_fields",
    "synth_batch",
    "tile_fields",
]
