"""The depth-variant PSF of Eq. 2 (He et al. 2020), by Gauss-Legendre quadrature in pure JAX.

    h(r; z) = | int_0^1 J0(k NA/n r rho) exp(-i/2 k rho^2 z NA^2/n^2) rho d rho |^2,  k = 2 pi / lambda

The integrand's J0 part depends on r only and the phase part on z only, so for L depths, R
radii and N nodes the quadrature is two real (L, N) x (N, R) matrix products. The kernel is
radially symmetric: h is evaluated once per distinct squared radius of the sample grid (a
static, integer-exact set) and gathered into the square. Everything is differentiable in z
and in every `Optics` field; shapes depend only on the static `size`, `oversample` and
`num_nodes`, so `jax.jit` compiles once per kernel size.

References:
    M. Born and E. Wolf, Principles of Optics, 7th ed., Sec. 8.8 (defocused Airy pattern).
    S. J. Yang et al., BMC Bioinformatics 19:77 (2018): the same model, evaluated by quad.
    D. He et al., IEEE Photonics J. 12(2):3900513 (2020), Eq. 2.
"""

import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.bessel import j0
from lbdvd_jax.errors import InputError, InputTypeError

__all__ = ["DEFOCUS_LEVELS_UM", "defocus_psf", "enclosed_energy", "kernel_size_for", "psf_stack", "radial_psf"]

#: The paper's 11 defocus levels: z = 0, 2, ..., 20 µm (level index = z / 2 µm).
DEFOCUS_LEVELS_UM = tuple(2.0 * i for i in range(11))


@functools.lru_cache(maxsize=64)
def _gauss_legendre(num_nodes):
    x, w = np.polynomial.legendre.leggauss(num_nodes)
    return 0.5 * (x + 1.0), 0.5 * w  # nodes and weights on [0, 1]


@functools.lru_cache(maxsize=64)
def _grid_geometry(size, oversample):
    """Distinct squared radii of the (oversampled) pixel grid and the gather map into it.

    Coordinates are integers in units of 1/(2*oversample) pixel so the set of radii is exact.
    Returns (r_units (U,), index (size*s, size*s)) with radius = r_units * pixel / (2 s).
    """
    s = oversample
    half = size // 2
    pix = np.arange(size) - half
    sub = 2 * np.arange(s) + 1 - s  # sub-sample offsets in units of 1/(2s) pixel
    u = (2 * s * pix[:, None] + sub[None, :]).reshape(-1)
    r2 = u[:, None] ** 2 + u[None, :] ** 2
    uniq, index = np.unique(r2, return_inverse=True)
    return np.sqrt(uniq.astype(np.float64)), index.reshape(r2.shape).astype(np.int32)


def _check_static(size, oversample, num_nodes):
    if not isinstance(size, numbers.Integral) or size < 1 or size % 2 == 0:
        raise InputError(f"size must be an odd positive integer (the PSF is centred at size // 2), "
                         f"got {size!r}; use an odd size such as 49, or kernel_size_for(optics, z_max_um)")
    if not isinstance(oversample, numbers.Integral) or oversample < 1:
        raise InputError(f"oversample must be a positive integer, got {oversample!r}; use 1 (pixel-centre "
                         "samples) or e.g. 4 to integrate over the pixel area")
    if not isinstance(num_nodes, numbers.Integral) or num_nodes < 8:
        raise InputError(f"num_nodes must be an integer >= 8, got {num_nodes!r}; 128 reaches ~1e-13")


def _float_dtype(*xs):
    dtype = jnp.result_type(*xs, float)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def _check_z(z_um):
    if isinstance(z_um, jax.core.Tracer):
        return
    arr = np.asarray(z_um)
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise InputError(f"z_um must hold finite defocus distances in µm, got {z_um!r}")


def radial_psf(optics, z_um, r_um, *, num_nodes=128):
    """Un-normalised Eq. 2 intensity at given defocus distances and radii.

    Args:
        optics: `Optics` (array leaves may be traced).
        z_um: defocus distances in µm, shape (L,) (or scalar, treated as (1,)).
        r_um: radial distances from the optical axis in µm, shape (R,).
        num_nodes: static number of Gauss-Legendre nodes on [0, 1].

    Returns:
        (L, R) array of |integral|^2 (equals 0.25 at r = 0, z = 0).
    """
    dtype = _float_dtype(optics.wavelength_um, optics.na, optics.n, z_um, r_um)
    z = jnp.atleast_1d(jnp.asarray(z_um, dtype))
    r = jnp.asarray(r_um, dtype)
    nodes, weights = _gauss_legendre(num_nodes)
    rho = jnp.asarray(nodes, dtype)
    w_rho = jnp.asarray(weights * nodes, dtype)
    wavelength, na, n = (jnp.asarray(v, dtype) for v in (optics.wavelength_um, optics.na, optics.n))
    k = 2.0 * jnp.pi / wavelength
    bessel = j0(k * (na / n) * r[:, None] * rho[None, :])  # (R, N)
    phase = -0.5 * k * (na / n) ** 2 * z[:, None] * rho[None, :] ** 2  # (L, N)
    hi = jax.lax.Precision.HIGHEST
    re = jnp.matmul(w_rho * jnp.cos(phase), bessel.T, precision=hi)
    im = jnp.matmul(w_rho * jnp.sin(phase), bessel.T, precision=hi)
    return re * re + im * im


