"""Synthetic defocus data: focal plane, loader, camera noise, bg rule, crops vs SciPy, batches, splits."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from reference import bg_rule_ref, camera_moments_ref, defocus_valid_ref, gaussian_psf_ref, radial_noise_power

from lbdvd_jax import Optics, psf_stack
from lbdvd_jax.data import (
    BG_LABEL,
    COUNT_SCALE,
    CameraModel,
    add_camera_noise,
    bg_mask,
    defocus_crops,
    load_infocus_fields,
    make_eval_set,
    select_focal_plane,
    split_fields,
    synth_batch,
    tile_fields,
)
from lbdvd_jax.phantoms import phantom, phantoms

INFOCUS = "bbbc006/infocus"


@pytest.fixture(scope="module")
def small():
    """Three small noisy 'fields' (offset 100 + blobs) and 11 Gaussian stand-in PSFs (9 px)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:60, :70]
    fields = []
    for _ in range(3):
        f = 118.0 + np.zeros((60, 70))
        for cy, cx, a in rng.uniform([0, 0, 200], [60, 70, 2000], (4, 3)):
            f += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0)
        fields.append(rng.poisson(f).astype(np.float32))
    psfs = np.stack([gaussian_psf_ref(9, 0.3 + 0.3 * i) for i in range(11)]).astype(np.float32)
    return np.stack(fields), psfs


# --------------------------------------------------------------------------- focal plane, loader

def test_select_focal_plane(rng):
    stack = rng.normal(100, 1, (7, 20, 30))
    stack[4] += rng.normal(0, 50, (20, 30))
    assert select_focal_plane(stack) == 4 == int(np.argmax(stack.reshape(7, -1).std(1)))
    with pytest.raises(ValueError, match="z-stack"):
        select_focal_plane(stack[0])


def test_load_real_fields(data_dir):
    fields, names = load_infocus_fields(data_dir / INFOCUS)
    assert fields.shape == (7, 520, 696) and fields.dtype == np.float32
    assert names == sorted(names) and not any("cropped" in n for n in names)
    assert fields[0].min() == 105 and fields[0].max() == 3252  # README table, a01
    z00, _ = load_infocus_fields(data_dir / "bbbc006/z00")  # LZW, via imagecodecs
    assert z00.shape == (3, 520, 696)


def test_load_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_infocus_fields(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no file"):
        load_infocus_fields(tmp_path)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match="not a readable TIFF"):
        load_infocus_fields(tmp_path)
    (tmp_path / "broken.tif").unlink()
    tifffile.imwrite(tmp_path / "a.tif", np.ones((30, 40), np.uint16))
    tifffile.imwrite(tmp_path / "b.tif", np.ones((30, 41), np.uint16))
    with pytest.raises(ValueError, match="different shapes"):
        load_infocus_fields(tmp_path)
    stack = np.full((5, 30, 40), 100, np.uint16)
    stack[2, ::2] = 900  # the sharpest plane
    tifffile.imwrite(tmp_path / "b.tif", stack)
    fields, names = load_infocus_fields(tmp_path)
    assert names == ["a.tif", "b.tif"] and np.array_equal(fields[1], stack[2])


# --------------------------------------------------------------------------- camera noise, bg rule

@pytest.mark.parametrize("method,n", [("normal", 400_000),
                                      pytest.param("poisson", 20_000, marks=pytest.mark.slow)])
