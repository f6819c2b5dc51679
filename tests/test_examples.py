"""Smoke runs of the paper-figure scripts in examples/ with tiny settings."""

import json
import pathlib
import runpy
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _run(script, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [script] + argv)
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")


@pytest.mark.filterwarnings("ignore:no shipped DelpNet")
def test_fig7(tmp_path, monkeypatch):
    out = tmp_path / "fig7.json"
    _run("fig7_phantoms.py", ["--iterations", "2", "-o", str(out)], monkeypatch)
    res = json.loads(out.read_text())
    assert set(res["objects"]) == {"O1_beads", "O2_ring", "O3_cells"}
    assert all(set(v) >= {"noisy", "dv", "dv_oracle", "di", "blind"} for v in res["objects"].values())


@pytest.mark.filterwarnings("ignore:no shipped DelpNet")
def test_fig8(tmp_path, monkeypatch):
    out = tmp_path / "fig8.json"
    _run("fig8_per_level.py", ["--per-level", "2", "--iterations", "2", "--tune", "-o", str(out)],
         monkeypatch)
    res = json.loads(out.read_text())
    assert len(res["levels"]) == 11 and res["levels"][3]["n"] == 2
    assert set(res["methods"]) == {"input", "dv", "dv_oracle", "dv_soft", "di", "blind",
                                   "dv_tuned", "dv_oracle_tuned"}
    assert res["iterations"] == res["tuning"]["table"] and len(res["iterations"]) == 11
    gain = res["levels"][0]["dv_oracle"]["psnr_gain"]["mean"]
    assert gain == 0.0  # level 0 passes through


@pytest.mark.filterwarnings("ignore:no shipped DelpNet")
def test_fig9(tmp_path, monkeypatch):
    out = tmp_path / "fig9.json"
    _run("fig9_montage.py", ["--iterations", "2", "--crop", "210", "-o", str(out)], monkeypatch)
    res = json.loads(out.read_text())
    assert res["rectangular"]["seam_score"] > 0 and res["triangular"]["seam_score"] > 0


def test_ablations_plumbing(tmp_path, monkeypatch, data_dir):
    """One variant end to end (tiny model): train, finalise, one row with val and test scores
    (needs the BBBC006 fields for the train/val/test split; skipped without them)."""
    out = tmp_path / "abl"
    _run("ablations.py", ["--smoke", "--in-process", "--only", "no_bg", "--per-level", "2", "--out", str(out),
                          "--data", str(data_dir / "bbbc006" / "infocus")], monkeypatch)
    rows = json.loads((out / "ablations.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["no_bg"] and rows[0]["flags"] == "--no-bg"
    assert 0.0 <= rows[0]["test"]["accuracy"] <= 1.0
    assert set(rows[0]["test_raw_bn"]) == {"accuracy", "within_1", "f1"}  # BN as trained
    with pytest.raises(SystemExit, match="unknown variant"):
        _run("ablations.py", ["--only", "nope", "--out", str(out)], monkeypatch)


def test_photon_budget(tmp_path, monkeypatch, data_dir):
    """A dim held-out field (3 % of its photons, 2 µm): the shipped estimator keeps the depth."""
    out = tmp_path / "dim.json"
    _run("photon_budget.py", ["--scales", "0.03", "--depths", "2", "--fields", str(data_dir / "bbbc006" / "infocus"),
                              "-o", str(out)], monkeypatch)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["split"], r["photon_budget"], r["z_um"]) for r in rows] == [("test", 0.03, 2.0), ("val", 0.03, 2.0)]
    # trained down to 0.03x the photon budget: within one level on >= 90 % of the foreground
    # (the estimator trained down to 0.3x called 24 % and 33 %, mean depth 11-12 µm)
    assert all(r["fg_patches"] > 20 and r["within_one_level"] >= 0.9 for r in rows)
    assert all(0.5 < r["mean_z_um"] < 4.0 for r in rows)


def test_depth_bias(tmp_path, monkeypatch, data_dir):
    """The staircase measurement: rows per field and split, the bias at the exact depths."""
    out = tmp_path / "bias.json"
    _run("depth_bias.py", ["--step", "10", "--fields", str(data_dir / "bbbc006" / "infocus"), "-o", str(out)],
         monkeypatch)
    res = json.loads(out.read_text())
    assert res["depths_um"] == [0.0, 10.0, 20.0]
    assert {v["split"] for v in res["fields"].values()} == {"train", "val", "test"}
    rows = res["fields"]["a02"]["rows"]
    assert [r[0] for r in rows] == [0.0, 10.0, 20.0] and all(r[3] > 0 for r in rows)
    assert all(abs(r[1]) < 4.0 for r in rows)   # a level depth is judged within two levels


