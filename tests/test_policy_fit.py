"""The continuous-depth policy: its table, its plan, and the differentiable restore it is fitted through."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import psf_quad, rl_ref

from lbdvd_jax.optics import Optics
from lbdvd_jax.policy import LEVEL_POLICY, PolicyTable
from lbdvd_jax.policy_fit import PolicySamples, fit_policy, keep_level_rule, policy_summary, restore_windows

KNOTS = tuple(2.0 * np.arange(11))


def test_policy_table_interpolates_and_rounds():
    t = PolicyTable(KNOTS, tuple(np.linspace(1.0, 19.0, 11)), (0.0, 0.4, 2.0) + (15.0,) * 8)
    z = np.array([0.0, 1.0, 2.9, 25.0, np.nan])
    np.testing.assert_allclose(t.psf_depth(z), [1.0, 1.9, 1.0 + 1.8 * 1.45, 19.0, 1.0])
    assert t.iteration_counts(z).tolist() == [0, 0, 1, 15, 0]  # 0.2 -> 0 (passed through); 2.9 µm: 1.12


def test_restore_windows_equals_float64_rl_and_interpolates_iterations(x64, rng):
    win = (100 + rng.poisson(300, (2, 132, 132))).astype(np.float64)
    z = np.array([3.0, 11.0])
    got = np.asarray(restore_windows(win, jnp.asarray(z), jnp.asarray([4.0, 2.5]), max_iter=6,
                                     background=100.0))
    for i, (zi, n) in enumerate(zip(z, (4, 2))):
        h = psf_quad(49, zi)
        x = np.maximum(win[i] - 100.0, 0.0)
        lo = rl_ref(x, h, n)[24:108, 24:108] + 100.0
        if i == 0:
            np.testing.assert_allclose(got[i], lo, rtol=1e-8)
        else:  # 2.5 iterations: halfway between the 2nd and 3rd iterates
            hi = rl_ref(x, h, n + 1)[24:108, 24:108] + 100.0
            np.testing.assert_allclose(got[i], 0.5 * (lo + hi), rtol=1e-8)


def test_restore_windows_gradient_in_depth_and_iterations_matches_finite_differences(x64, rng):
    win = jnp.asarray((100 + rng.poisson(300, (1, 132, 132))).astype(np.float64))
    f = lambda z, n: jnp.sum(restore_windows(win, z[None], n[None], max_iter=4)[0, 30:40, 30:40])  # noqa: E731
    z, n = jnp.float64(7.3), jnp.float64(2.3)
    gz, gn = jax.grad(f, argnums=(0, 1))(z, n)
    hz, hn = 1e-4, 1e-4
    np.testing.assert_allclose(gz, (f(z + hz, n) - f(z - hz, n)) / (2 * hz), rtol=1e-5)
    np.testing.assert_allclose(gn, (f(z, n + hn) - f(z, n - hn)) / (2 * hn), rtol=1e-5)


def test_fit_moves_the_policy_toward_what_restores_best(rng):
    """Windows that are already sharp (the truth is the observed centre): the best policy is to
    leave them alone, and the fit drives the iterations there from the level table's 15."""
    win = (100 + rng.poisson(400, (24, 132, 132))).astype(np.float32)
    samples = PolicySamples(win, win[:, 24:108, 24:108].copy(), np.full(24, 9.0, np.float32),
                            np.full(24, 9.0, np.float32))
    table, hist = fit_policy(samples, init=LEVEL_POLICY, steps=25, batch=8, learning_rate=0.5)
    assert table.iterations[4] < 8 and table.iterations[5] < 8  # the knots around 9 µm
    assert hist[-1][1] > hist[0][1] + 3  # PSNR of the batch rose


