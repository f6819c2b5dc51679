"""Synthetic whole-image defocus against SciPy float64 references."""

import numpy as np
import scipy.ndimage as ndi
from reference import radial_noise_power

from lbdvd_jax import Optics, psf_stack
from lbdvd_jax.synthesis import blur_same_reflect, depth_variant_blur, tilted_depth_map, true_patch_levels


def test_blur_same_reflect_matches_scipy(rng):
    img = rng.uniform(0, 1000, (60, 75))
    k = rng.uniform(0, 1, (9, 9))
    k /= k.sum()
    # scipy's 'reflect' repeats the edge pixel (numpy's 'symmetric'); convolve flips the kernel
    want = ndi.convolve(img, k, mode="reflect")
    np.testing.assert_allclose(np.asarray(blur_same_reflect(img.astype(np.float32), k.astype(np.float32))),
                               want, rtol=2e-5, atol=2e-2)


def test_depth_variant_blur_interpolates_between_levels(rng):
    img = (100 + rng.uniform(0, 3000, (70, 70))).astype(np.float32)
    psfs = np.asarray(psf_stack(Optics(), size=49), np.float64)
    ref = lambda level, w=1.0: 100 + ndi.convolve(w * (img.astype(np.float64) - 100), psfs[level], mode="reflect")
    on_level = np.asarray(depth_variant_blur(img, np.full(img.shape, 6.0), offset=100.0))
    np.testing.assert_allclose(on_level, ref(3), rtol=1e-4)
    # 7 µm is halfway between levels 3 and 4: the mean of both blurs of the signal
    half = np.asarray(depth_variant_blur(img, np.full(img.shape, 7.0), offset=100.0))
    np.testing.assert_allclose(half, 0.5 * (ref(3) + ref(4)), rtol=1e-4)


def test_tilted_depth_map_range_and_oracle_levels():
    d = tilted_depth_map((200, 300), z_max_um=20.0, seed=1)
    assert d.dtype == np.float32 and d.min() >= 0.0 and d.max() <= 20.0
    assert d[:, -10:].mean() > d[:, :10].mean() + 10  # tilted along x
    depth = np.full((168, 168), 9.2, np.float32)
    depth[84:, 84:] = 100.0  # beyond the range: level 10
    levels = true_patch_levels(depth, np.array([[0, 0], [84, 84], [42, 42]]))
    assert levels.tolist() == [5, 10, 10]  # 9.2 µm -> level 5 (10 µm nearest), centre of [42, 42] is (84, 84)


def _band_power(img):
    """Radial noise power of the centre of `img` (away from the reflected borders), per band."""
    return radial_noise_power(np.asarray(img)[100:420, 100:596])


def test_matched_noise_has_the_flat_spectrum_of_camera_noise():
    """A flat field carrying camera noise, defocused synthetically: with noise='matched' every
    radial band holds the analytic camera variance v = gain (mu - offset) + read^2 (within 8 %),
    at 2 and 10 µm; the default white completion keeps > 1.3 v at low frequencies (the texture
    it leaves); the mean is kept; an unknown mode is refused."""
    import jax
    import pytest

    from lbdvd_jax.camera import GAIN, OFFSET, READ_NOISE, add_camera_noise
    from lbdvd_jax.synthesis import synthesize_defocus

    flat = np.full((520, 696), 400.0, np.float32)
    noisy = np.asarray(add_camera_noise(jax.random.PRNGKey(3), flat))
    v = GAIN * (400.0 - OFFSET) + READ_NOISE ** 2 + 1.0 / 12.0  # + the rounding to integers
    for level in (1, 5):
        power = np.mean([_band_power(synthesize_defocus(noisy, level=level, seed=s, noise="matched")[0])
                         for s in range(3)], 0)
        np.testing.assert_allclose(power / v, 1.0, atol=0.08)
    white = _band_power(synthesize_defocus(noisy, level=1, seed=0)[0])
    assert white[0] / v > 1.3 and white[-1] / v < 0.95
    img, _ = synthesize_defocus(noisy, level=1, seed=0, noise="matched")
    assert abs(img.mean() - noisy.mean()) < 0.5
    with pytest.raises(ValueError, match="noise: got 'pink'"):
        synthesize_defocus(noisy, level=1, noise="pink")