def test_pooling_choice(tmp_path, monkeypatch, data_dir):
    """The pooling replay on one image of the validation field: every way scored, the agreement
    of the image and of the other microscopes' images reported."""
    out = tmp_path / "pool.json"
    _run("pooling_choice.py", ["--only", "uniform_5um", "--fields", str(data_dir / "bbbc006" / "infocus"),
                               "--other", str(data_dir / "other"), "-o", str(out)], monkeypatch)
    res = json.loads(out.read_text())
    assert res["split"] == "val" and "a01" in res["field"]
    row = res["rows"]["uniform_5um"]
    assert set(row) == {"none", "neighbours", "surface_0.5um", "surface_1um", "surface_2um", "surface_1um_ungated"}
    assert all(0.0 <= v <= 1.0 for v in row.values())
    assert row["surface_1um"] >= 0.9  # 5 µm lies between levels 2 and 3: either is right
    assert set(res["agreement"]) == {"uniform_5um", "mahotas_nuclear", "stardist_img2d"}
    assert set(res["other_called_le1"]["stardist_img2d"]) == set(row)
    calls = res["other_own_calls_per_level"]["mahotas_nuclear"]
    assert len(calls) == 12 and sum(calls) > 0
    with pytest.raises(SystemExit):
        _run("pooling_choice.py", ["--only", "nope"], monkeypatch)


def test_lookalike_kernel_against_direct_convolution():
    """The look-alike kernel k of focus_ambiguity.py: the in-focus PSF convolved with k (direct,
    circular convolution by SciPy, no FFT) is the 2 µm PSF; a hand-worked balanced accuracy."""
    from scipy import ndimage

    ns = runpy.run_path(str(EXAMPLES / "focus_ambiguity.py"), run_name="focus_ambiguity")
    grid = 128
    kernel, negative, _, _ = ns["lookalike_kernel"](2.0, grid=grid)
    c = grid // 2
    assert np.abs(kernel).sum() - np.abs(kernel[c - 49:c + 50, c - 49:c + 50]).sum() < 1e-4  # compact
    assert kernel.sum() == pytest.approx(1.0, abs=1e-9) and negative == pytest.approx(
        -kernel[kernel < 0].sum(), abs=1e-12)
    size = ns["PSF_SIZE"]
    import jax.numpy as jnp

    from lbdvd_jax.optics import Optics
    from lbdvd_jax.psf import psf_stack

    psf0, psf2 = (np.pad(p / p.sum(), ((0, grid - size), (0, grid - size)))
                  for p in np.asarray(psf_stack(Optics(), jnp.asarray([0.0, 2.0]), size=size), np.float64))
    # direct circular convolution with k's central 99 x 99 (k centred at grid // 2 by fftshift)
    got = ndimage.convolve(psf0, kernel[c - 49:c + 50, c - 49:c + 50], mode="wrap", origin=0)
    np.testing.assert_allclose(got, psf2, atol=1e-5)
    # thresholds on [1, 2, 5] (level 0) vs [3, 4, 6] (level 1): best cut 2.5, (2/3 + 3/3) / 2
    assert ns["best_threshold_accuracy"]([1, 2, 5], [3, 4, 6]) == pytest.approx(5 / 6)
    assert ns["best_threshold_accuracy"]([1, 2], [3, 4]) == 1.0


