"""The defocus estimator's pieces against independent references (NumPy, hand-worked values)."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lbdvd_jax.checkpoint import load_delpnet
from lbdvd_jax.defocus_map import EstimatorDomainWarning, pool_neighbours, predict_defocus
from lbdvd_jax.estimator import (
    DefocusEstimator,
    EstimatorConfig,
    defocus_from_probs,
    estimate_defocus,
    estimator_probs,
    most_probable_depth,
)
from lbdvd_jax.estimator_train import (
    EstimatorTrainConfig,
    mixed_fields,
    ordinal_loss,
    ranked_probability_score,
    soft_level_targets,
    training_batch,
    training_batch_targets,
    training_psfs,
)
from lbdvd_jax.estimator_weights import SHIPPED_ESTIMATOR, export_estimator, load_estimator
from lbdvd_jax.model import classify_patches
from lbdvd_jax.spectral import CLIP_FACTOR, noise_sigma, radial_power_spectrum, spectral_features

TINY = EstimatorConfig(num_bins=8, conv=((4, 3, 2), (8, 3, 2)), spectral_width=8, hidden=16)


# ---------------------------------------------------------------- spectral features vs NumPy

def _numpy_radial_spectrum(patch, num_bins):
    """Independent float64 reference: full 2-D FFT, explicit loops over the radius bins."""
    h, w = patch.shape
    win = np.outer(0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(h) + 0.5) / h),
                   0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(w) + 0.5) / w))
    power = np.abs(np.fft.fft2((patch - patch.mean()) * win)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    rho = np.hypot(fy, fx)
    out = []
    for b in range(num_bins + 1):
        lo, hi = b / (2 * num_bins), (b + 1) / (2 * num_bins)
        sel = (rho > lo) & (rho <= hi) if b < num_bins else rho > 0.5
        # rfft2 holds the columns fx >= 0 and the Nyquist column (-0.5 in fftfreq) once
        sel_half = sel & ((fx >= 0) | np.isclose(fx, -0.5))
        out.append(power[sel_half].mean())
    return np.array(out)


@pytest.mark.parametrize("shape", [(84, 84), (96, 84)])
def test_radial_power_spectrum_matches_numpy(rng, shape):
    patch = rng.normal(100, 5, shape) + 50 * np.sin(np.arange(shape[1]) / 3.0)
    with jax.enable_x64(True):
        got = np.asarray(radial_power_spectrum(jnp.asarray(patch, jnp.float64), num_bins=12))
    ref = _numpy_radial_spectrum(patch, 12)
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_noise_sigma_of_white_noise_and_with_sharp_objects(rng):
    noise = rng.normal(0, 3.0, (84, 84))
    assert noise_sigma(jnp.asarray(noise, jnp.float32)) == pytest.approx(3.0, rel=0.05)
    spots = noise.copy()
    spots[10:30, 10:30] += 800 * rng.random((20, 20))  # sharp texture over 6 % of the patch
    assert noise_sigma(jnp.asarray(spots, jnp.float32)) == pytest.approx(3.0, rel=0.1)
    # truncated-Gaussian factor: E[z^2 | |z| < 2] from scipy's normal distribution
    from scipy import stats
    ref = stats.truncnorm(-2, 2).var()
    assert CLIP_FACTOR == pytest.approx(ref, rel=1e-12)


def test_spectral_features_are_affine_invariant_and_zero_for_white_noise(rng):
    patch = rng.normal(200, 4, (84, 84)) + 300 * np.exp(-((np.arange(84) - 40) / 9.0) ** 2)[None]
    f = np.asarray(spectral_features(jnp.asarray(patch, jnp.float32)))
    for a, b in [(1 / 16, 0), (1 / 65535, 0), (3.0, 50.0), (0.5, -80.0)]:
        g = np.asarray(spectral_features(jnp.asarray(a * patch + b, jnp.float32)))
        np.testing.assert_allclose(g, f, atol=2e-4)
    white = np.asarray(spectral_features(jnp.asarray(rng.normal(0, 1, (256, 256)), jnp.float32), num_bins=16))
    np.testing.assert_allclose(white[:17], 0.0, atol=0.08)  # power / noise floor ~ 1 -> log10 ~ 0
    const = np.asarray(spectral_features(jnp.full((84, 84), 7.0)))
    assert np.all(np.isfinite(const))


# ---------------------------------------------------------------- ordinal loss, hand-worked

def test_ranked_probability_score_hand_worked():
    # 3 ordered classes, truth 0; p = (0.5, 0.3, 0.2): CDF (0.5, 0.8), target (1, 1)
    # RPS = ((0.5-1)^2 + (0.8-1)^2) / 2 = (0.25 + 0.04) / 2 = 0.145
    p = jnp.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    y = jnp.array([0, 0, 1])
    # truth 0, p = (0.2, 0.3, 0.5): ((0.2-1)^2 + (0.5-1)^2)/2 = (0.64 + 0.25)/2 = 0.445; a hit: 0
    np.testing.assert_allclose(ranked_probability_score(p, y), [0.145, 0.445, 0.0], atol=1e-7)


def test_ordinal_loss_adds_rps_on_levels_only():
    logits = jnp.log(jnp.array([[0.6, 0.2, 0.1] + [0.01] * 8 + [0.02],
                                [0.05] * 11 + [0.45]]))
    y = jnp.array([1, 11])
    ce = -np.log(np.asarray(jax.nn.softmax(logits))[[0, 1], [1, 11]]).mean()
    p = np.asarray(jax.nn.softmax(logits[0, :11]))
    cdf = np.cumsum(p)[:-1]
    rps = np.sum((cdf - (np.arange(10) >= 1)) ** 2) / 10  # only the level patch counts
    np.testing.assert_allclose(ordinal_loss(logits, y, rps_weight=0.0), ce, rtol=1e-6)
    np.testing.assert_allclose(ordinal_loss(logits, y, rps_weight=2.0), ce + 2 * rps, rtol=1e-6)


def test_ordinal_loss_with_soft_targets_hand_worked():
    # a depth of 9 µm: half level 4, half level 5; logits favour level 4
    logits = jnp.log(jnp.array([[0.02] * 4 + [0.5, 0.3] + [0.02] * 5 + [0.02]]))
    q = np.zeros((1, 12))
    q[0, 4] = q[0, 5] = 0.5
    p = np.array([0.02] * 4 + [0.5, 0.3] + [0.02] * 5 + [0.02])
    ce = -(0.5 * np.log(p[4]) + 0.5 * np.log(p[5]))          # the probabilities sum to 1
    pl = p[:11] / p[:11].sum()
    cdf_p = np.cumsum(pl)[:-1]
    cdf_q = np.array([0, 0, 0, 0, 0.5, 1, 1, 1, 1, 1])        # CDF of the target over 11 levels
    rps = np.sum((cdf_p - cdf_q) ** 2) / 10
    np.testing.assert_allclose(ordinal_loss(logits, jnp.asarray(q), rps_weight=1.0), ce + rps, rtol=1e-5)
    # one-hot targets give exactly the integer-label loss
    y = jnp.array([4])
    np.testing.assert_allclose(ordinal_loss(logits, jax.nn.one_hot(y, 12), rps_weight=2.0),
                               ordinal_loss(logits, y, rps_weight=2.0), rtol=1e-6)


def test_soft_level_targets_split_continuous_depths_between_levels():
    # indices of training_psfs(continuous=True): 11 levels, 5 beyond (level 10), 81 depths by 0.25 µm
    idx = jnp.array([3, 12, 16, 16 + 36, 16 + 37, 16 + 80, 97])   # 6 µm, 28 µm, 0, 9, 9.25, 20 µm, bg
    t = np.asarray(soft_level_targets(idx, num_psfs=97))
    want = np.zeros((7, 12))
    want[0, 3] = want[1, 10] = want[2, 0] = want[5, 10] = want[6, 11] = 1.0
    want[3, 4] = want[3, 5] = 0.5
    want[4, 4], want[4, 5] = 0.375, 0.625   # 9.25 µm = level 4.625
    np.testing.assert_allclose(t, want, atol=1e-6)
    # expected z of the target is the depth itself
    np.testing.assert_allclose((t[[2, 3, 4, 5], :11] * 2.0 * np.arange(11)).sum(1), [0, 9, 9.25, 20], atol=1e-5)


def test_continuous_training_batch_draws_off_grid_depths(real_fields):
    cfg = EstimatorTrainConfig(batch_size=96, continuous_fraction=1.0, beyond_fraction=0.0)
    x, t = jax.jit(lambda k: training_batch_targets(k, real_fields[:2], training_psfs(size=49, continuous=True),
                                                    config=cfg))(jax.random.key(0))
    t = np.asarray(t)
    assert x.shape == (96, 84, 84)
    np.testing.assert_allclose(t.sum(1), 1.0, atol=1e-6)
    split = (t[:, :11] > 0).sum(1) == 2               # between two levels
    assert split.sum() > 40                            # 7 of 8 depths of the 0.25-µm grid are off-grid


def test_jittered_continuous_depths_keep_level_shares_and_exact_focus(real_fields):
    cfg = EstimatorTrainConfig(batch_size=256, continuous_fraction=1.0, continuous_draw="jitter",
                               beyond_fraction=0.0)
    _, t = jax.jit(lambda k: training_batch_targets(k, real_fields[:2], training_psfs(size=49, continuous=True),
                                                    config=cfg))(jax.random.key(1))
    t = np.asarray(t)
    lv = t[:, 11] == 0
    z = (t[lv, :11] * 2.0 * np.arange(11)).sum(1)
    assert 0.03 < np.mean(z == 0) < 0.2                     # level 0 (1/11) left exact, never jittered
    assert np.all((z == 0) | ((z >= 2.0) & (z <= 20.0)))     # jittered depths stay in 2..20 µm
    assert np.mean(np.abs(z / 2.0 - np.round(z / 2.0)) > 0.01) > 0.5   # most are off-grid
    with pytest.raises(ValueError, match="continuous_draw"):
        EstimatorTrainConfig(continuous_draw="gaussian")


def test_defocus_from_probs_expected_z_spread_certainty():
    probs = np.zeros((3, 12), np.float32)
    probs[0, 5] = 1.0                      # certain level 5: z 10 µm, spread 0, certainty 1
    probs[1, 3] = probs[1, 4] = 0.5        # halfway: 7 µm, spread 1 µm
    probs[2, :11] = 1 / 11                 # uniform: certainty 0
    z, spread, cert = defocus_from_probs(probs)
    np.testing.assert_allclose(z[:2], [10.0, 7.0], atol=1e-5)
    np.testing.assert_allclose(spread[:2], [0.0, 1.0], atol=1e-3)
    np.testing.assert_allclose(cert, [1.0, 1 - math.log(2) / math.log(11), 0.0], atol=1e-5)
    probs[0] = 0
    probs[0, 11] = 1.0
    assert np.isnan(estimate_defocus(probs).z_um[0])


# ---------------------------------------------------------------- pooling

def _gaussian_levels(mu, sigma, bg=0.1):
    """Level probabilities exp(-(2l - mu)^2 / 2 sigma^2), normalised to 1 - bg, plus bg."""
    z = 2.0 * np.arange(11)
    p = np.exp(-((z[None, :] - np.asarray(mu)[:, None]) ** 2) / (2.0 * np.asarray(sigma)[:, None] ** 2))
    return np.concatenate([p / p.sum(-1, keepdims=True) * (1 - bg), np.full((len(p), 1), bg)], -1)


def test_most_probable_depth_is_the_centre_of_gaussian_level_probabilities():
    """log p of a Gaussian in z is a parabola: its vertex is the Gaussian's centre, on and off the
    levels and just beyond the range ends, for any width; the expected z is pulled inward."""
    mu = np.array([-0.8, -0.3, 0.0, 0.9, 5.0, 7.3, 12.6, 19.1, 20.0, 20.7])
    sigma = np.array([1.0, 2.0, 0.8, 1.5, 3.0, 0.7, 2.5, 1.2, 2.0, 1.0])
    probs = _gaussian_levels(mu, sigma)
    np.testing.assert_allclose(most_probable_depth(probs), mu, atol=1e-9)
    np.testing.assert_allclose(most_probable_depth(probs.astype(np.float32)), mu, atol=1e-4)
    mean = defocus_from_probs(probs)[0]
    assert mean[1] > 0.5 and mean[8] < 19.5  # σ 2 µm at the ends: E[z] moved inward by > 0.5 µm


def test_most_probable_depth_one_hot_ends_and_flat():
    eye = np.eye(12)[[0, 3, 10]]
    np.testing.assert_allclose(most_probable_depth(eye), [0.0, 6.0, 20.0])
    # mass falling away from level 0 faster than a parabola: no peak inside, level 0 itself
    p = np.array([[0.9, 0.05, 0.04] + [0.001] * 8 + [0.0]])
    assert most_probable_depth(p)[0] == 0.0
    # equal neighbours: the middle level; a vertex far outside is kept within 1.5 levels
    assert most_probable_depth(np.array([[0, 0, 0, 0.25, 0.5, 0.25, 0, 0, 0, 0, 0, 0]]))[0] == 8.0
    assert -1.0 <= most_probable_depth(np.array([[0.5, 0.49, 0.01] + [0.0] * 9]))[0] <= 2.0


def test_pool_neighbours_repairs_an_isolated_misread_and_keeps_bg():
    probs = np.zeros((3, 3, 12), np.float32)
    probs[..., 9] = 0.7
    probs[..., 8] = 0.3
    probs[1, 1] = 0
    probs[1, 1, 8], probs[1, 1, 9] = 0.55, 0.45   # the centre alone leans to 8
    probs[0, 0] = 0
    probs[0, 0, 11] = 1.0                          # a bg corner stays bg
    pooled = pool_neighbours(probs)
    assert pooled[1, 1].argmax() == 9 and pooled[0, 0].argmax() == 11
    np.testing.assert_allclose(pooled.sum(-1), 1.0, rtol=1e-5)
    # geometric mean with certainty weights, by hand for one patch with no neighbours
    single = pool_neighbours(probs[1:2, 1:2])
    np.testing.assert_allclose(single[0, 0, :11], probs[1, 1, :11], atol=1e-6)


def test_surface_prior_weights_levels_by_a_gaussian_around_the_fitted_surface():
    """A plane 1 -> 19 µm whose patches' own probabilities are Gaussians around their depth
    (σ 2 µm), two of them misread and one bg: the surface is the plane, so each output equals
    p_l exp(-(2l - s)^2 / 2) renormalised to 1 - p_bg with s the true plane (hand-computed);
    the misreads take the plane's level and the bg patch keeps its bg."""
    from lbdvd_jax.defocus_map import surface_prior

    origins = np.array([[r, c] for r in range(0, 169, 42) for c in range(0, 337, 42)], np.int32)
    plane = 1.0 + 18.0 * origins[:, 1] / 336.0
    own = _gaussian_levels(plane, np.full(len(plane), 2.0), bg=0.05)
    misread = [10, 30]
    own[misread, :11] = 0.95 * np.eye(11)[[8, 2]] * 0.6 + 0.95 * 0.4 / 11
    own[5] = 0.0
    own[5, 11] = 1.0
    got = surface_prior(own, own, origins)
    weight = own[:, :11] * np.exp(-(2.0 * np.arange(11)[None] - plane[:, None]) ** 2 / 2.0)
    want = weight / weight.sum(-1, keepdims=True) * (1 - own[:, 11:])
    keep = np.setdiff1d(np.arange(len(own)), misread + [5])
    np.testing.assert_allclose(got[keep, :11], want[keep], atol=2e-3)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(got[:, 11], own[:, 11].astype(np.float32))
    np.testing.assert_array_equal(got[misread, :11].argmax(-1), np.rint(plane[misread] / 2))
    assert got[5].argmax() == 11
    # no depth anywhere (all bg): unchanged
    bg = np.eye(12, dtype=np.float32)[np.full(len(own), 11)]
    np.testing.assert_array_equal(surface_prior(bg, bg, origins), bg)
    # a field read as two depths, 0 and 20 µm on alternate patches: no smooth surface is within
    # one level of most of them, so no prior (each patch keeps its call)
    split = _gaussian_levels(np.where(np.arange(len(own)) % 2 == 0, 0.0, 20.0), np.full(len(own), 1.5))
    np.testing.assert_allclose(surface_prior(split, split, origins), split, atol=1e-6)


