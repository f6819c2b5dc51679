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

__all__ = [
    "DEFOCUS_LEVELS_UM",
    "FitResult",
    "Optics",
    "__version__",
    "defocus_psf",
    "fit_defocus",
    "j0",
    "j1",
    "kernel_size_for",
    "psf_stack",
]
