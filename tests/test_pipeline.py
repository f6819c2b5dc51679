"""restore(): modes against float64 loop oracles, pass-through, chunking, compile-once, stacks."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from reference import restore_ref

from lbdvd_jax import pipeline
from lbdvd_jax.model import DelpNet, DelpNetConfig
from lbdvd_jax.optics import Optics
from lbdvd_jax.patches import patch_grid
from lbdvd_jax.pipeline import level_map_pixels, predict_levels, restore, restore_timed
from lbdvd_jax.psf import psf_stack
from lbdvd_jax.streaming import depth_variant_deconvolve

SHAPE = (130, 170)  # 3 x 4 patches at stride 42, flush last row/column
PAPER_DEPTHS = tuple(2.0 * level for level in range(11))  # the paper's PSF per level
FAST = dict(context=6, num_iter=4, psf_size=11, background=0.0, psf_depth_um=PAPER_DEPTHS)


def _image(rng, shape=SHAPE):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    blobs = sum(800 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 30.0)
                for cy, cx in rng.uniform(0, 1, (12, 2)) * shape)
    return 100.0 + blobs + rng.uniform(0, 5, shape)


def _psfs(dtype=np.float32):
    return np.asarray(psf_stack(Optics(), size=11), dtype)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_oracle_matches_float64_loop_reference(rng, x64, pad_mode):
    img = _image(rng)
    n = len(patch_grid(SHAPE))
    labels = rng.integers(0, 12, n)
    got = restore(img, mode="oracle", levels=labels.reshape(3, 4), pad_mode=pad_mode, **FAST)
    want = restore_ref(img, labels, _psfs(np.float64), 84, 42, 6, 4, pad_mode, (0, 11))
    assert got.image.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got.image), want, rtol=1e-9)
    np.testing.assert_array_equal(np.asarray(got.levels).ravel(), labels)
    np.testing.assert_array_equal(np.asarray(got.probs).argmax(-1).ravel(), labels)


def test_float32_and_equals_patches_engine(rng):
    img = _image(rng).astype(np.float32)
    labels = rng.integers(0, 12, 12).astype(np.int32)
    got = restore(img, mode="oracle", levels=labels, pad_mode="constant", chunk_size=5, **FAST)
    want = depth_variant_deconvolve(img, labels, _psfs(), context=6, num_iter=4)
    assert got.image.dtype == jnp.float32
    np.testing.assert_allclose(got.image, want, rtol=2e-5, atol=1e-2)


def test_background_is_subtracted_before_rl_and_added_back(rng, x64):
    img = _image(rng)
    labels = rng.integers(1, 11, 12)  # all deconvolved
    fast = {**FAST, "background": 97.0}
    got = restore(img, mode="oracle", levels=labels, **fast)
    want = restore_ref(np.maximum(img - 97.0, 0), labels, _psfs(np.float64), 84, 42, 6, 4,
                       "reflect", (0, 11)) + 97.0
    np.testing.assert_allclose(np.asarray(got.image), want, rtol=1e-9)
    auto = restore(img, mode="oracle", levels=labels, **{**FAST, "background": "auto"})
    b = np.percentile(img, 0.5)
    want = restore_ref(np.maximum(img - b, 0), labels, _psfs(np.float64), 84, 42, 6, 4,
                       "reflect", (0, 11)) + b
    np.testing.assert_allclose(np.asarray(auto.image), want, rtol=1e-9)


def test_di_uses_in_focus_psf_everywhere(rng, x64):
    img = _image(rng)
    got = restore(img, mode="di", **FAST)
    want = restore_ref(img, np.ones(12, int), np.repeat(_psfs(np.float64)[:1], 2, 0), 84, 42,
                       6, 4, "reflect", ())
    np.testing.assert_allclose(np.asarray(got.image), want, rtol=1e-9)
    assert np.all(np.asarray(got.levels) == 0)


def test_passthrough_returns_image_and_chunking_invariant(rng):
    img = _image(rng).astype(np.float32)
    same = restore(img, mode="oracle", levels=np.full((3, 4), 11), **FAST)
    np.testing.assert_allclose(same.image, img, rtol=1e-6)
    labels = rng.integers(0, 12, (3, 4))
    a = restore(img, mode="oracle", levels=labels, chunk_size=1, **FAST).image
    b = restore(img, mode="oracle", levels=labels, chunk_size=64, **FAST).image
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)


def test_progress_callback_per_chunk(rng):
    img = _image(rng).astype(np.float32)
    calls = []
    a = restore(img, mode="di", chunk_size=5, progress=lambda d, t: calls.append((d, t)), **FAST)
    assert calls == [(5, 12), (10, 12), (12, 12)]
    b = restore(img, mode="di", chunk_size=5, **FAST)
    np.testing.assert_array_equal(a.image, b.image)


def test_per_pixel_level_map_is_sampled_at_patch_centres(rng):
    img = _image(rng).astype(np.float32)
    labels = rng.integers(0, 12, (3, 4))
    pixels = level_map_pixels(labels, SHAPE)
    assert pixels.shape == SHAPE
    a = restore(img, mode="oracle", levels=pixels, **FAST)
    np.testing.assert_array_equal(a.levels, labels)


def _fake_classifier(probs):
    """A model through the public seam: any callable patches -> (n, 12) probabilities."""
    def classify(patches):
        return np.asarray(probs[: patches.shape[0]])
    return classify


def test_soft_with_one_hot_probabilities_equals_dv(rng):
    img = _image(rng).astype(np.float32)
    labels = rng.integers(1, 12, 12).astype(np.int32)  # no level 0: soft deconvolves it
    probs = np.eye(12, dtype=np.float32)[labels]
    model = _fake_classifier(probs)
    dv = restore(img, model=model, mode="dv", pool=False, **FAST)
    soft = restore(img, model=model, mode="soft", pool=False, **FAST)
    oracle = restore(img, mode="oracle", levels=labels, **FAST)
    np.testing.assert_array_equal(np.asarray(dv.levels).ravel(), labels)
    np.testing.assert_allclose(dv.image, oracle.image, rtol=1e-6)
    np.testing.assert_allclose(soft.image, dv.image, rtol=1e-5, atol=1e-3)
    mixed = probs * 0.5 + 0.5 * np.eye(12, dtype=np.float32)[np.clip(labels - 1, 1, 10)]
    soft2 = restore(img, model=_fake_classifier(mixed), mode="soft", pool=False, **FAST)
    assert not np.allclose(soft2.image, soft.image)


def test_compiles_once_per_shape_and_stacks(rng):
    img = _image(rng).astype(np.float32)
    core = pipeline._deconvolve_core
    restore(img, mode="oracle", levels=rng.integers(0, 12, 12), **FAST)
    size = core._cache_size()
    for _ in range(2):  # other level maps, other numbers of active patches, other modes
        restore(img + 1, mode="oracle", levels=rng.integers(0, 12, 12), **FAST)
    restore(img, mode="di", **FAST)
    assert core._cache_size() == size
    stack = np.stack([img, img[::-1]])
    labels = rng.integers(0, 12, (2, 3, 4))
    both = restore(stack, mode="oracle", levels=labels, **FAST)
    assert both.image.shape == stack.shape and both.levels.shape == (2, 3, 4)
    one = restore(stack[1], mode="oracle", levels=labels[1], **FAST)
    np.testing.assert_allclose(both.image[1], one.image, rtol=1e-6)
    assert core._cache_size() == size


def test_dv_with_a_fresh_delpnet_and_timings(rng):
    # an untrained DelpNet of two small layers: the plumbing of a DelpNet model through restore
    model = DelpNet(DelpNetConfig(features=((4, 3, 2), (8, 3, 2))), rngs=nnx.Rngs(0))
    model.eval()
    img = _image(rng, (84, 130)).astype(np.float32)
    labels, probs, origins = predict_levels(img, model=model, pool=False)[:3]
    assert labels.shape == (3,) and probs.shape == (3, 12) and origins.shape == (3, 2)
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-5)
    res, t = restore_timed(img.astype(np.uint16), model=model, pool=False, **FAST)
    assert res.levels.shape == (1, 3) and res.probs.shape == (1, 3, 12)
    assert res.z_um.shape == (1, 3) and res.certainty.shape == (1, 3)
    np.testing.assert_array_equal(res.levels.ravel(), labels)
    assert set(t) == {"classify", "deconvolve", "total"}


def test_chunked_classification_keeps_order(rng):
    def classify(patches):
        lab = (np.mean(patches, axis=(1, 2)) // 7).astype(np.int64) % 12
        return np.eye(12, dtype=np.float32)[lab]
    img = _image(rng).astype(np.float32)
    a = predict_levels(img, model=classify, batch_size=2, pool=False).labels
    b = predict_levels(img, model=classify, batch_size=100, pool=False).labels
    np.testing.assert_array_equal(a, b)
    assert len(set(np.asarray(a).tolist())) > 1


def test_bad_input(rng):
    img = _image(rng).astype(np.float32)
    with pytest.raises(ValueError, match="mode: got 'fast'"):
        restore(img, mode="fast")
    with pytest.raises(ValueError, match="model: mode 'dv' needs a defocus estimator"):
        restore(img)
    with pytest.raises(ValueError, match="levels, z_um: mode 'oracle' needs"):
        restore(img, mode="oracle")
    with pytest.raises(ValueError, match="levels: got shape"):
        restore(img, mode="oracle", levels=np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="levels: labels must be"):
        restore(img, mode="oracle", levels=np.full((3, 4), 12))
    bad = img.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        restore(bad, mode="di")
    with pytest.raises(ValueError, match="negative"):
        restore(img - 1000, mode="di")
    with pytest.raises(ValueError, match="smaller than one"):
        restore(img[:50], mode="di")
    with pytest.raises(ValueError, match="image: expected"):
        restore(img[None, None], mode="di")
    with pytest.raises(ValueError, match="weights"):
        restore(img, mode="di", weights="gaussian")
    with pytest.raises(ValueError, match="pool: got 'local'"):
        restore(img, mode="di", pool="local")


def test_per_level_iteration_table(rng):
    """A table of one count == that int; a 0 for a level == passing that level through."""
    img = _image(rng).astype(np.float32)
    labels = np.array([1, 2, 3, 1, 2, 3, 11, 1, 2, 3, 1, 2])
    flat = restore(img, mode="oracle", levels=labels, **FAST)
    table = restore(img, mode="oracle", levels=labels, **{**FAST, "num_iter": (4,) * 11})
    np.testing.assert_allclose(table.image, flat.image, rtol=1e-6)
    opts = {**FAST, "background": 110.0}  # 0 iterations: untouched, not clipped at background
    skip1 = restore(img, mode="oracle", levels=labels, **{**opts, "num_iter": (4, 0) + (4,) * 9})
    as_bg = restore(img, mode="oracle", levels=np.where(labels == 1, 11, labels), **opts)
    np.testing.assert_allclose(skip1.image, as_bg.image, rtol=1e-6)
    assert not np.allclose(skip1.image, restore(img, mode="oracle", levels=labels, **opts).image)
    with pytest.raises(ValueError, match="one non-negative int per PSF level"):
        restore(img, mode="oracle", levels=labels, **{**FAST, "num_iter": (4, 4)})
    with pytest.raises(ValueError, match="num_iter must be >= 0"):
        restore(img, mode="oracle", levels=labels, **{**FAST, "num_iter": -1})


def test_default_policy_deconvolves_level_1_with_the_in_focus_psf(rng, x64):
    img = _image(rng)
    labels = np.full(12, 1)
    fast = {k: v for k, v in FAST.items() if k != "psf_depth_um"}
    default = restore(img, mode="oracle", levels=labels, **fast)
    depths = [0.0] * 11
    want = restore_ref(img, labels, np.asarray(psf_stack(Optics(), np.asarray(depths), size=11)),
                       84, 42, 6, 4, "reflect", (0, 11))
    np.testing.assert_allclose(np.asarray(default.image), want, rtol=1e-9)
    paper = restore(img, mode="oracle", levels=labels, **FAST)
    assert not np.allclose(np.asarray(paper.image), want)
    with pytest.raises(ValueError, match="psf_depth_um"):
        restore(img, mode="oracle", levels=labels, **{**fast, "psf_depth_um": (1.0, -2.0)})


def test_progress_callbacks_of_concurrent_calls_stay_apart(rng):
    import threading
    img = _image(rng).astype(np.float32)
    restore(img, mode="di", chunk_size=5, progress=lambda d, t: None, **FAST)  # compile first
    seen = {0: [], 1: []}
    errors = []

    def run(k):
        try:
            restore(img + k, mode="di", chunk_size=5, progress=lambda d, t: seen[k].append((d, t)), **FAST)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in (0, 1):  # each call saw exactly its own steps, ending at its own total
        assert seen[k] and seen[k][-1] == (12, 12) and len(seen[k]) == 3


def test_continuous_defocus_uses_each_patchs_own_psf(rng, x64):
    """Per-patch PSFs at the patches' expected depths (through the policy) equal defocus_psf
    there: the restore equals the float64 loop oracle fed with defocus_psf(z) per patch."""
    from lbdvd_jax.psf import defocus_psf
    img = _image(rng)
    levels = rng.integers(2, 10, 12)
    probs = np.zeros((12, 12))
    probs[np.arange(12), levels] = 0.5
    probs[np.arange(12), levels + 1] = 0.5           # halfway: expected z = 2 level + 1 um
    fast = {k: v for k, v in FAST.items() if k != "psf_depth_um"}
    got = restore(img, model=lambda p: probs[: len(p)], defocus="continuous", surface_degree=None,
                  pool=False, **fast)
    z = 2.0 * levels + 1.0
    np.testing.assert_allclose(np.asarray(got.z_um).ravel(), z, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got.psf_z_um).ravel(), z, rtol=1e-6)  # policy: identity >= 4 um
    kernels = np.stack([np.asarray(defocus_psf(Optics(), float(zz), size=11)) for zz in z])
    want = restore_ref(img, np.full(12, 5), kernels, 84, 42, 6, 4, "reflect", (0, 11))
    np.testing.assert_allclose(np.asarray(got.image), want, rtol=1e-9)
    with pytest.raises(ValueError, match="defocus"):
        restore(img, model=lambda p: probs[: len(p)], defocus="smooth", **fast)


def test_depth_surface_recovers_a_known_quadric(rng):
    from lbdvd_jax.depth_surface import fit_depth_surface
    shape = (520, 696)
    yy, xx = np.mgrid[42:520:42, 42:696:42]
    centres = np.stack([yy.ravel(), xx.ravel()], -1).astype(float)
    y, x = (centres[:, 0] - 259.5) / 259.5, (centres[:, 1] - 347.5) / 347.5
    truth = 8 + 5 * x - 2 * y + 3 * x * x
    z = truth + rng.normal(0, 0.7, truth.shape)
    z[::9] += 15.0                                     # gross misreads, robustly ignored
    w = np.ones_like(z)
    w[::7] = 0.0                                       # bg patches: no weight
    fit = fit_depth_surface(z, w, centres, shape, degree=2)
    assert np.sqrt(np.mean((fit.z_patches - truth) ** 2)) < 0.3
    assert fit.z_map.shape == shape
    plane = fit_depth_surface(4 + 6 * x + rng.normal(0, 0.7, x.shape), np.ones_like(x), centres, shape)
    assert len(plane.coeffs) == 3  # 'auto' (BIC) keeps a plane a plane
    with pytest.raises(ValueError, match="lower degree"):
        fit_depth_surface(z[:3], np.ones(3), centres[:3], shape, degree=2)