def test_surface_agreement_counts_certainty_weighted_patches_near_the_surface():
    """A flat field at 8 µm with every 4th patch read at 20 µm: the robust surface stays near
    8 µm, so the agreement is the 8-µm patches' share of the certainty weights (1 - H/log 11,
    computed here by hand); the misread patches made sharper weigh more. The ungated prior
    (agreement=0) applies to a field read as two depths, where the gated one leaves it alone."""
    from lbdvd_jax.pooling import surface_agreement, surface_prior

    def cert(p):
        q = p[:11] / p[:11].sum()
        return 1.0 + np.sum(q * np.log(q)) / np.log(11)

    origins = np.array([[r, c] for r in range(0, 169, 42) for c in range(0, 337, 42)], np.int32)
    n = len(origins)
    odd = np.arange(n) % 4 == 3
    for width in (1.5, 1.0):
        own = _gaussian_levels(np.where(odd, 20.0, 8.0), np.where(odd, width, 1.5))
        share, surface = surface_agreement(own, origins)
        assert np.all(np.abs(surface.z_patches - 8.0) < 1.0)  # flat, far from 20 µm
        near, far = (~odd).sum() * cert(own[0]), odd.sum() * cert(own[3])
        assert share == pytest.approx(near / (near + far), abs=1e-9)
    assert 0.5 < share < (~odd).mean()  # the sharper misreads weigh more than their count
    bg = np.eye(12, dtype=np.float32)[np.full(n, 11)]
    assert surface_agreement(bg, origins)[1] is None
    split = _gaussian_levels(np.where(np.arange(n) % 2 == 0, 0.0, 20.0), np.full(n, 1.5))
    assert surface_agreement(split, origins)[0] < 0.5
    np.testing.assert_allclose(surface_prior(split, split, origins), split, atol=1e-6)
    assert not np.allclose(surface_prior(split, split, origins, agreement=0.0), split, atol=1e-3)