def test_plan_follows_the_policy_table():
    from lbdvd_jax.defocus_map import DefocusMap
    from lbdvd_jax.restore_plan import plan_restoration

    origins = np.array([[r, c] for r in (0, 42, 84) for c in (0, 42, 84)], np.int32)
    labels = np.array([11, 0, 1, 2, 3, 4, 5, 6, 10], np.int32)
    probs = np.eye(12, dtype=np.float32)[labels]
    z = np.where(labels == 11, np.nan, 2.0 * labels).astype(np.float32)
    dmap = DefocusMap(labels, probs, origins, z, np.zeros(9, np.float32), np.ones(9, np.float32))
    table = PolicyTable(KNOTS, tuple(0.5 * np.asarray(KNOTS)), (0.0, 0.0) + tuple(float(k) for k in range(3, 12)))
    plan = plan_restoration((168, 168), origins, mode="dv", num_iter=None, num_psfs=11, dmap=dmap,
                            defocus="continuous", surface_degree=None, policy=table)
    assert plan.iters.tolist() == [0, 0, 0, 3, 4, 5, 6, 7, 11]
    assert plan.active.tolist() == [False, False, False] + [True] * 6
    assert plan.max_iter == 11
    np.testing.assert_allclose(plan.kernel_z_um[1:], 0.5 * z[1:])
    np.testing.assert_allclose(plan.psf_z_um[1:], 0.5 * z[1:])
    assert np.isnan(plan.psf_z_um[0])


def test_depth_surface_fits_each_patch_own_most_probable_depth():
    """A tilt 0 -> 20 µm whose patches' own probabilities are Gaussians around the true depth
    (σ 2 µm): the surface is fitted to their most probable depths (not to the pooled
    probabilities, here a decoy at 10 µm) and recovers the plane, range ends included, where
    the expected z of the same probabilities is pulled > 0.5 µm inward at each end."""
    from lbdvd_jax.defocus_map import DefocusMap
    from lbdvd_jax.estimator import defocus_from_probs
    from lbdvd_jax.policy import continuous_depths

    origins = np.array([[r, c] for r in range(0, 211, 42) for c in range(0, 421, 42)], np.int32)
    shape = (294, 504)
    true = 20.0 * origins[:, 1] / 420.0  # 0 µm at the first column, 20 µm at the last
    z = 2.0 * np.arange(11)
    own = np.exp(-((z[None] - true[:, None]) ** 2) / 8.0)
    own = np.concatenate([own / own.sum(-1, keepdims=True), np.zeros((len(own), 1))], -1).astype(np.float32)
    decoy = np.eye(12, dtype=np.float32)[np.full(len(own), 5)]
    labels = np.full(len(own), 5, np.int32)
    n = len(own)
    dmap = DefocusMap(labels, decoy, origins, np.full(n, 10.0, np.float32), np.zeros(n, np.float32),
                      np.ones(n, np.float32), own)
    got, surface = continuous_depths(dmap, origins, shape, "auto")
    np.testing.assert_allclose(got, np.clip(true, 0, 20), atol=0.02)
    mean = defocus_from_probs(own.astype(np.float64))[0]
    assert mean[true == 0].min() > 0.5 and mean[np.isclose(true, 20)].max() < 19.5
    # no own probabilities kept (a map built by hand): the pooled ones are used
    got, _ = continuous_depths(dmap._replace(own_probs=None), origins, shape, "auto")
    np.testing.assert_allclose(got, 10.0, atol=1e-6)


def test_bad_init_knots():
    with pytest.raises(ValueError, match="knots"):
        fit_policy(PolicySamples(*(np.zeros((1, 1)),) * 4), init=PolicyTable((0.0, 1.0), (0.0, 0.0), (1.0, 1.0)))


def _field(rng):
    y, x = np.mgrid[0:210, 0:260]
    img = 100.0 + sum(2000 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 40.0)
                      for cy, cx in rng.uniform(0, 1, (25, 2)) * (210, 260))
    return img.astype(np.float32)