def test_focus_ambiguity(tmp_path, monkeypatch, data_dir):
    """The focus-ambiguity figures: no OTF zero inside Nyquist at 0-2 µm, one from 3 µm on (moving
    inward with z), the extra fall-off growing with z, one fall-off per field."""
    out = tmp_path / "amb.json"
    bias = tmp_path / "bias.json"  # a depth_bias.py result: readings at focus that rise with the fall-off
    bias.write_text(json.dumps({"fields": {f"a0{i}": {"rows": [[0.0, 0.1 * i], [2.0, 1.5]]} for i in range(1, 8)}}))
    _run("focus_ambiguity.py", ["--fields", str(data_dir / "bbbc006" / "infocus"), "--depth-bias", str(bias),
                                "-o", str(out)], monkeypatch)
    res = json.loads(out.read_text())
    falloff = res["field_falloff_db"]
    assert res["reading_at_focus_um"]["a03"] == pytest.approx(0.3)
    want = np.corrcoef([falloff[f"a0{i}"] for i in range(1, 8)], [0.1 * i for i in range(1, 8)])[0, 1]
    assert res["falloff_vs_reading_r"] == pytest.approx(want)
    zeros = res["otf_first_zero_cycle_per_px"]
    assert zeros["0"] is None and zeros["1"] is None and zeros["2"] is None
    assert 0.3 < zeros["3"] < 0.45 and zeros["4"] < zeros["3"] and zeros["20"] < zeros["18"] < 0.06
    extra = [res["defocus_extra_falloff_db"][str(z)] for z in range(5)]
    assert extra[0] == 0.0 and all(b > a for a, b in zip(extra, extra[1:]))
    assert len(res["field_falloff_db"]) == 7 and res["field_falloff_spread_db"] > 0
    lo, hi = res["band_cycle_per_px"]
    assert 0 < lo < hi < 0.5
    look = res["lookalike_2um"]
    # every field falls off faster at 2 µm than in focus; the crossings are exactly the pairs
    # [b, a]: field b in focus falls off faster than field a at 2 µm
    at2 = look["field_falloff_at_2um_db"]
    assert all(at2[f] > falloff[f] for f in falloff)
    want = sorted([b, a] for a in at2 for b in falloff if a != b and falloff[b] > at2[a])
    assert sorted(look["crossings_infocus_blurrier_than_2um"]) == want
    ns = runpy.run_path(str(EXAMPLES / "focus_ambiguity.py"), run_name="focus_ambiguity")
    assert look["best_threshold_balanced_accuracy"] == pytest.approx(
        ns["best_threshold_accuracy"](list(falloff.values()), list(at2.values())))
    assert 0 <= look["kernel_negative_mass"] < 0.01 and look["max_otf_ratio"] <= 1.0 + 1e-9
    assert 0.5 < look["min_abs_otf_in_focus"] <= 1.0  # no zero: the look-alike kernel exists
    # the synthetic 2 µm level keeps the in-focus field's own noise at low frequencies (excess
    # power) and smooths it at high ones (a deficit); level 0 (a near-delta PSF) much less so
    ratio = res["synthetic_noise_power_ratio"]["levels"]
    assert ratio["1"][0] > 1.3 and ratio["1"][-1] < 0.95 and abs(ratio["0"][0] - 1) < ratio["1"][0] - 1
    with pytest.raises(SystemExit):
        _run("focus_ambiguity.py", ["--low", "0.7"], monkeypatch)
    with pytest.raises(SystemExit):
        _run("focus_ambiguity.py", ["--depth-bias", str(tmp_path / "missing.json")], monkeypatch)


def test_size_ambiguity_pieces_against_references():
    """size_ambiguity.py's pieces against independent references: Otsu against scikit-image, the
    fitted distance against NumPy least squares, the pairwise error against SciPy's normal CDF,
    the level blur against SciPy's direct FFT convolution."""
    from scipy import signal, stats
    from skimage.filters import threshold_otsu

    ns = runpy.run_path(str(EXAMPLES / "size_ambiguity.py"), run_name="size_ambiguity")
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(2.0, 0.3, 4000), rng.normal(5.0, 0.5, 1000)])
    assert ns["otsu_threshold"](values) == pytest.approx(threshold_otsu(values, nbins=256), abs=0.03)
    target = rng.normal(size=(8, 8))
    cands = rng.normal(size=(3, 8, 8))
    var = rng.uniform(0.5, 2.0, size=(8, 8))
    got = ns["fitted_distance"](target, cands, var)
    for m, g in zip(cands, got):
        w = 1.0 / np.sqrt(var.ravel())
        design = np.stack([m.ravel(), np.ones(64)], 1) * w[:, None]
        coef, *_ = np.linalg.lstsq(design, target.ravel() * w, rcond=None)
        assert g == pytest.approx(np.sum((target.ravel() * w - design @ coef) ** 2))
    for d in (0.0, 1.0, 2.0, 5.0):
        assert ns["pairwise_error"](d) == pytest.approx(stats.norm.cdf(-d / 2))
    np.testing.assert_allclose(ns["magnify"](target, 1.0), target, atol=1e-9)
    signal_counts = np.zeros((256, 256))
    signal_counts[100:140, 110:150] = 500.0
    got = ns["blurred_patches"](signal_counts, ns["level_otfs"](256))
    import jax.numpy as jnp

    from lbdvd_jax.optics import Optics
    from lbdvd_jax.psf import psf_stack

    psf = np.asarray(psf_stack(Optics(), jnp.asarray([10.0]), size=ns["PSF_SIZE"]), np.float64)[0]
    want = signal.fftconvolve(signal_counts, psf / psf.sum(), mode="same")[86:170, 86:170]
    np.testing.assert_allclose(got[5], want, atol=1e-6 * want.max())


