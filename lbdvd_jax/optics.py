"""Microscope parameters as a pytree whose fields are array leaves.

Every field can be traced, vmapped over or differentiated: `jax.grad` of any scalar function
of the PSF with respect to an `Optics` returns an `Optics` of gradients.
"""

import dataclasses
import numbers

import jax
import numpy as np

from lbdvd_jax.errors import InputError

__all__ = ["Optics"]


def _check_positive(name, value, fix):
    """Validate concrete values only; tracers and placeholders pass through untouched."""
    if isinstance(value, jax.core.Tracer) or value is None:
        return
    if isinstance(value, (numbers.Number, np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(value)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            return
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise InputError(f"Optics.{name} must be a finite positive number, got {value!r}; {fix}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Optics:
    """Scalar defocus-PSF parameters of a wide-field fluorescence microscope.

    Attributes:
        wavelength_um: emission wavelength in µm (paper: 0.451, Hoechst 33342).
        na: numerical aperture of the objective (paper: 0.5).
        n: refractive index of the immersion medium (paper: 1.0, air; 1.33 water).
        pixel_um: pixel pitch in the sample plane in µm (BBBC006 20x, 2x binning: 0.65).

    Examples:
        >>> from lbdvd_jax import Optics
        >>> Optics(na=0.45).na
        0.45
    """

    wavelength_um: float = 0.451
    na: float = 0.5
    n: float = 1.0
    pixel_um: float = 0.65

    def validate(self):
        """Raise ValueError if a concrete field is not physical; traced fields pass through.

        Called by the PSF functions rather than on construction, because gradients with
        respect to an `Optics` are themselves `Optics` whose fields may be negative.
        """
        _check_positive("wavelength_um", self.wavelength_um, "give the emission wavelength in µm, e.g. 0.451")
        _check_positive("na", self.na, "give the objective's numerical aperture, e.g. 0.5")
        _check_positive("n", self.n, "give the immersion refractive index, e.g. 1.0 (air)")
        _check_positive("pixel_um", self.pixel_um, "give the sample-plane pixel size in µm, e.g. 0.65")
        na, n = self.na, self.n
        if not isinstance(na, jax.core.Tracer) and not isinstance(n, jax.core.Tracer):
            try:
                bad = bool(np.any(np.asarray(na) >= np.asarray(n)))
            except (TypeError, ValueError):
                bad = False
            if bad:
                raise InputError(f"Optics.na must be smaller than Optics.n, got na={na!r}, n={n!r}; "
                                 "use an immersion index above the NA (NA = n sin(theta))")
        return self

    def replace(self, **changes):
        """Return a copy with some fields changed (like `dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)