@pytest.mark.parametrize("pool", ["local", 2, "Surface"])
def test_unknown_pool_is_refused_with_the_choices(pool):
    from lbdvd_jax.defocus_map import defocus_map

    with pytest.raises(ValueError, match="pool: got .*'surface', 'neighbours' or False"):
        defocus_map(np.full((4, 12), 1 / 12, np.float32), np.array([[0, 0], [0, 42], [42, 0], [42, 42]]), pool=pool)


# ---------------------------------------------------------------- model, data, weights

def test_estimator_shapes_scale_invariance_and_constant_patches(rng):
    model = DefocusEstimator(TINY, rngs=nnx.Rngs(0))
    patches = rng.poisson(50, (5, 84, 84)).astype(np.float32) + 100
    p = estimator_probs(model, patches, batch_size=2)
    assert p.shape == (5, 12) and np.allclose(p.sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(estimator_probs(model, patches / 65535.0), p, atol=1e-4)
    np.testing.assert_allclose(estimator_probs(model, patches * 3 + 20), p, atol=1e-4)
    labels, _ = classify_patches(model, np.full((2, 84, 84), 110, np.uint16))
    assert labels.tolist() == [11, 11]  # constant patches are bg, not an error


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 80, 84)), "shape"), (np.full((1, 84, 84), np.nan), "NaN"),
    (np.array([["a"]]), "numeric")])
