"""PSNR and SSIM against scikit-image's float64 implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lbdvd_jax.quality import psnr, psnr_gain, ssim


def _pair(rng, shape=(64, 80)):
    ref = 100 + 3000 * rng.random(shape) ** 4
    est = ref + rng.normal(0, 40, shape)
    return ref, est


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("data_range", [65535.0, 4095.0, 200.0])
def test_ssim_matches_skimage(rng, x64, dtype, tol, data_range):
    ref, est = _pair(rng)
    want = structural_similarity(ref, est, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=data_range)
    got = ssim(jnp.asarray(ref, dtype), jnp.asarray(est, dtype), data_range=data_range)
    assert got.dtype == dtype
    np.testing.assert_allclose(float(got), want, rtol=tol, atol=tol)


def test_ssim_batched_and_per_patch_range(rng, x64):
    pairs = [_pair(rng, (84, 84)) for _ in range(3)]
    ref = np.stack([p[0] for p in pairs])
    est = np.stack([p[1] for p in pairs])
    ranges = ref.max(axis=(1, 2)) - ref.min(axis=(1, 2))
    got = ssim(ref, est, data_range=ranges)
    want = [structural_similarity(r, e, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=d)
            for r, e, d in zip(ref, est, ranges)]
    assert got.shape == (3,)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)
    assert float(ssim(ref[0], ref[0])) == pytest.approx(1.0)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_psnr_matches_skimage(rng, x64, dtype, tol):
    ref, est = _pair(rng)
    want = peak_signal_noise_ratio(ref, est, data_range=65535.0)
    got = psnr(jnp.asarray(ref, dtype), jnp.asarray(est, dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(float(got), want, rtol=tol)
    assert float(psnr(ref, ref)) == np.inf
    gain = psnr_gain(ref, est, ref + 0.5 * (est - ref))
    np.testing.assert_allclose(float(gain), 20 * np.log10(2.0), rtol=1e-9)


def test_jit_vmap_and_grad(rng, x64):
    ref, est = _pair(rng, (32, 32))
    f = jax.jit(lambda a, b: ssim(a, b, data_range=4095.0))
    np.testing.assert_allclose(f(ref, est), ssim(ref, est, data_range=4095.0), rtol=1e-12)
    stack = np.stack([est, est + 1.0])
    np.testing.assert_allclose(jax.vmap(lambda e: psnr(ref, e))(stack), psnr(ref, stack),
                               rtol=1e-12)
    g = jax.grad(lambda e: ssim(ref, e, data_range=4095.0))(jnp.asarray(est))
    assert np.all(np.isfinite(g))


def test_bad_input():
    with pytest.raises(ValueError, match="estimate: shape"):
        ssim(np.zeros((16, 16)), np.zeros((16, 15)))
    with pytest.raises(ValueError, match="at least 11 px"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="reference: expected images"):
        psnr(np.zeros(5), np.zeros(5))
