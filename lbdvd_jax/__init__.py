"""lbdvd-jax: learning-based depth-variant deconvolution (He et al., IEEE Photonics J. 2020) in JAX.

Public names are imported lazily (PEP 562), so `import lbdvd_jax` and the `lbdvd --help` /
`--version` commands do not start JAX; the first use of a name imports its module.
"""

from importlib import import_module as _import_module
from importlib import metadata as _metadata
from typing import TYPE_CHECKING

try:
    __version__ = _metadata.version("lbdvd-jax")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

# Public API: one entry per name -> its module (add yours, keep __all__ sorted).
_EXPORTS = {
    "BG_LABEL": "lbdvd_jax.constants",
    "BlindDeconvolution": "lbdvd_jax.deconv",
    "CameraModel": "lbdvd_jax.camera",
    "Classification": "lbdvd_jax.model",
    "DEFAULT_ITERATIONS": "lbdvd_jax.policy",
    "DEFAULT_PSF_DEPTH_UM": "lbdvd_jax.policy",
    "DEFOCUS_LEVELS_UM": "lbdvd_jax.psf",
    "DefocusEstimator": "lbdvd_jax.estimator",
    "DefocusMap": "lbdvd_jax.defocus_map",
    "DelpNet": "lbdvd_jax.model",
    "DelpNetConfig": "lbdvd_jax.model",
    "DepthSurface": "lbdvd_jax.depth_surface",
    "EstimatorConfig": "lbdvd_jax.estimator",
    "EstimatorDomainWarning": "lbdvd_jax.defocus_map",
    "FitResult": "lbdvd_jax.fit",
    "InputError": "lbdvd_jax.errors",
    "InputTypeError": "lbdvd_jax.errors",
    "Optics": "lbdvd_jax.optics",
    "PAPER_DELPNET": "lbdvd_jax.checkpoint",
    "Restoration": "lbdvd_jax.pipeline",
    "TiffImage": "lbdvd_jax.io",
    "TrainConfig": "lbdvd_jax.train",
    "add_camera_noise": "lbdvd_jax.camera",
    "bg_mask": "lbdvd_jax.camera",
    "blind_richardson_lucy": "lbdvd_jax.deconv",
    "classify_patches": "lbdvd_jax.model",
    "defocus_crops": "lbdvd_jax.data",
    "defocus_from_probs": "lbdvd_jax.estimator",
    "defocus_psf": "lbdvd_jax.psf",
    "depth_invariant_deconvolve": "lbdvd_jax.streaming",
    "depth_variant_deconvolve": "lbdvd_jax.streaming",
    "export_estimator": "lbdvd_jax.estimator_weights",
    "export_weights": "lbdvd_jax.checkpoint",
    "extract_patches": "lbdvd_jax.patches",
    "fit_defocus": "lbdvd_jax.fit",
    "fit_depth_surface": "lbdvd_jax.depth_surface",
    "j0": "lbdvd_jax.bessel",
    "j1": "lbdvd_jax.bessel",
    "kernel_size_for": "lbdvd_jax.psf",
    "load_delpnet": "lbdvd_jax.checkpoint",
    "load_estimator": "lbdvd_jax.estimator_weights",
    "load_infocus_fields": "lbdvd_jax.fields",
    "make_eval_set": "lbdvd_jax.data",
    "montage": "lbdvd_jax.patches",
    "noise_sigma": "lbdvd_jax.spectral",
    "patch_grid": "lbdvd_jax.patches",
    "phantom": "lbdvd_jax.phantoms",
    "pool_neighbours": "lbdvd_jax.defocus_map",
    "predict_levels": "lbdvd_jax.pipeline",
    "psf_stack": "lbdvd_jax.psf",
    "psnr": "lbdvd_jax.quality",
    "read_tiff": "lbdvd_jax.io",
    "rectangular_weights": "lbdvd_jax.patches",
    "restore": "lbdvd_jax.pipeline",
    "richardson_lucy": "lbdvd_jax.deconv",
    "seam_score": "lbdvd_jax.patches",
    "select_focal_plane": "lbdvd_jax.fields",
    "sharded_map": "lbdvd_jax.devices",
    "spectral_features": "lbdvd_jax.spectral",
    "split_fields": "lbdvd_jax.fields",
    "ssim": "lbdvd_jax.quality",
    "synth_batch": "lbdvd_jax.data",
    "tile_fields": "lbdvd_jax.fields",
    "triangular_weights": "lbdvd_jax.patches",
    "write_tiff": "lbdvd_jax.io",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lbdvd_jax' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static tools see the real imports
    from lbdvd_jax.bessel import j0, j1  # noqa: F401
    from lbdvd_jax.camera import CameraModel, add_camera_noise, bg_mask  # noqa: F401
    from lbdvd_jax.checkpoint import PAPER_DELPNET, export_weights, load_delpnet  # noqa: F401
    from lbdvd_jax.constants import BG_LABEL  # noqa: F401
    from lbdvd_jax.data import defocus_crops, make_eval_set, synth_batch  # noqa: F401
    from lbdvd_jax.deconv import BlindDeconvolution, blind_richardson_lucy, richardson_lucy  # noqa: F401
    from lbdvd_jax.defocus_map import DefocusMap, EstimatorDomainWarning, pool_neighbours  # noqa: F401
    from lbdvd_jax.depth_surface import DepthSurface, fit_depth_surface  # noqa: F401
    from lbdvd_jax.devices import sharded_map  # noqa: F401
    from lbdvd_jax.errors import InputError, InputTypeError  # noqa: F401
    from lbdvd_jax.estimator import DefocusEstimator, EstimatorConfig, defocus_from_probs  # noqa: F401
    from lbdvd_jax.estimator_weights import export_estimator, load_estimator  # noqa: F401
    from lbdvd_jax.fields import load_infocus_fields, select_focal_plane, split_fields, tile_fields  # noqa: F401
    from lbdvd_jax.fit import FitResult, fit_defocus  # noqa: F401
    from lbdvd_jax.io import TiffImage, read_tiff, write_tiff  # noqa: F401
    from lbdvd_jax.model import Classification, DelpNet, DelpNetConfig, classify_patches  # noqa: F401
    from lbdvd_jax.optics import Optics  # noqa: F401
    from lbdvd_jax.patches import (  # noqa: F401
        extract_patches,
        montage,
        patch_grid,
        rectangular_weights,
        seam_score,
        triangular_weights,
    )
    from lbdvd_jax.phantoms import phantom  # noqa: F401
    from lbdvd_jax.pipeline import Restoration, predict_levels, restore  # noqa: F401
    from lbdvd_jax.policy import DEFAULT_ITERATIONS, DEFAULT_PSF_DEPTH_UM  # noqa: F401
    from lbdvd_jax.psf import DEFOCUS_LEVELS_UM, defocus_psf, kernel_size_for, psf_stack  # noqa: F401
    from lbdvd_jax.quality import psnr, ssim  # noqa: F401
    from lbdvd_jax.spectral import noise_sigma, spectral_features  # noqa: F401
    from lbdvd_jax.streaming import depth_invariant_deconvolve, depth_variant_deconvolve  # noqa: F401
    from lbdvd_jax.train import TrainConfig  # noqa: F401