def test_camera_noise_moments(method, n):
    cam = CameraModel(gain=0.33, offset=100.0, read_noise=1.3)
    mu = jnp.asarray([100.0, 103.0, 130.0, 600.0, 3000.0], jnp.float32)
    noise = jax.jit(functools.partial(add_camera_noise, **cam._asdict(), method=method))
    x = noise(jax.random.key(0), jnp.broadcast_to(mu, (n, 5)))
    assert x.dtype == jnp.float32
    mean_ref, var_ref = camera_moments_ref(np.asarray(mu), *cam)
    x = np.asarray(x, np.float64)
    se = np.sqrt(var_ref / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean_ref), 5 * se + 1e-3)
    np.testing.assert_allclose(x.var(0), var_ref, rtol=6 * np.sqrt(2 / n) + 0.01)
    # noise already present: only the remaining variance is added
    half = noise(jax.random.key(1), jnp.full((n, 5), 600.0), present=0.75)
    np.testing.assert_allclose(np.var(np.asarray(half)), 0.25 * var_ref[3], rtol=6 * np.sqrt(2 / n / 5) + 0.01)


def test_camera_noise_dtype_follows_input(x64):
    x = jax.jit(add_camera_noise)(jax.random.key(0), jnp.full((4, 4), 200.0, jnp.float64))
    assert x.dtype == jnp.float64
    with pytest.raises(ValueError, match="method"):
        add_camera_noise(jax.random.key(0), jnp.ones(3), method="gauss")


def test_bg_rule_hand_made():
    base = np.full((84, 84), 120.0)
    cases = []
    for hi, lo in [(149.0, 120.0), (150.0, 120.0), (229.0, 200.0), (230.0, 210.0), (229.0, 199.0)]:
        p = base.copy() + (lo - 120.0)
        p[10, 10] = hi
        cases.append(p)
    got = np.asarray(bg_mask(jnp.asarray(np.stack(cases))))
    assert got.tolist() == [bg_rule_ref(c) for c in cases] == [True, False, True, False, False]
    assert bool(bg_mask(jnp.asarray(base), bg_max=110.0)) is False


def test_real_bg_rate_a01_vs_synthetic(data_dir):
    """Paper's rule on the a01 half-overlapping grid: ~98/165 real; synthetic noise must agree."""
    fields, _ = load_infocus_fields(data_dir / INFOCUS)
    a01 = fields[0]
    grid = np.stack([a01[y:y + 84, x:x + 84] for y in range(0, 437, 42) for x in range(0, 613, 42)])
    assert len(grid) == 165 and int(np.asarray(bg_mask(jnp.asarray(grid))).sum()) == 98
    # same grid of the central region, real vs blurred (level 5) + camera noise
    psf = gaussian_psf_ref(49, 4.0)
    blurred = defocus_valid_ref(a01, psf).astype(np.float32)
    noisy = jnp.round(jax.jit(add_camera_noise)(jax.random.key(0), jnp.asarray(blurred),
                                                present=float((psf ** 2).sum())))
    cut = lambda im: jnp.asarray(np.stack([np.asarray(im)[y:y + 84, x:x + 84]
                                           for y in range(0, 389, 42) for x in range(0, 565, 42)]))
    real = int(np.asarray(bg_mask(cut(a01[24:-24, 24:-24]))).sum())
    synth = int(np.asarray(bg_mask(cut(noisy))).sum())
    raw = int(np.asarray(bg_mask(cut(np.random.default_rng(0).poisson(blurred)))).sum())
    assert abs(synth - real) <= 0.1 * real and raw == 0


# --------------------------------------------------------------------------- crops vs SciPy

def test_crops_equal_scipy_valid_blur(data_dir):
    fields, _ = load_infocus_fields(data_dir / INFOCUS)
    psfs = np.asarray(psf_stack(Optics(), size=49))
    pos = np.array([[0, 0], [388, 564], [100, 37], [5, 400]])
    levels = np.array([0, 3, 10, 6])
    crops = jax.jit(functools.partial(defocus_crops, num_crops=1, noise=False, with_bg=False))
    for lv, (y, x) in zip(levels, pos):
        counts, labels = crops(jax.random.key(0), fields[1], psfs, np.array([lv]),
                               positions=np.array([[y, x]]))
        want = defocus_valid_ref(fields[1][y:y + 132, x:x + 132], psfs[lv])
        assert counts.shape == (1, 84, 84) and counts.dtype == jnp.float32 and int(labels[0]) == lv
        np.testing.assert_allclose(np.asarray(counts[0]), want, rtol=2e-5, atol=2e-3)


