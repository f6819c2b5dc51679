"""Depth refinement by gradient: the criterion's z-gradient against finite differences, and a
known depth recovered from a blurred, noisy window."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal
from reference import psf_quad

from lbdvd_jax.depth_refine import refine_depths, refinement_criterion


def _nuclei(rng, size=180):
    y, x = np.mgrid[0:size, 0:size]
    img = np.zeros((size, size))
    for cy, cx in rng.uniform(10, size - 10, (30, 2)):
        img += 3000 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 30.0)
    return img


def test_criterion_gradient_matches_finite_differences(x64, rng):
    win = jnp.asarray(100 + rng.poisson(200, (132, 132)).astype(np.float64))
    f = lambda z: refinement_criterion(win, z, num_iter=3)  # noqa: E731
    for z in (3.3, 11.7):
        g = jax.grad(f)(jnp.float64(z))
        fd = (f(z + 1e-4) - f(z - 1e-4)) / 2e-4
        np.testing.assert_allclose(g, fd, rtol=1e-5)


def test_refinement_descends_the_criterion(rng):
    """Adam per window lowers each window's own criterion (the depths move independently).
    Whether the minimiser is the true depth is measured, not assumed: on real fields it is not
    (examples/refine_depth.py: too little blur, as blind criteria prefer)."""
    obj = _nuclei(rng)
    wins, z0 = [], np.array([11.0, 6.0])
    for z_true in (8.0, 14.0):
        blurred = scipy.signal.fftconvolve(obj, psf_quad(49, z_true), mode="valid")  # 132 px
        wins.append(100 + rng.poisson(np.maximum(blurred, 0) / 0.33) * 0.33)
    wins = np.stack(wins).astype(np.float32)
    z = refine_depths(wins, z0, steps=15)
    for w, a, b in zip(wins, z0, z):
        assert float(refinement_criterion(jnp.asarray(w), b)) < float(refinement_criterion(jnp.asarray(w), a))
    assert not np.allclose(z, z0)
