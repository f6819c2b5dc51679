"""Fitting the Eq. 2 PSF by gradient, beyond the paper's 11 discrete levels.

The paper picks one of 11 defocus levels per patch. Because `psf_stack` is differentiable in
z and in every optics field, the defocus (and, where the data constrain them, NA and
wavelength) can instead be fitted continuously to a measurement:

* a focus pair: an out-of-focus image and an in-focus reference of the same field
  (observed ~ gain * (PSF_z conv (reference - background)) + offset), e.g. BBBC006's z-stacks;
* a bead image: a sub-resolution point source, i.e. the reference is a delta.

The loss is non-convex in z (the defocus PSF's rings), so the fit first scans a grid of z
values, then refines from the best one with Adam (optax) inside one `lax.scan`. Gain and
offset are solved in closed form (linear least squares) at every step, so only the optics
parameters are iterated.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lbdvd_jax.errors import InputError, InputTypeError
from lbdvd_jax.optics import Optics
from lbdvd_jax.psf import kernel_size_for, psf_stack

__all__ = ["FitResult", "fit_defocus", "focus_pair_model"]

_FITTABLE = ("z_um", "na", "wavelength_um")


class FitResult(NamedTuple):
    """Result of `fit_defocus`.

    Attributes:
        z_um: fitted defocus in µm (scalar array).
        optics: `Optics` with the fitted fields substituted.
        gain: fitted intensity gain of the blurred reference.
        offset: fitted additive background (counts).
        loss: final normalised squared error (1 - R^2 of the linear fit).
        loss_history: (num_steps,) losses along the gradient refinement.
        grid_z_um: the z values of the initial scan; grid_loss: their losses.
        correlation: Pearson correlation between model and observation.
    """

    z_um: jax.Array
    optics: Optics
    gain: jax.Array
    offset: jax.Array
    loss: jax.Array
    loss_history: jax.Array
    grid_z_um: jax.Array
    grid_loss: jax.Array
    correlation: jax.Array


def _blur_same(image, psf):
    return jax.scipy.signal.fftconvolve(image, psf, mode="same")


def focus_pair_model(reference, optics, z_um, *, size):
    """The blurred reference PSF_z conv reference, 'same' size, before gain and offset.

    Args:
        reference: (H, W) in-focus image minus its background (or a delta for a bead).
        optics: `Optics`.
        z_um: scalar defocus in µm.
        size: static odd kernel size.
    """
    psf = psf_stack(optics, jnp.reshape(z_um, (1,)), size=size)[0]
    return _blur_same(reference, psf)


def _linear_fit_loss(model, observed, mask):
    """Closed-form gain/offset least squares; returns (normalised SSE, gain, offset, corr)."""
    w = mask / jnp.sum(mask)
    mm = jnp.sum(w * model)
    mo = jnp.sum(w * observed)
    dm = model - mm
    do = observed - mo
    cov = jnp.sum(w * dm * do)
    var_m = jnp.sum(w * dm * dm)
    var_o = jnp.sum(w * do * do)
    safe_var_m = jnp.where(var_m > 0, var_m, 1.0)
    gain = jnp.where(var_m > 0, cov / safe_var_m, 0.0)
    offset = mo - gain * mm
    corr2 = jnp.where(var_m > 0, cov * cov / (safe_var_m * var_o), 0.0)
    corr = jnp.sign(cov) * jnp.sqrt(corr2)
    return 1.0 - corr2, gain, offset, corr


def _check_image(name, x):
    x = np.asarray(x)
    if x.ndim != 2:
        raise InputError(f"{name} must be a 2-D (H, W) image, got shape {x.shape}; pass one plane")
    if not np.issubdtype(x.dtype, np.number):
        raise InputTypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or Inf; clean or mask those pixels first")
    return x


def fit_defocus(observed, reference, *, optics=Optics(), z_grid_um=None, fit=("z_um",),
                background=None, num_steps=100, learning_rate=0.05, size=None, border=None):
    """Fit the defocus (and optionally NA, wavelength) of the Eq. 2 PSF to a focus pair.

    Args:
        observed: (H, W) out-of-focus image (counts).
        reference: (H, W) in-focus image of the same field (counts), or a centred delta for
            a bead measurement.
        optics: starting `Optics`; fields not in `fit` stay fixed.
        z_grid_um: z values (µm) scanned for the start of the refinement; default 0..60 µm
            in 1-µm steps.
        fit: static tuple of parameters refined by gradient: any of "z_um", "na",
            "wavelength_um".
        background: value subtracted from `reference` (default: its 1st percentile).
        num_steps: static number of Adam steps.
        learning_rate: Adam step size (parameters are in µm / NA units).
        size: static odd kernel size; default `kernel_size_for(optics, max(z_grid_um))`.
        border: pixels excluded at each edge from the loss (default size // 2).

    Returns:
        `FitResult`.

    Examples:
        >>> from lbdvd_jax import fit_defocus
        >>> # result = fit_defocus(z00_plane, infocus_plane)   # BBBC006 a01: z ~ 40 µm
    """
    observed = _check_image("observed", observed)
    reference = _check_image("reference", reference)
    if observed.shape != reference.shape:
        raise InputError(f"observed {observed.shape} and reference {reference.shape} must have the same "
                         "shape; crop both to the common field")
    unknown = set(fit) - set(_FITTABLE)
    if unknown or "z_um" not in fit:
        raise InputError(f"fit must include 'z_um' and only names from {_FITTABLE}, got {fit!r}")
    z_grid = np.arange(0.0, 61.0, 1.0) if z_grid_um is None else np.asarray(z_grid_um, float)
    if z_grid.ndim != 1 or z_grid.size < 1:
        raise InputError(f"z_grid_um must be a non-empty 1-D sequence of µm, got {z_grid_um!r}")
    if size is None:
        size = kernel_size_for(optics, float(np.max(np.abs(z_grid))))
    if min(observed.shape) < size:
        raise InputError(f"the images ({observed.shape}) must be at least the kernel size {size} px; "
                         "use larger crops or a smaller z_grid_um")
    if background is None:
        background = float(np.percentile(reference, 1.0))
    border = size // 2 if border is None else int(border)
    dtype = jnp.result_type(float)
    obs = jnp.asarray(observed, dtype)
    ref = jnp.asarray(reference, dtype) - jnp.asarray(background, dtype)
    mask = np.zeros(observed.shape)
    mask[border:observed.shape[0] - border, border:observed.shape[1] - border] = 1.0
    if mask.sum() < 16:
        raise InputError(f"border={border} leaves no pixels to fit in a {observed.shape} image; lower it")
    mask = jnp.asarray(mask, dtype)
    optics = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), optics)
    return _fit(obs, ref, mask, optics, jnp.asarray(z_grid, dtype), jnp.asarray(learning_rate, dtype),
                fit=tuple(fit), size=size, num_steps=int(num_steps))


@functools.partial(jax.jit, static_argnames=("fit", "size", "num_steps"))
def _fit(obs, ref, mask, optics, z_grid, learning_rate, *, fit, size, num_steps):
    """The fit, compiled once per shape and configuration (the learning rate is traced)."""
    def loss_of(params):
        opt = optics.replace(**{k: v for k, v in params.items() if k != "z_um"})
        model = focus_pair_model(ref, opt, params["z_um"], size=size)
        return _linear_fit_loss(model, obs, mask)

    grid_loss = jax.lax.map(lambda z: loss_of({"z_um": z})[0], z_grid)
    z0 = z_grid[jnp.argmin(grid_loss)]
    params = {"z_um": z0}
    for name in fit:
        if name != "z_um":
            params[name] = getattr(optics, name)
    tx = optax.adam(learning_rate)
    scale = {k: (1.0 if k == "z_um" else 0.01) for k in params}  # NA and wavelength move slowly

    def step(carry, _):
        p, state = carry
        loss, g = jax.value_and_grad(lambda q: loss_of(q)[0])(p)
        updates, state = tx.update(g, state, p)
        updates = {k: updates[k] * scale[k] for k in updates}
        return (optax.apply_updates(p, updates), state), loss

    (params, _), history = jax.lax.scan(step, (params, tx.init(params)), None, length=num_steps)
    loss, gain, offset, corr = loss_of(params)
    fitted = optics.replace(**{k: v for k, v in params.items() if k != "z_um"})
    return FitResult(params["z_um"], fitted, gain, offset, loss, history, z_grid, grid_loss, corr)