def psf_stack(optics, z_um=None, *, size=None, oversample=1, num_nodes=128):
    """Normalised depth-variant PSFs for several defocus distances at once.

    Args:
        optics: `Optics` pytree.
        z_um: defocus distances in µm, shape (L,); None gives the paper's 11 levels
            `DEFOCUS_LEVELS_UM` (0, 2, ..., 20 µm).
        size: static odd kernel size in pixels. None picks `kernel_size_for(optics, max|z|)`
            (99 % of the energy; 49 px for the paper's optics), which needs concrete values.
        oversample: static sub-samples per pixel side; > 1 integrates over the pixel area
            (at 0.65 µm the in-focus PSF is undersampled).
        num_nodes: static Gauss-Legendre order (64 gives ~1e-6, 128 ~1e-13 at 49 px).

    Returns:
        (L, size, size) array, each kernel centred at size // 2 and summing to 1; dtype
        follows the inputs (float32 by default, float64 under x64).

    Examples:
        >>> import jax
        >>> from lbdvd_jax import Optics, psf_stack
        >>> stack = jax.jit(psf_stack, static_argnames="size")(Optics(), size=49)
        >>> stack.shape
        (11, 49, 49)
    """
    if z_um is None:
        z_um = DEFOCUS_LEVELS_UM
    if isinstance(z_um, (list, tuple)):
        z_um = jnp.asarray(z_um, dtype=float)
    _check_z(z_um)
    if size is None:
        if isinstance(z_um, jax.core.Tracer):
            raise InputTypeError("size=None needs concrete z_um to choose the kernel size; pass size= explicitly "
                            "(e.g. size=49) when z_um is traced")
        size = kernel_size_for(optics, float(np.max(np.abs(np.asarray(z_um)))))
    _check_static(size, oversample, num_nodes)
    optics.validate()
    dtype = _float_dtype(optics.wavelength_um, optics.na, optics.n, optics.pixel_um, z_um)
    optics = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), optics)
    return _psf_stack_compiled(optics, jnp.atleast_1d(jnp.asarray(z_um, dtype)), size=size,
                               oversample=oversample, num_nodes=num_nodes)


@functools.partial(jax.jit, static_argnames=("size", "oversample", "num_nodes"))
def _psf_stack_compiled(optics, z_um, *, size, oversample, num_nodes):
    # Compiled once per (size, oversample, num_nodes, dtype) and reused; inlined when the
    # caller is itself under jit / grad / vmap.
    r_units, index = _grid_geometry(size, oversample)
    dtype = z_um.dtype
    r_um = jnp.asarray(r_units, dtype) * (optics.pixel_um / (2 * oversample))
    prof = radial_psf(optics, z_um, r_um, num_nodes=num_nodes)  # (L, U)
    full = prof[:, index]  # (L, size*s, size*s)
    levels = full.shape[0]
    full = full.reshape(levels, size, oversample, size, oversample).mean(axis=(2, 4))
    return full / jnp.sum(full, axis=(1, 2), keepdims=True)


def defocus_psf(optics, z_um, *, size=None, oversample=1, num_nodes=128):
    """The normalised Eq. 2 PSF at one defocus distance.

    Args:
        optics: `Optics` pytree (fields may be traced or differentiated).
        z_um: scalar defocus distance in µm (differentiable).
        size: static odd kernel size; None picks `kernel_size_for(optics, |z_um|)` but at
            least 49 px (the paper's stack size), so a single PSF never has a shorter tail.
        oversample: static sub-samples per pixel side (pixel-area integration when > 1).
        num_nodes: static Gauss-Legendre order.

    Returns:
        (size, size) array centred at size // 2, summing to 1.

    Examples:
        >>> import jax
        >>> from lbdvd_jax import Optics, defocus_psf
        >>> grad_z = jax.grad(lambda z: defocus_psf(Optics(), z, size=49)[24, 24])(8.0)
    """
    if jnp.ndim(z_um) != 0:
        raise InputError(f"z_um must be a scalar defocus in µm, got shape {jnp.shape(z_um)}; "
                         "use psf_stack for several depths")
    if size is None and not isinstance(z_um, jax.core.Tracer):
        size = max(49, kernel_size_for(optics, abs(float(z_um))))
    elif size is None:
        raise InputTypeError("size=None needs a concrete z_um; pass size= explicitly (e.g. size=49) under jit/grad")
    return psf_stack(optics, jnp.reshape(z_um, (1,)), size=size, oversample=oversample,
                     num_nodes=num_nodes)[0]


