"""Refining a patch's depth by gradient through RL and the Eq. 2 PSF (issue 9, item 4).

A data criterion per patch: the Poisson negative log-likelihood of the observed window (offset
removed) under the RL estimate re-blurred by the PSF at depth z,

    L(z) = sum_centre [ m_z - y log m_z ],   m_z = h_z (x) RL_n(y; h_z),

minimised over z from the estimator's depth by Adam, vmapped over patches (each patch's z is
its own coordinate). Blind criteria of this kind are known to prefer too little blur (RL fits
the data with a smaller PSF too), so `examples/refine_depth.py` measures the refined depths
against the truth before anything relies on them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lbdvd_jax.camera import OFFSET
from lbdvd_jax.deconv import convolve, fast_fft_size, richardson_lucy
from lbdvd_jax.optics import Optics
from lbdvd_jax.psf import psf_stack

__all__ = ["refine_depths", "refinement_criterion"]

PSF_SIZE = 49


def refinement_criterion(window, z_um, *, optics=Optics(), num_iter: int = 15, background=OFFSET,
                         margin: int = 24):
    """L(z) of one window (module docstring), summed over the window less `margin` px a side."""
    window = jnp.asarray(window)
    dtype = window.dtype if jnp.issubdtype(window.dtype, jnp.floating) else jnp.float32
    y = jnp.maximum(window.astype(dtype) - background, 0.0)
    shape = tuple(fast_fft_size(s + PSF_SIZE // 2) for s in y.shape)
    h = psf_stack(optics, jnp.asarray(z_um, dtype)[None], size=PSF_SIZE)[0].astype(dtype)
    est = richardson_lucy(y, h, num_iter=num_iter, fft_shape=shape)
    m = jnp.maximum(convolve(est, h, fft_shape=shape), 1e-6)
    c = slice(margin, y.shape[0] - margin), slice(margin, y.shape[1] - margin)
    return jnp.sum(m[c] - y[c] * jnp.log(m[c]))


@functools.partial(jax.jit, static_argnames=("num_iter", "steps"))
def _refine(windows, z0, optics, num_iter, steps, learning_rate, z_max):
    loss = lambda z: jnp.sum(jax.vmap(  # noqa: E731
        lambda w, zz: refinement_criterion(w, zz, optics=optics, num_iter=num_iter))(windows, z))
    tx = optax.adam(learning_rate)

    def body(carry, _):
        z, state = carry
        g = jax.grad(loss)(z)
        upd, state = tx.update(g, state, z)
        z = jnp.clip(optax.apply_updates(z, upd), 0.0, z_max)
        return (z, state), None

    (z, _), _ = jax.lax.scan(body, (z0, tx.init(z0)), None, length=steps)
    return z


def refine_depths(windows, z0_um, *, optics=Optics(), num_iter: int = 15, steps: int = 20,
                  learning_rate: float = 0.5, z_max_um: float = 40.0):
    """(n,) depths (µm) minimising `refinement_criterion` per window, from `z0_um`.

    Args:
        windows: (n, s, s) observed counts (patch plus context).
        z0_um: (n,) starting depths (the estimator's).
        num_iter, steps, learning_rate: RL iterations inside the criterion; Adam steps and rate.
        z_max_um: depths are kept in [0, z_max_um].
    """
    w = jnp.asarray(windows, jnp.float32)
    z0 = jnp.asarray(np.nan_to_num(np.asarray(z0_um, np.float32)), jnp.float32)
    return np.asarray(_refine(w, z0, optics, int(num_iter), int(steps), float(learning_rate),
                              float(z_max_um)))