def test_size_ambiguity(tmp_path, monkeypatch, data_dir):
    out = tmp_path / "size.json"
    _run("size_ambiguity.py", ["--fields", str(data_dir / "bbbc006" / "infocus"), "--phantoms", "3",
                               "--scales", "3", "-o", str(out)], monkeypatch)
    res = json.loads(out.read_text())
    assert len(res["fields"]) == 7 and all(20 < v["median_diameter_px"] < 50 for v in res["fields"].values())
    sizes = [v["median_diameter_px"] for v in res["fields"].values()]
    assert res["size_spread"] == pytest.approx(max(sizes) / min(sizes))
    assert res["scales"][0] == pytest.approx(1 / res["size_spread"])
    assert res["scales"][-1] == pytest.approx(res["size_spread"])
    assert len(res["levels"]) == 11 and sum(r["n"] for r in res["levels"]) > 0
    with pytest.raises(SystemExit):
        _run("size_ambiguity.py", ["--phantoms", "0"], monkeypatch)


def test_noise_texture_pieces_and_run(tmp_path, monkeypatch, data_dir):
    """noise_texture.py: the added texture has the variance of camera noise times sum(psf^2) and
    a zero mean (the mean image is unchanged); shares counted on the foreground; one model, one
    field end to end; a missing model file refused."""
    ns = runpy.run_path(str(EXAMPLES / "noise_texture.py"), run_name="noise_texture")
    import jax.numpy as jnp

    from lbdvd_jax.camera import GAIN, OFFSET, READ_NOISE
    from lbdvd_jax.optics import Optics
    from lbdvd_jax.psf import psf_stack

    flat = np.full((256, 256), 400.0)
    noise = ns["lowpass_camera_noise"](flat, 2.0, seed=0)[40:-40, 40:-40]
    psf = np.asarray(psf_stack(Optics(), jnp.asarray([2.0]), size=49), np.float64)[0]
    want = (GAIN * (400.0 - OFFSET) + READ_NOISE ** 2) * np.sum((psf / psf.sum()) ** 2)
    assert np.var(noise) == pytest.approx(want, rel=0.15) and abs(np.mean(noise)) < 0.2 * np.sqrt(want)
    assert ns["level_shares"]([0, 0, 1, 11, 5]) == [0.5, 0.25]
    assert ns["level_shares"]([11, 11]) == [None, None]
    out = tmp_path / "tex.json"
    _run("noise_texture.py", ["--fields", str(data_dir / "bbbc006" / "infocus"), "--field", "a02",
                              "-o", str(out)], monkeypatch)
    row = json.loads(out.read_text())["models"]["shipped"]["a02"]
    assert set(row) == {f"{t} {p}" for t in ("level0", "level0_texture", "level1") for p in ("own", "pooled")}
    assert all(0 <= v <= 1 for s in row.values() for v in s)
    with pytest.raises(SystemExit):
        _run("noise_texture.py", ["--model", str(tmp_path / "missing.npz")], monkeypatch)


def test_level01_tradeoff_reads_nested_records_once(tmp_path, monkeypatch):
    """level01_tradeoff.py: records at the top of a file, under 'acceptance' and under runs/NAME/,
    a run filed twice counted once, other JSONs skipped; the sums by hand; a missing folder refused."""
    row = lambda l0, l1: {"a02": [l0] + [1.0] * 10, "a01": [1.0, l1] + [1.0] * 9}  # noqa: E731
    (tmp_path / "estimator_acceptance.json").write_text(json.dumps({"uniform_share_right": row(0.4, 0.3)}))
    (tmp_path / "ab.json").write_text(json.dumps({"arm": {"acceptance": {"uniform_share_right": row(0.6, 0.1)}}}))
    arm = {"acceptance": {"uniform_share_right": row(0.6, 0.1)},
           "acceptance_matched_noise": {"uniform_share_right": row(0.5, 0.5)}}
    (tmp_path / "probe.json").write_text(json.dumps({"runs": {"x": arm}}))
    (tmp_path / "other.json").write_text(json.dumps([1, 2]))
    out = tmp_path / "out.json"
    _run("level01_tradeoff.py", ["--results", str(tmp_path), "-o", str(out)], monkeypatch)
    res = json.loads(out.read_text())
    assert res["records"] == 3
    assert sorted(round(r["sum"], 6) for r in res["rows"]) == [0.7, 0.7, 1.0]
    assert [r["noise"] for r in res["rows"] if round(r["sum"], 6) == 1.0] == ["matched"]
    with pytest.raises(SystemExit):
        _run("level01_tradeoff.py", ["--results", str(tmp_path / "none")], monkeypatch)
