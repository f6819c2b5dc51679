"""A smooth depth surface z(x, y) fitted to per-patch defocus estimates.

A specimen's depth varies smoothly across a field (a tilted coverslip, an undulating surface:
the paper's Sec. 2.3), so a low-order polynomial fitted to the patches' expected depths,
weighted by their certainty, repairs isolated misreads and fills in under bg patches. The fit is
weighted least squares in closed form with Huber re-weighting (scale 1.4826 x MAD of the
residuals), on patch centres scaled to [-1, 1].

References:
    P. J. Huber, "Robust estimation of a location parameter", Ann. Math. Stat. 35 (1964).
"""

from typing import NamedTuple

import numpy as np

from lbdvd_jax.errors import InputError

__all__ = ["DepthSurface", "fit_depth_surface"]


class DepthSurface(NamedTuple):
    """Result of `fit_depth_surface`.

    Attributes:
        coeffs: (n_terms,) polynomial coefficients (monomials y^i x^j, i + j <= degree).
        z_patches: (n,) the surface at the patch centres (µm).
        z_map: (H, W) the surface at every pixel (µm), float32.
        rms_residual_um: certainty-weighted RMS of the residuals of the fitted patches (µm).
    """

    coeffs: np.ndarray
    z_patches: np.ndarray
    z_map: np.ndarray
    rms_residual_um: float


def _design(y, x, degree):
    return np.stack([y ** i * x ** j for i in range(degree + 1) for j in range(degree + 1 - i)], -1)


def fit_depth_surface(z_um, weights, centres, shape, *, degree="auto", huber: float = 1.5,
                      iters: int = 5) -> DepthSurface:
    """Fit a polynomial depth surface to per-patch depths.

    Args:
        z_um: (n,) per-patch depth estimates in µm (NaN allowed: weight 0).
        weights: (n,) non-negative weights (e.g. certainty; 0 for bg).
        centres: (n, 2) patch centres (y, x) in pixels.
        shape: (H, W) of the image, for the per-pixel map.
        degree: polynomial degree (keyword-only; 0 = one depth, 1 = a plane, 2 = quadric), or
            'auto': the degree 0..4 with the lowest BIC, n log(robust residual variance) +
            terms log n, over the weighted patches (a plane stays a plane, a curved surface
            gets the terms it needs).
        huber: Huber threshold in robust-scale units; iters: re-weighting passes.

    Returns:
        `DepthSurface`.

    Raises:
        ValueError: shapes disagree, negative weights, a bad degree, or too few weighted
            patches for the degree (the message says how many are needed).
    """
    z = np.asarray(z_um, np.float64).ravel()
    w = np.asarray(weights, np.float64).ravel()
    c = np.asarray(centres, np.float64)
    if c.shape != (z.size, 2) or w.shape != z.shape:
        raise InputError(f"z_um, weights, centres: got shapes {z.shape}, {w.shape}, {c.shape}; "
                         "expected (n,), (n,), (n, 2)")
    if degree == "auto":
        fits = []
        for d in range(5):
            terms = (d + 1) * (d + 2) // 2
            if np.count_nonzero(np.asarray(weights) > 0) < 2 * terms:
                break
            fit = fit_depth_surface(z_um, weights, centres, shape, degree=d, huber=huber, iters=iters)
            n = np.count_nonzero(np.asarray(weights) > 0)
            fits.append((n * np.log(fit.rms_residual_um ** 2 + 1e-6) + terms * np.log(n), d, fit))
        if not fits:
            raise InputError("weights: too few weighted patches for any depth surface; "
                             "use per-patch depths (surface_degree=None)")
        return min(fits, key=lambda t: t[0])[2]
    if not isinstance(degree, int) or not 0 <= degree <= 4:
        raise InputError(f"degree: got {degree!r}, expected 'auto' or an int 0..4")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise InputError("weights: must be finite and >= 0")
    w = np.where(np.isfinite(z), w, 0.0)
    z = np.where(np.isfinite(z), z, 0.0)
    h, wd = shape
    sy, sx = max(h - 1, 1) / 2.0, max(wd - 1, 1) / 2.0
    a = _design((c[:, 0] - sy) / sy, (c[:, 1] - sx) / sx, degree)
    n_terms = a.shape[1]
    if np.count_nonzero(w > 0) < n_terms:
        raise InputError(f"weights: {np.count_nonzero(w > 0)} weighted patches cannot fix a degree-{degree} "
                         f"surface ({n_terms} terms); use a lower degree")
    robust = np.ones_like(w)
    for _ in range(max(iters, 1)):
        ww = w * robust
        sq = np.sqrt(ww)[:, None]
        coeffs = np.linalg.lstsq(a * sq, z * sq[:, 0], rcond=None)[0]
        resid = z - a @ coeffs
        used = w > 0
        scale = 1.4826 * np.median(np.abs(resid[used] - np.median(resid[used]))) + 1e-6
        r = np.abs(resid) / (huber * scale)
        robust = np.where(r <= 1.0, 1.0, 1.0 / np.maximum(r, 1e-12))
    z_fit = a @ coeffs
    rms = float(np.sqrt(np.sum(w * resid ** 2) / max(np.sum(w), 1e-30)))
    return DepthSurface(coeffs, z_fit, _surface_map(coeffs, degree, h, wd), rms)


def _surface_map(coeffs, degree, h, w):
    """The polynomial at every pixel, separably: Y C X^T with Y, X the powers of the scaled
    row and column coordinates (the same monomials as `_design`, without an (H, W, terms) array)."""
    sy, sx = max(h - 1, 1) / 2.0, max(w - 1, 1) / 2.0
    ys = (np.arange(h) - sy) / sy
    xs = (np.arange(w) - sx) / sx
    grid = np.zeros((degree + 1, degree + 1))
    k = 0
    for i in range(degree + 1):
        for j in range(degree + 1 - i):
            grid[i, j] = coeffs[k]
            k += 1
    ypow = ys[:, None] ** np.arange(degree + 1)
    xpow = xs[:, None] ** np.arange(degree + 1)
    return (ypow @ grid @ xpow.T).astype(np.float32)