def test_crops_float64(x64, small):
    fields, psfs = small
    f64, p64 = fields[0].astype(np.float64), psfs.astype(np.float64)
    crops = jax.jit(functools.partial(defocus_crops, num_crops=1, patch=24, noise=False))
    counts, _ = crops(jax.random.key(0), f64, p64, np.array([2, 7]), positions=np.array([[3, 9], [28, 38]]))
    assert counts.dtype == jnp.float64
    for i, (lv, (y, x)) in enumerate(zip([2, 7], [(3, 9), (28, 38)])):
        want = defocus_valid_ref(f64[y:y + 32, x:x + 32], p64[lv])
        np.testing.assert_allclose(np.asarray(counts[i]), want, rtol=1e-12, atol=1e-9)


def test_defocus_crops_labels_and_noise(small):
    fields, psfs = small
    crops = jax.jit(functools.partial(defocus_crops, num_crops=4, patch=24))
    counts, labels = crops(jax.random.key(3), fields[0], psfs, np.arange(11))
    assert counts.shape == (44, 24, 24) and labels.shape == (44,) and labels.dtype == jnp.int32
    assert np.array_equal(np.asarray(counts), np.round(np.asarray(counts)))  # integer counts
    is_bg = np.array([bg_rule_ref(c) for c in np.asarray(counts)])
    np.testing.assert_array_equal(np.asarray(labels), np.where(is_bg, BG_LABEL, np.repeat(np.arange(11), 4)))


# --------------------------------------------------------------------------- batches

def test_synth_batch_shapes_labels_determinism(small):
    fields, psfs = small
    fn = jax.jit(functools.partial(synth_batch, batch_size=64, patch=24))
    x, y = fn(jax.random.key(0), fields, psfs)
    assert x.shape == (64, 24, 24, 1) and x.dtype == jnp.float32 and y.dtype == jnp.int32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    counts = np.asarray(x[..., 0]) * COUNT_SCALE
    is_bg = np.array([bg_rule_ref(c) for c in counts])
    np.testing.assert_array_equal(np.asarray(y) == BG_LABEL, is_bg)
    assert set(np.asarray(y).tolist()) <= set(range(12))
    x2, y2 = fn(jax.random.key(0), fields, psfs)
    assert np.array_equal(np.asarray(x), np.asarray(x2)) and np.array_equal(np.asarray(y), np.asarray(y2))
    x3, _ = fn(jax.random.key(1), fields, psfs)
    assert not np.array_equal(np.asarray(x), np.asarray(x3))


def test_synth_batch_levels_uniform_and_options(small):
    fields, psfs = small
    fn = jax.jit(functools.partial(synth_batch, batch_size=2048, patch=24, with_bg=False, augment=False))
    _, y = fn(jax.random.key(2), fields, psfs, level_mask=np.ones((3, 11), bool))
    counts = np.bincount(np.asarray(y), minlength=12)
    assert counts[11] == 0 and counts[:11].min() > 2048 / 11 * 0.75  # uniform levels, no bg label
    mask = np.zeros((3, 11), bool)
    mask[1, [2, 5]] = True
    x, y = fn(jax.random.key(3), fields, psfs, level_mask=mask)
    assert set(np.asarray(y).tolist()) == {2, 5}