def kernel_size_for(optics, z_max_um, *, energy=0.99, num_nodes=256):
    """Smallest odd kernel size that holds `energy` of the PSF's energy at |z| <= z_max_um.

    The radius R enclosing `energy` of the disc energy is found from the radial integral
    2 pi int_0^R h(r) r dr (fine trapezoid, float64), divided by the exact total: by Parseval
    for the Hankel transform the whole-plane integral of Eq. 2 is pi / (k NA/n)^2 at any z.
    The kernel is the square of side 2 ceil(R) + 1 that contains that disc. Eager: needs
    concrete optics and z_max_um (pass the result as the static `size=`).

    Args:
        optics: `Optics` with concrete values.
        z_max_um: the largest |defocus| in µm the kernel must hold.
        energy: fraction in (0, 1) to enclose.
        num_nodes: Gauss-Legendre order of the radial evaluation.

    Returns:
        An odd Python int: 49 for the paper's optics at 20 µm (R = 23.97 px); a 33-px square
        holds only 97.3 % there.
    """
    leaves = jax.tree_util.tree_leaves(optics) + [z_max_um]
    if any(isinstance(v, jax.core.Tracer) for v in leaves):
        raise InputTypeError("kernel_size_for needs concrete optics and z_max_um; call it outside jit/grad "
                        "and pass the result as the static size=")
    values = tuple(float(np.asarray(v)) for v in
                   (optics.wavelength_um, optics.na, optics.n, optics.pixel_um))
    return _kernel_size_cached(values, abs(float(z_max_um)), float(energy), int(num_nodes))


def _radial_psf_numpy(values, z, r_um, num_nodes):
    """Eq. 2 in float64 NumPy/SciPy, for eager sizing (fast, independent of the JAX path)."""
    import scipy.special

    wavelength, na, n, _ = values
    nodes, weights = _gauss_legendre(num_nodes)
    k = 2.0 * math.pi / wavelength
    bessel = scipy.special.j0(k * na / n * r_um[:, None] * nodes[None, :])
    phase = -0.5 * k * (na / n) ** 2 * z * nodes ** 2
    field = bessel @ (weights * nodes * np.exp(1j * phase))
    return np.abs(field) ** 2


@functools.lru_cache(maxsize=256)
def _kernel_size_cached(values, z, energy, num_nodes):
    if not 0.0 < energy < 1.0:
        raise InputError(f"energy must lie in (0, 1), got {energy!r}; e.g. 0.99")
    wavelength, na, n, pixel = values
    k = 2.0 * math.pi / wavelength
    total = math.pi / (k * na / n) ** 2
    airy_px = 0.61 * wavelength / na / pixel
    r_max_px = z * na / n / pixel + 40.0 * airy_px + 8.0
    for _ in range(6):
        r_px = np.arange(0.0, r_max_px, 0.02)
        r_um = r_px * pixel
        h = _radial_psf_numpy(values, z, r_um, num_nodes)
        hr = h * r_um
        encircled = np.concatenate([[0.0], np.cumsum(0.5 * (hr[1:] + hr[:-1]) * np.diff(r_um))])
        encircled *= 2.0 * math.pi / total
        hit = np.nonzero(encircled >= energy)[0]
        if hit.size:
            return 2 * int(math.ceil(r_px[hit[0]] - 1e-9)) + 1
        r_max_px *= 2.0
    raise InputError(f"no radius up to {r_max_px:.0f} px holds {energy:.3f} of the energy at z={z} µm; "
                     "lower `energy` or check the optics")


def enclosed_energy(optics, z_um, size, *, oversample=4, num_nodes=256):
    """Fraction of the total Eq. 2 energy inside a centred size x size window (eager, float64)."""
    wavelength, na, n, pixel = (float(np.asarray(v)) for v in
                                (optics.wavelength_um, optics.na, optics.n, optics.pixel_um))
    r_units, index = _grid_geometry(size, oversample)
    r_um = r_units * pixel / (2 * oversample)
    prof = _radial_psf_numpy((wavelength, na, n, pixel), abs(float(z_um)), r_um, num_nodes)
    full = prof[index].reshape(size, oversample, size, oversample).mean(axis=(1, 3))
    k = 2.0 * math.pi / wavelength
    return float(full.sum() * pixel ** 2 / (math.pi / (k * na / n) ** 2))