def test_estimator_bad_patches(bad, match):
    model = DefocusEstimator(TINY, rngs=nnx.Rngs(0))
    with pytest.raises((ValueError, TypeError), match=match):
        estimator_probs(model, bad)


def test_weights_round_trip_and_wrong_files(tmp_path, rng):
    model = DefocusEstimator(TINY, rngs=nnx.Rngs(3))
    path = export_estimator(tmp_path / "e.npz", TINY, nnx.state(model, nnx.Param))
    again = load_delpnet(path)  # the public loader dispatches on the file's kind
    assert isinstance(again, DefocusEstimator)
    x = rng.poisson(80, (3, 84, 84)).astype(np.float32)
    np.testing.assert_array_equal(estimator_probs(again, x), estimator_probs(model, x))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_estimator(tmp_path / "bad.npz")
    from lbdvd_jax.checkpoint import PAPER_DELPNET
    with pytest.raises(ValueError, match="another model"):
        load_estimator(PAPER_DELPNET)
    other = export_estimator(tmp_path / "other.npz", EstimatorConfig(num_bins=8, conv=()),
                             nnx.state(model, nnx.Param))
    with pytest.raises(ValueError, match="does not match"):
        load_estimator(other)


def test_training_batch_labels_gain_and_rounding(real_fields):
    cfg = EstimatorTrainConfig(batch_size=64, round_fraction=1.0, gain_range=(1 / 16, 1 / 16))
    x, y = jax.jit(lambda k: training_batch(k, real_fields[:1], training_psfs(size=49), config=cfg))(
        jax.random.key(0))
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == (64, 84, 84) and set(np.unique(y)) <= set(range(12))
    np.testing.assert_array_equal(x, np.round(x))       # rounded, as an 8-bit file
    assert x.max() <= 65535 / 16 + 1                    # 16-bit counts / 16


