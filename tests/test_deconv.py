"""Richardson-Lucy (paper Eq. 3) against an independent float64 SciPy oracle, transforms, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from reference import blind_rl_ref, rl_ref

from lbdvd_jax import blind_richardson_lucy, richardson_lucy
from lbdvd_jax.deconv import convolve, fast_fft_size, richardson_lucy_iterates


def gaussian_psf_ref(size, sigma):
    i = np.arange(size) - size // 2
    g = np.exp(-0.5 * (i[:, None] ** 2 + i[None, :] ** 2) / sigma ** 2)
    return g / g.sum()


def _image(rng, shape=(37, 52)):
    return 50.0 + 100.0 * rng.random(shape)


def _skewed_psf(rng, shape=(7, 5)):
    """Asymmetric kernel: catches a missing flip in the correction step."""
    h = rng.random(shape) + np.linspace(0, 2, shape[1])[None, :]
    return h / h.sum()


@pytest.mark.parametrize("psf_kind", ["gaussian", "skewed"])
def test_matches_float64_oracle(x64, rng, psf_kind):
    img = _image(rng)
    psf = gaussian_psf_ref(15, 2.5) if psf_kind == "gaussian" else _skewed_psf(rng)
    out = richardson_lucy(jnp.asarray(img), jnp.asarray(psf), num_iter=15)
    ref = rl_ref(img, psf, 15)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-10, atol=0)


def test_iterates_are_the_oracle_at_every_count(x64, rng):
    img, psf = _image(rng), _skewed_psf(rng)
    its = np.asarray(richardson_lucy_iterates(jnp.asarray(img), jnp.asarray(psf), num_iter=4))
    assert its.shape == (5,) + img.shape
    np.testing.assert_array_equal(its[0], img)
    for k in range(1, 5):
        np.testing.assert_allclose(its[k], rl_ref(img, psf, k), rtol=1e-10, atol=0)


def test_convolve_is_scipy_fftconvolve_same(x64, rng):
    from scipy.signal import fftconvolve
    img, psf = _image(rng), _skewed_psf(rng)
    np.testing.assert_allclose(np.asarray(convolve(jnp.asarray(img), jnp.asarray(psf))),
                               fftconvolve(img, psf, mode="same"), rtol=1e-10, atol=1e-9)


def test_matches_oracle_float32(rng):
    img = _image(rng)
    psf = gaussian_psf_ref(15, 2.5)
    out = richardson_lucy(img.astype(np.float32), psf.astype(np.float32), num_iter=15)
    assert out.dtype == jnp.float32
    ref = rl_ref(img, psf, 15)
    assert np.max(np.abs(np.asarray(out) - ref)) / np.max(np.abs(ref)) < 1e-5


def test_initial_estimate_is_image_and_delta_is_identity(rng):
    img = _image(rng).astype(np.float32)
    np.testing.assert_array_equal(richardson_lucy(img, gaussian_psf_ref(5, 1.0).astype(np.float32),
                                                  num_iter=0), img)
    delta = np.zeros((5, 5), np.float32)
    delta[2, 2] = 1
    np.testing.assert_allclose(richardson_lucy(img, delta, num_iter=10), img, rtol=1e-5)


def test_explicit_fft_shape_same_result(x64, rng):
    img, psf = _image(rng, (30, 30)), gaussian_psf_ref(9, 2.0)
    a = richardson_lucy(img, psf, num_iter=5)
    b = richardson_lucy(img, psf, num_iter=5, fft_shape=(64, 48))
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert [fast_fft_size(n) for n in (97, 134, 157, 161)] == [98, 135, 160, 162]


def test_vmap_with_per_patch_psf_equals_loop(rng):
    imgs = np.stack([_image(rng, (40, 40)) for _ in range(3)]).astype(np.float32)
    psfs = np.stack([gaussian_psf_ref(11, s) for s in (1.0, 2.0, 3.0)]).astype(np.float32)
    batched = jax.vmap(lambda x, h: richardson_lucy(x, h, num_iter=8))(imgs, psfs)
    for i in range(3):
        np.testing.assert_allclose(batched[i], richardson_lucy(imgs[i], psfs[i], num_iter=8),
                                   rtol=1e-6)


def test_second_call_does_not_recompile(rng):
    traces = []

    @jax.jit
    def f(x, h):
        traces.append(1)
        return richardson_lucy(x, h, num_iter=4)

    psf = gaussian_psf_ref(7, 1.5).astype(np.float32)
    f(_image(rng, (32, 32)).astype(np.float32), psf).block_until_ready()
    f(_image(rng, (32, 32)).astype(np.float32), psf).block_until_ready()
    assert len(traces) == 1


def test_gradients_image_and_psf(x64, rng):
    img = jnp.asarray(_image(rng, (12, 12)))
    psf = jnp.asarray(gaussian_psf_ref(5, 1.2))

    @jax.jit
    def f(x, h):  # renormalise so finite-difference probes keep a valid PSF
        return jnp.sum(richardson_lucy(x, h / jnp.sum(h), num_iter=3) ** 2)

    check_grads(f, (img, psf), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_zeros_give_no_nan_in_value_or_gradient():
    img = jnp.zeros((20, 20)).at[5:8, 5:8].set(10.0)
    psf = jnp.asarray(gaussian_psf_ref(5, 1.0), jnp.float32)
    out = richardson_lucy(img, psf, num_iter=4)
    g = jax.jit(jax.grad(lambda x, h: jnp.sum(richardson_lucy(x, h, num_iter=4)),
                         argnums=(0, 1)))(img, psf)
    assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(v)) for v in g)
    assert np.all(np.isfinite(richardson_lucy(jnp.zeros((8, 8)), psf, num_iter=3)))


def test_blind_matches_oracle_and_keeps_psf_valid(x64, rng):
    truth = _image(rng, (20, 24))
    img = rl_ref(truth, gaussian_psf_ref(5, 1.0), 0)  # any positive image
    psf0 = gaussian_psf_ref(5, 1.5)
    est, psf = blind_richardson_lucy(img, psf0, num_iter=4)
    est_ref, psf_ref = blind_rl_ref(img, psf0, 4)
    np.testing.assert_allclose(psf, psf_ref, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(est, est_ref, rtol=1e-9)
    assert float(jnp.min(psf)) >= 0 and abs(float(jnp.sum(psf)) - 1) < 1e-12


@pytest.mark.parametrize("image, psf, exc, match", [
    (np.ones((10, 10), np.int32), None, TypeError, "image must be a real floating"),
    (np.ones((2, 10, 10), np.float32), None, ValueError, "image must have rank 2"),
    (np.full((10, 10), np.nan, np.float32), None, ValueError, "image contains NaN or Inf"),
    (np.full((10, 10), -1.0, np.float32), None, ValueError, "image has negative values"),
    (None, np.full((4, 4), 1 / 16, np.float32), ValueError, "psf must have odd sizes"),
    (None, np.full((3, 3), 1.0, np.float32), ValueError, "psf must be normalised"),
    (None, np.zeros((3, 3), np.float32), ValueError, "cannot be normalised"),
    (None, np.array([[0, -0.5, 0], [0, 2, 0], [0, -0.5, 0]], np.float32), ValueError,
     "psf has negative values"),
    (None, np.ones((3, 3), np.int64), TypeError, "psf must be a real floating"),
])
def test_bad_input(image, psf, exc, match):
    image = np.ones((10, 10), np.float32) if image is None else image
    psf = np.full((3, 3), 1 / 9, np.float32) if psf is None else psf
    with pytest.raises(exc, match=match):
        richardson_lucy(image, psf)


def test_bad_options():
    img, psf = np.ones((10, 10), np.float32), np.full((3, 3), 1 / 9, np.float32)
    with pytest.raises(ValueError, match="fft_shape must be two sizes"):
        richardson_lucy(img, psf, fft_shape=(10, 10))
    with pytest.raises(ValueError, match="num_iter must be >= 0"):
        richardson_lucy(img, psf, num_iter=-1)
    with pytest.raises(ValueError, match="psf0 must be normalised"):
        blind_richardson_lucy(img, psf * 2)


def test_stop_freezes_each_image_at_its_own_count(x64, rng):
    """stop=k under vmap == the float64 oracle run for k iterations, image by image."""
    imgs = np.stack([_image(rng, (30, 30)) for _ in range(4)])
    psf = gaussian_psf_ref(9, 1.5)
    stops = np.array([0, 1, 5, 9])  # 9 > num_iter: capped at num_iter
    out = jax.vmap(lambda x, s: richardson_lucy(x, psf, num_iter=6, stop=s))(imgs, stops)
    for i, k in enumerate(np.minimum(stops, 6)):
        np.testing.assert_allclose(out[i], rl_ref(imgs[i], psf, int(k)), rtol=1e-10)