def test_synth_batch_with_phantoms():
    psfs = np.stack([gaussian_psf_ref(9, 0.3 + 0.3 * i) for i in range(11)]).astype(np.float32)
    fields = np.full((1, 40, 40), 120.0, np.float32)  # flat fields: all bg
    x, y = jax.jit(functools.partial(synth_batch, batch_size=16, patch=24, phantom_fraction=0.375,
                                     augment=False))(jax.random.key(0), fields, psfs)
    counts = np.asarray(x[..., 0]) * COUNT_SCALE
    assert 3 <= np.sum(counts.max(axis=(1, 2)) > 300) <= 6  # 2 nuclei, 2 beads, 2 rings windows
    assert np.sum(np.asarray(y) == BG_LABEL) >= 10  # the flat-field patches are bg


def test_phantoms():
    fn = jax.jit(functools.partial(phantoms, num=24, size=48, kind="beads", offset=100.0))
    p = fn(jax.random.key(0))
    assert p.shape == (24, 48, 48) and p.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(p)))
    assert float(p.min()) >= 100.0 + 5.0 * 0.85 - 1e-3  # offset + background, never below
    peaks = np.asarray(p.max(axis=(1, 2)) - p.min(axis=(1, 2)))
    assert np.sum(peaks > 50) >= 12  # most windows hold objects
    np.testing.assert_array_equal(np.asarray(fn(jax.random.key(0))), np.asarray(p))
    assert not np.array_equal(np.asarray(fn(jax.random.key(1))), np.asarray(p))
    with pytest.raises(ValueError, match="kind"):
        phantom(jax.random.key(0), kind="stars")
    with pytest.raises(ValueError, match="size"):
        phantom(jax.random.key(0), size=4)


def test_make_eval_set_fixed(small):
    fields, psfs = small
    full = np.ones((3, 11), bool)
    x, y = make_eval_set(jax.random.key(5), fields, psfs, per_level=6, chunk=32, patch=24, with_bg=False,
                         level_mask=full)
    assert x.shape == (66, 24, 24, 1) and np.array_equal(y, np.repeat(np.arange(11), 6))
    x2, _ = make_eval_set(jax.random.key(5), fields, psfs, per_level=6, chunk=32, patch=24, with_bg=False,
                          level_mask=full)
    assert np.array_equal(x, x2)


def test_synth_batch_bad_input(small):
    fields, psfs = small
    with pytest.raises(ValueError, match="smaller than"):
        synth_batch(jax.random.key(0), fields[:, :20, :20], psfs, patch=24)
    with pytest.raises(ValueError, match="psfs"):
        synth_batch(jax.random.key(0), fields, psfs[0], patch=24)
    with pytest.raises(ValueError, match="fields"):
        synth_batch(jax.random.key(0), fields[0], psfs, patch=24)
    with pytest.raises(ValueError, match="phantom_fraction"):
        synth_batch(jax.random.key(0), fields, psfs, patch=24, phantom_fraction=1.5)
    with pytest.raises(ValueError, match="level_mask"):
        synth_batch(jax.random.key(0), fields, psfs, patch=24, level_mask=np.ones((2, 11), bool))
    no_level_3 = np.ones((fields.shape[0], 11), bool)
    no_level_3[:, 3] = False
    with pytest.raises(ValueError, match=r"level\(s\) \[3\] have no field"):
        synth_batch(jax.random.key(0), fields, psfs, patch=24, batch_size=4, level_mask=no_level_3,
                    levels=np.array([1, 3, 3, 5]))
    with pytest.raises(ValueError, match="positions"):
        defocus_crops(jax.random.key(0), fields[0], psfs, np.array([1]), num_crops=2, patch=24,
                      positions=np.zeros((1, 2)))


# --------------------------------------------------------------------------- splits

def test_split_by_field_disjoint_and_seeded():
    names = [f"a{i:02d}" for i in range(1, 8)]
    s = split_fields(names, seed=0)
    parts = [set(s[k].tolist()) for k in ("train", "val", "test")]
    assert [len(p) for p in parts] == [5, 1, 1]
    assert set().union(*parts) == set(range(7)) and sum(map(len, parts)) == 7  # disjoint cover
    s2 = split_fields(7, seed=0)
    assert all(np.array_equal(s[k], s2[k]) for k in s)
    big = split_fields(42, seed=3)
    assert [len(big[k]) for k in ("train", "val", "test")] == [32, 6, 4]