def test_paper_data_batches_are_exact_levels_of_unscaled_counts(real_fields):
    """`paper_data` turns a wide recipe into the paper's data: the batches are exact levels
    (one-hot targets, no beyond-range depths), 16-bit counts at the camera's scale (no 8-bit
    gain), window and batch size kept; a bad share is refused."""
    from lbdvd_jax.estimator_batches import training_batch_targets
    from lbdvd_jax.estimator_train import paper_data

    wide = EstimatorTrainConfig(batch_size=64, round_fraction=1.0, gain_range=(1 / 16, 1 / 16),
                                continuous_fraction=1.0, continuous_draw="jitter", mix_sources=True,
                                object_zoom_range=(0.67, 1.5), zoom_fraction=0.5, paper_fraction=0.5)
    cfg = paper_data(wide)
    assert (cfg.batch_size, cfg.window, cfg.rps_weight) == (wide.batch_size, wide.window, wide.rps_weight)
    psfs = training_psfs(size=49, continuous=True)
    x, t = jax.jit(lambda k: training_batch_targets(k, real_fields[:1], psfs, config=cfg))(jax.random.key(0))
    x, t = np.asarray(x), np.asarray(t)
    np.testing.assert_array_equal(t.max(-1), 1.0)   # one-hot: exact levels (or bg)
    assert np.median(x) > 90                        # the camera's 100-count offset, no 1/16 gain
    with pytest.raises(ValueError, match="paper_fraction"):
        EstimatorTrainConfig(paper_fraction=1.5)