def test_oracle_depth_map_deconvolves_each_patch_at_its_depth(rng, x64):
    """mode='oracle', z_um=: each patch gets the PSF at its own depth, through the policy (here
    the identity table, 3 iterations) - equal to the float64 loop oracle with defocus_psf(z)."""
    from reference import restore_ref

    from lbdvd_jax import restore
    from lbdvd_jax.patches import patch_grid
    from lbdvd_jax.psf import defocus_psf

    img = _field(rng).astype(np.float64)  # float64 in, float64 through the pipeline
    n = len(patch_grid(img.shape))
    z = rng.uniform(0.5, 19.5, n)
    z[3] = np.nan  # bg: passed through
    identity = tuple(2.0 * np.arange(11))
    got = restore(img, mode="oracle", z_um=z, psf_depth_um=identity, num_iter=3, context=6, psf_size=11,
                  background=0.0)
    np.testing.assert_allclose(np.asarray(got.psf_z_um).ravel(), z, rtol=1e-6)
    assert int(np.asarray(got.levels).ravel()[3]) == 11
    kernels = np.stack([np.asarray(defocus_psf(Optics(), float(zz), size=11)) for zz in np.nan_to_num(z)])
    labels = np.where(np.isnan(z), 11, 5)
    want = restore_ref(img, labels, kernels, 84, 42, 6, 3, "reflect", (0, 11))
    np.testing.assert_allclose(np.asarray(got.image), want, rtol=1e-9)


def test_oracle_depth_map_bad_input(rng):
    from lbdvd_jax import restore
    from lbdvd_jax.patches import patch_grid

    img = _field(rng)
    g = patch_grid(img.shape)
    grid = (len(np.unique(g[:, 0])), len(np.unique(g[:, 1])))
    with pytest.raises(ValueError, match="z_um: got shape"):
        restore(img, mode="oracle", z_um=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite and >= 0"):
        restore(img, mode="oracle", z_um=np.full(grid, -2.0))
    with pytest.raises(ValueError, match="finite and >= 0"):
        restore(img, mode="oracle", z_um=np.full(grid, np.inf))
    with pytest.raises(ValueError, match="not both"):
        restore(img, mode="oracle", z_um=np.zeros(grid), levels=np.zeros(grid, int))
    with pytest.raises(ValueError, match="for mode='oracle'"):
        restore(img, mode="di", z_um=np.zeros(grid))
    with pytest.warns(UserWarning, match="beyond 20 µm were clipped"):
        out = restore(img, mode="oracle", z_um=np.full(img.shape, 30.0), num_iter=1)
    assert np.nanmax(out.z_um) == 20.0


def test_policy_summary_by_hand():
    # MSEs 65535^2 * 1e-7 and 1e-5 -> 70 and 50 dB alone; pooled: mean 5.05e-6 -> 52.967 dB
    mse = 65535.0 ** 2 * np.array([1e-7, 1e-5])
    got = policy_summary(mse, np.array([1.0, 9.0]))
    assert got["0-4um"] == pytest.approx(70.0) and got["8-12um"] == pytest.approx(50.0)
    assert got["pooled"] == pytest.approx(-10 * np.log10(5.05e-6))
    assert np.isnan(got["4-8um"]) and list(got) == ["pooled", "0-4um", "4-8um", "8-12um", "12-16um", "16-20um"]
    with pytest.raises(ValueError, match="one value per sample"):
        policy_summary(mse, np.zeros(3))


def test_keep_level_rule_rebuilds_the_shipped_table():
    """The shipped table is the fit of benchmarks/results/policy_fit.json with the level rule at 0 and 2 µm."""
    from lbdvd_jax.policy import CONTINUOUS_POLICY

    fitted = PolicyTable(KNOTS, (1.383, 2.765) + CONTINUOUS_POLICY.psf_depth_um[2:],
                         (0.0, 2.181) + CONTINUOUS_POLICY.iterations[2:])
    assert keep_level_rule(fitted) == CONTINUOUS_POLICY
    assert keep_level_rule(fitted, knots_um=(4.0,)).psf_depth_um[2] == LEVEL_POLICY.psf_depth_um[2]
    with pytest.raises(ValueError, match="knots_um"):
        keep_level_rule(fitted, knots_um=(3.0,))
