"""lbdvd-jax: learning-based depth-variant deconvolution (He et al., IEEE Photonics J. 2020) in JAX."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("lbdvd-jax")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

# Public API: one explicit re-export per name (add yours below, keep __all__ sorted).
from lbdvd_jax.bessel import j0, j1
from lbdvd_jax.checkpoint import PAPER_DELPNET, export_weights, load_delpnet
from lbdvd_jax.data import (
    BG_LABEL,
    CameraModel,
    add_camera_noise,
    bg_mask,
    defocus_crops,
    load_infocus_fields,
    make_eval_set,
    select_focal_plane,
    split_fields,
    synth_batch,
    tile_fields,
)
from lbdvd_jax.deconv import blind_richardson_lucy, richardson_lucy
from lbdvd_jax.defocus_map import DefocusMap, EstimatorDomainWarning, pool_neighbours
from lbdvd_jax.estimator import DefocusEstimator, EstimatorConfig, defocus_from_probs
from lbdvd_jax.estimator_weights import export_estimator, load_estimator
from lbdvd_jax.fit import FitResult, fit_defocus
from lbdvd_jax.io import TiffImage, read_tiff, write_tiff
from lbdvd_jax.model import DelpNet, DelpNetConfig, classify_patches
from lbdvd_jax.optics import Optics
from lbdvd_jax.patches import (
    depth_invariant_deconvolve,
    depth_variant_deconvolve,
    extract_patches,
    montage,
    patch_grid,
    rectangular_weights,
    seam_score,
    sharded_map,
    triangular_weights,
)
from lbdvd_jax.phantoms import phantom
from lbdvd_jax.pipeline import DEFAULT_ITERATIONS, Restoration, predict_levels, restore
from lbdvd_jax.psf import DEFOCUS_LEVELS_UM, defocus_psf, kernel_size_for, psf_stack
from lbdvd_jax.quality import psnr, ssim
from lbdvd_jax.spectral import noise_sigma, spectral_features
from lbdvd_jax.train import TrainConfig

__all__ = [
    "BG_LABEL",
    "CameraModel",
    "DEFAULT_ITERATIONS",
    "DEFOCUS_LEVELS_UM",
    "DefocusEstimator",
    "DefocusMap",
    "DelpNet",
    "DelpNetConfig",
    "EstimatorConfig",
    "EstimatorDomainWarning",
    "FitResult",
    "Optics",
    "PAPER_DELPNET",
    "Restoration",
    "TiffImage",
    "TrainConfig",
    "__version__",
    "add_camera_noise",
    "bg_mask",
    "blind_richardson_lucy",
    "classify_patches",
    "defocus_crops",
    "defocus_from_probs",
    "defocus_psf",
    "depth_invariant_deconvolve",
    "depth_variant_deconvolve",
    "export_estimator",
    "export_weights",
    "extract_patches",
    "fit_defocus",
    "j0",
    "j1",
    "kernel_size_for",
    "load_delpnet",
    "load_estimator",
    "load_infocus_fields",
    "make_eval_set",
    "montage",
    "noise_sigma",
    "patch_grid",
    "phantom",
    "pool_neighbours",
    "predict_levels",
    "psf_stack",
    "psnr",
    "read_tiff",
    "rectangular_weights",
    "restore",
    "richardson_lucy",
    "seam_score",
    "select_focal_plane",
    "sharded_map",
    "spectral_features",
    "split_fields",
    "ssim",
    "synth_batch",
    "tile_fields",
    "triangular_weights",
    "write_tiff",
]