def test_zoomed_fields_magnify_about_the_centre_and_keep_the_camera_noise():
    """A flat noisy field keeps its mean and its camera-noise variance (gain x signal + read²)
    at 1.3x and 0.77x (interpolation's averaging drawn back); a noise-free ramp in x is
    magnified about the centre as the NumPy formula says (row means, interior)."""
    from lbdvd_jax.camera import GAIN, OFFSET, READ_NOISE, add_camera_noise
    from lbdvd_jax.estimator_batches import zoomed_fields

    h, w = 260, 348
    noisy = add_camera_noise(jax.random.key(0), jnp.full((4, h, w), OFFSET + 500.0))
    want = GAIN * 500.0 + READ_NOISE ** 2
    for s in (1.3, 0.77):
        z = np.asarray(jax.jit(lambda k, f, s=s: zoomed_fields(k, f, (s, s)))(jax.random.key(1), noisy))
        assert abs(z.mean() - OFFSET - 500.0) < 0.5
        assert abs(z.var() / want - 1.0) < 0.03
    x = np.arange(w, dtype=np.float64)
    ramp = jnp.asarray(np.broadcast_to(OFFSET + 100.0 + 0.5 * x, (1, h, w)), jnp.float32)
    got = np.asarray(zoomed_fields(jax.random.key(2), ramp, (1.25, 1.25)))[0].mean(0) - OFFSET
    cx = (w - 1) / 2.0
    np.testing.assert_allclose(got[60:-60], 100.0 + 0.5 * (cx + (x[60:-60] - cx) / 1.25), atol=2.0)
    with pytest.raises(ValueError, match="object_zoom_range"):
        EstimatorTrainConfig(object_zoom_range=(1.25, 0.8))


def test_mixed_fields_sum_two_specimens_and_keep_the_camera_noise_model(rng):
    # three flat fields of one camera (offset 100, gain 0.33 counts/e-), different photon levels
    offset, gain = 100.0, 0.33
    lam = np.array([200.0, 800.0, 3000.0])
    f = offset + gain * rng.poisson(lam[:, None, None], (3, 256, 320)).astype(np.float64)
    m = np.asarray(mixed_fields(jax.random.key(3), jnp.asarray(f, jnp.float32), offset=offset), np.float64)
    for i in range(3):
        # the partner: another field, in one of the four flips (never the field itself)
        cands = [(j, fl) for j in range(3) if j != i for fl in
                 (f[j], f[j][::-1], f[j][:, ::-1], f[j][::-1, ::-1])]
        errs = [np.abs(m[i] - (f[i] + np.maximum(o - offset, 0))).max() for _, o in cands]
        assert min(errs) < 1e-3
        # the sum is Poisson at the summed expectation: var = gain (mean - offset), as the camera
        np.testing.assert_allclose(m[i].var(), gain * (m[i].mean() - offset), rtol=0.05)
    one = np.asarray(mixed_fields(jax.random.key(0), jnp.asarray(f[:1], jnp.float32), offset=offset))
    assert not np.allclose(one[0], 2 * f[0] - offset)   # a single field is mixed with a flip of itself
    cfg = EstimatorTrainConfig(batch_size=8, mix_sources=True)
    x, y = jax.jit(lambda k: training_batch(k, jnp.asarray(f[:, :160, :160], jnp.float32), training_psfs(size=49),
                                            config=cfg))(jax.random.key(1))
    assert x.shape == (8, 84, 84) and set(np.unique(np.asarray(y))) <= set(range(12))


def test_predict_defocus_warns_on_noise_free_input():
    yy, xx = np.mgrid[0:200, 0:200]
    smooth = (100 + 50 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.float32)
    model = DefocusEstimator(TINY, rngs=nnx.Rngs(0))
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        predict_defocus(smooth, model=model)
    assert any(issubclass(w.category, EstimatorDomainWarning) for w in got)


