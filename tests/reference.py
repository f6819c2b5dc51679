"""Independent float64 NumPy/SciPy oracles. Append-only: one section per module under test."""

import functools

import numpy as np
import scipy.integrate
import scipy.special

# --- PSF (Eq. 2) by adaptive quadrature, per distinct radius ------------------------------


def eq2_point_quad(r_um, z_um, wavelength_um, na, n):
    """|int_0^1 J0(k NA/n r rho) exp(-i/2 k rho^2 z NA^2/n^2) rho d rho|^2 by scipy.integrate.quad."""
    k = 2.0 * np.pi / wavelength_um
    a = k * na / n * r_um
    b = 0.5 * k * z_um * (na / n) ** 2
    re = scipy.integrate.quad(lambda p: scipy.special.j0(a * p) * np.cos(b * p * p) * p, 0.0, 1.0,
                              limit=400, epsabs=1e-14, epsrel=1e-12)[0]
    im = scipy.integrate.quad(lambda p: -scipy.special.j0(a * p) * np.sin(b * p * p) * p, 0.0, 1.0,
                              limit=400, epsabs=1e-14, epsrel=1e-12)[0]
    return re * re + im * im


@functools.lru_cache(maxsize=64)
def psf_quad(size, z_um, wavelength_um=0.451, na=0.5, n=1.0, pixel_um=0.65):
    """Normalised (size, size) PSF sampled at pixel centres, quad at each distinct radius."""
    half = size // 2
    i = np.arange(size) - half
    r2 = i[:, None] ** 2 + i[None, :] ** 2
    uniq, inverse = np.unique(r2, return_inverse=True)
    vals = np.array([eq2_point_quad(pixel_um * np.sqrt(q), z_um, wavelength_um, na, n) for q in uniq])
    h = vals[inverse].reshape(size, size)
    return h / h.sum()