def test_split_paper_protocol_and_tiles():
    m = split_fields(7, protocol="paper", seed=1)
    total = m["train"].astype(int) + m["val"] + m["test"]
    assert m["train"].shape == (7, 11) and np.all(total == 1)
    assert [int(m[k].sum()) for k in ("train", "val", "test")] == [58, 11, 8]
    f = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12)
    tiles, src = tile_fields(f, tiles=(2, 3))
    assert tiles.shape == (12, 5, 4) and src.tolist() == [0] * 6 + [1] * 6
    np.testing.assert_array_equal(tiles[4], f[0, 5:10, 4:8])
    assert len(np.unique(tiles)) == f.size  # spatially disjoint: every pixel once


def test_split_bad_input():
    with pytest.raises(ValueError, match="fractions"):
        split_fields(7, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="protocol"):
        split_fields(7, protocol="images")
    with pytest.raises(ValueError, match="cannot be split"):
        split_fields(2)


def test_eval_set_paper_protocol_respects_mask(small):
    fields, psfs = small
    mask = np.zeros((3, 11), bool)
    mask[0, 4] = mask[2, [4, 9]] = True
    x, y = make_eval_set(jax.random.key(5), fields, psfs, per_level=6, chunk=32, patch=24, with_bg=False,
                         level_mask=mask)
    assert x.shape == (12, 24, 24, 1) and np.array_equal(y, np.repeat([4, 9], 6))


@pytest.mark.parametrize("spectrum", ["white", "matched"])
def test_synth_batch_noise_spectrum(spectrum):
    """Windows of a flat field that carries camera noise, blurred at 2 µm: with 'matched' the
    noise power is the analytic camera variance v = gain (mu - offset) + read^2 (+ rounding) in
    every radial band (within 10 %); with 'white' the low band keeps > 1.3 v (the field's own
    noise, blurred, on top of the fresh noise)."""
    from lbdvd_jax.camera import GAIN, OFFSET, READ_NOISE, add_camera_noise
    from lbdvd_jax.data import synth_batch

    flat = jnp.full((1, 400, 400), 400.0, jnp.float32)
    field = add_camera_noise(jax.random.PRNGKey(0), flat)
    x, _ = synth_batch(jax.random.PRNGKey(1), field, psf_stack(Optics(), size=49), batch_size=64,
                       augment=False, levels=jnp.ones((64,), jnp.int32), noise_spectrum=spectrum)
    power = radial_noise_power(np.asarray(x[..., 0], np.float64) * 65535.0)
    v = GAIN * (400.0 - OFFSET) + READ_NOISE ** 2 + 1.0 / 12.0
    if spectrum == "matched":
        np.testing.assert_allclose(power[1:] / v, 1.0, atol=0.1)  # band 0 holds the window's mean
    else:
        assert power[1] / v > 1.3


def test_camera_variance_numpy_and_jax():
    """camera_variance: gain (mu - offset) + read^2 above the offset, read^2 below it, for NumPy
    and JAX inputs alike (the module's calibrated defaults)."""
    from lbdvd_jax.camera import GAIN, OFFSET, READ_NOISE, camera_variance

    mu = np.array([50.0, 100.0, 400.0])
    want = np.array([READ_NOISE ** 2, READ_NOISE ** 2, GAIN * 300.0 + READ_NOISE ** 2])
    assert isinstance(camera_variance(mu), np.ndarray)
    np.testing.assert_allclose(camera_variance(mu), want)
    np.testing.assert_allclose(np.asarray(camera_variance(jnp.asarray(mu))), want, rtol=1e-6)
    np.testing.assert_allclose(camera_variance(mu, gain=1.0, offset=OFFSET - 100, read_noise=0.0), mu)