@pytest.mark.skipif(not SHIPPED_ESTIMATOR.is_file(), reason="no shipped estimator weights")
@pytest.mark.parametrize("name", ["a01_infocus.tif", "a01_z00.tif"])
def test_shipped_estimator_is_independent_of_scale_and_format(name):
    """The bundled real in-focus field and its z=00 plane as uint16, float 0..1 and 3x brighter:
    >= 99 % of the foreground patches keep the uint16 call (affine invariance up to float
    rounding). As 8-bit (/16) the quantisation removes information: the in-focus field must
    still be called <= 1 and the z=00 plane >= 9 on >= 90 % (the issue's 95 % keep-the-exact-
    level target for 8-bit is not met: README)."""
    from lbdvd_jax.io import read_tiff
    from lbdvd_jax.synthesis import bundled_path
    img = read_tiff(bundled_path(name)).data.astype(np.float32)
    model = load_delpnet()
    assert isinstance(model, DefocusEstimator)
    ref = predict_defocus(img, model=model, warn=False).labels
    fg = ref != 11
    assert fg.sum() > 20
    in_focus = name == "a01_infocus.tif"
    good = (lambda lab: lab <= 1) if in_focus else (lambda lab: lab >= 9)
    assert np.mean(good(ref[fg])) >= 0.9
    for form in (img / 65535.0, np.minimum(img * 3, 65535)):
        lab = predict_defocus(form, model=model, warn=False).labels
        assert np.mean(lab[fg] == ref[fg]) >= 0.99
    lab = predict_defocus(np.round(img / 16), model=model, warn=False).labels
    assert np.mean(good(lab[lab != 11])) >= 0.9


def test_init_train_state_fine_tunes_from_given_weights():
    """`init=`: the given estimator's parameters (any judging window), not a fresh draw; another
    architecture is refused."""
    import dataclasses

    from lbdvd_jax.estimator_train import init_train_state
    cfg = EstimatorTrainConfig(batch_size=8, total_steps=10, warmup_steps=2)
    start = DefocusEstimator(TINY, rngs=nnx.Rngs(5))
    _, fresh = init_train_state(TINY, cfg)
    _, tuned = init_train_state(dataclasses.replace(TINY, window=100), cfg, init=start)
    for u, v, w in zip(jax.tree.leaves(tuned.params), jax.tree.leaves(nnx.state(start)),
                       jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
        assert u.shape == w.shape
    assert any(not np.array_equal(np.asarray(v), np.asarray(w))
               for v, w in zip(jax.tree.leaves(tuned.params), jax.tree.leaves(fresh.params)))
    with pytest.raises(ValueError, match="init: architecture"):
        init_train_state(dataclasses.replace(TINY, hidden=8), cfg, init=start)


def test_fit_estimator_resume_equals_uninterrupted(tmp_path, real_fields):
    """Two steps, a stop and a resume give the very parameters of four uninterrupted steps."""
    from lbdvd_jax.estimator_train import fit_estimator
    cfg = EstimatorTrainConfig(batch_size=8, total_steps=100, warmup_steps=2)
    x = np.random.default_rng(0).poisson(200, (12, 84, 84)).astype(np.float32)
    sets = {"val": (x, np.arange(12) % 12)}
    fit_estimator(TINY, cfg, real_fields, out_dir=tmp_path / "a", eval_sets=sets, max_steps=4, eval_every=4)
    fit_estimator(TINY, cfg, real_fields, out_dir=tmp_path / "b", eval_sets=sets, max_steps=2, eval_every=4)
    fit_estimator(TINY, cfg, real_fields, out_dir=tmp_path / "b", eval_sets=sets, max_steps=4, eval_every=4)
    from lbdvd_jax import checkpoint as C
    from lbdvd_jax.estimator_train import init_train_state
    _, like = init_train_state(TINY, cfg)
    states = []
    for run in ("a", "b"):
        with C.checkpoint_manager(tmp_path / run / "ckpt") as mgr:
            states.append(C.restore_train_state(mgr, like))
    assert int(states[0].step) == int(states[1].step) == 4
    for u, v in zip(jax.tree.leaves(states[0].params), jax.tree.leaves(states[1].params)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# ---------------------------------------------------------------- judging windows (context)

WIDE = EstimatorConfig(num_bins=8, conv=((4, 3, 2), (8, 3, 2)), spectral_width=8, hidden=16, window=100)


def test_window_corners_centre_clamp_and_short_axes():
    from lbdvd_jax.defocus_map import window_corners

    origins = np.array([[0, 0], [42, 126], [300, 416], [336, 400]])
    got = window_corners(origins, (420, 500), 128)
    # centred (22 px each side) where the image has room, pushed inside at the borders
    assert got.tolist() == [[0, 0], [20, 104], [278, 372], [292, 372]]
    assert window_corners(np.array([[0, 0], [6, 42]]), (90, 300), 128).tolist() == [[0, 0], [0, 20]]


def test_wide_window_probabilities_equal_the_model_on_numpy_windows(rng):
    """A grid patch is judged from its 100-px window cut by hand in NumPy (centred, shifted inside
    at the border; a 90-px axis reflected), in one image and in any slab of it (dask blocks)."""
    from lbdvd_jax.defocus_map import patch_probabilities
    from lbdvd_jax.patches import patch_grid

    model = DefocusEstimator(WIDE, rngs=nnx.Rngs(3))
    graphdef, params = nnx.split(model)
    apply = jax.jit(lambda x: jax.nn.softmax(nnx.merge(graphdef, params)(x), -1))  # the reference model call
    img = (rng.poisson(50.0, (260, 300)) + 100 * (rng.random((260, 300)) > 0.97)).astype(np.float32)
    origins = patch_grid(img.shape)
    got = patch_probabilities(img, origins, model=model)
    ref = []
    for r, c in origins:
        r0, c0 = min(max(r - 8, 0), 260 - 100), min(max(c - 8, 0), 300 - 100)
        ref.append(img[r0:r0 + 100, c0:c0 + 100])
    want = np.asarray(apply(jnp.asarray(np.stack(ref))))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # a slab holding the windows of the lower-right patches only, with its offset
    sel = origins[(origins[:, 0] >= 126) & (origins[:, 1] >= 168)]
    slab = img[118:, 160:]
    part = patch_probabilities(slab, sel, model=model, image_shape=img.shape, offset=(118, 160))
    np.testing.assert_allclose(part, got[(origins[:, 0] >= 126) & (origins[:, 1] >= 168)], atol=1e-6)
    with pytest.raises(ValueError, match="does not hold every judging window"):
        patch_probabilities(img[130:, 170:], sel, model=model, image_shape=img.shape, offset=(130, 170))
    # an axis shorter than the window: reflected (symmetric) to 100 px around the image
    short = img[:90]
    g2 = patch_grid(short.shape)
    got2 = patch_probabilities(short, g2, model=model)
    padded = np.pad(short, ((5, 5), (0, 0)), mode="symmetric")
    ref2 = [padded[:, min(max(c - 8, 0), 200):min(max(c - 8, 0), 200) + 100] for _, c in g2]
    np.testing.assert_allclose(got2, np.asarray(apply(jnp.asarray(np.stack(ref2)))),
                               atol=1e-5)
    # isolated 84-px patches keep the paper's protocol: the same model judges them alone
    alone = estimator_probs(model, img[None, :84, :84])
    np.testing.assert_allclose(alone, np.asarray(apply(jnp.asarray(img[None, :84, :84]))),
                               atol=1e-5)


@pytest.mark.filterwarnings("ignore::lbdvd_jax.defocus_map.EstimatorDomainWarning")  # untrained model
def test_wide_window_dask_pass_equals_in_memory(rng):
    pytest.importorskip("dask")
    import dask.array as da

    from lbdvd_jax import restore
    from lbdvd_jax.dask_restore import restore_dask

    model = DefocusEstimator(WIDE, rngs=nnx.Rngs(3))
    img = (rng.poisson(80.0, (400, 470)) + 300 * (rng.random((400, 470)) > 0.98)).astype(np.uint16)
    ref = restore(img, model=model, num_iter=2)
    got = restore_dask(da.from_array(img, chunks=(150, 130)), model=model, num_iter=2, block=128,
                       scheduler="sync")
    np.testing.assert_array_equal(got.levels, ref.levels)
    np.testing.assert_allclose(got.probs, ref.probs.reshape(got.probs.shape), atol=1e-6)


def test_window_config_checked_and_round_trips(tmp_path):
    with pytest.raises(ValueError, match="window"):
        EstimatorConfig(window=90 + 1)
    model = DefocusEstimator(WIDE, rngs=nnx.Rngs(0))
    path = export_estimator(tmp_path / "w.npz", WIDE, nnx.state(model, nnx.Param))
    assert load_estimator(path).config.window == 100
