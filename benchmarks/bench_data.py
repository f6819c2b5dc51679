"""Benchmark: synthetic DelpNet batches per second (`synth_batch`), vs a NumPy/SciPy baseline.

Times the jitted `synth_batch` on the 7 real BBBC006 in-focus fields and the 11 Eq. 2 PSFs
(49 px), compile apart, over batch sizes and phantom fractions; the baseline makes the same
patches in NumPy/SciPy (fftconvolve 'valid' of each window + NumPy Poisson photoelectrons).
Quality attached: the paper's bg rule on the real in-focus grid (84 px, stride 42, central
region) vs the same grid of synthetic patches (blur + camera noise) at levels 0, 5 and 10,
and vs raw Poisson on counts. Last stdout line: one JSON object with `patches_per_s`.

    python benchmarks/bench_data.py [--quick]
"""

import argparse
import functools
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.signal  # noqa: E402
from _common import block, emit, environment, time_call  # noqa: E402

from lbdvd_jax import Optics, psf_stack  # noqa: E402
from lbdvd_jax.data import GAIN, OFFSET, READ_NOISE, add_camera_noise, bg_mask, load_infocus_fields, synth_batch  # noqa: E402,E501

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "bbbc006" / "infocus"


def numpy_batch(rng, fields, psfs, batch_size, patch=84):
    """Baseline: the same patches in NumPy/SciPy, one fftconvolve per window."""
    k = psfs.shape[-1]
    win = patch + k - 1
    _, h, w = fields.shape
    out = np.empty((batch_size, patch, patch), np.float32)
    labels = rng.integers(0, psfs.shape[0], batch_size)
    for i, lv in enumerate(labels):
        f = fields[rng.integers(len(fields))]
        y, x = rng.integers(0, h - win + 1), rng.integers(0, w - win + 1)
        mu = scipy.signal.fftconvolve(f[y:y + win, x:x + win], psfs[lv], mode="valid")
        e = np.maximum(mu - OFFSET, 0) / GAIN
        out[i] = np.round(OFFSET + GAIN * rng.poisson(e) + READ_NOISE * rng.standard_normal(e.shape))
    return out / 65535.0, labels


def grid(img, patch=84, stride=42):
    h, w = img.shape
    return np.stack([img[y:y + patch, x:x + patch] for y in range(0, h - patch + 1, stride)
                     for x in range(0, w - patch + 1, stride)])


def bg_rates(fields, psfs):
    """bg rule on the central grid: real in-focus vs synthetic levels vs raw Poisson on counts."""
    r = psfs.shape[-1] // 2
    real = np.concatenate([np.asarray(bg_mask(jnp.asarray(grid(f[r:-r, r:-r])))) for f in fields])
    out = {"real_infocus": float(real.mean()), "grid_patches": int(real.size)}
    noise = jax.jit(add_camera_noise)
    rng = np.random.default_rng(0)
    for lv in (0, 5, 10):
        syn, raw = [], []
        for i, f in enumerate(fields):
            mu = scipy.signal.fftconvolve(f.astype(np.float64), psfs[lv].astype(np.float64), "valid")
            present = float(np.sum(psfs[lv].astype(np.float64) ** 2))
            noisy = np.round(np.asarray(noise(jax.random.key(100 * lv + i), jnp.asarray(mu, jnp.float32),
                                              present=present)))
            syn.append(np.asarray(bg_mask(jnp.asarray(grid(noisy)))))
            raw.append(np.asarray(bg_mask(jnp.asarray(grid(rng.poisson(mu).astype(np.float32))))))
        out[f"synthetic_level{lv}"] = float(np.concatenate(syn).mean())
        out[f"raw_poisson_level{lv}"] = float(np.concatenate(raw).mean())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one configuration, few repeats (< 1 min)")
    args = ap.parse_args(argv)
    fields, _ = load_infocus_fields(DATA)
    psfs = np.asarray(psf_stack(Optics(), size=49))
    fj, pj = jnp.asarray(fields), jnp.asarray(psfs)
    configs = [(128, 0.0)] if args.quick else [(64, 0.0), (128, 0.0), (256, 0.0), (128, 0.25)]
    repeats = 3 if args.quick else 7
    rows = []
    for batch_size, pf in configs:
        fn = jax.jit(functools.partial(synth_batch, batch_size=batch_size, phantom_fraction=pf))
        keys = iter(jax.random.split(jax.random.key(0), 100))
        t = time_call(lambda: block(fn(next(keys), fj, pj)), repeats=repeats, warmup=2)
        rows.append({"batch_size": batch_size, "phantom_fraction": pf, "compile_s": t["first_call_s"],
                     "median_s": t["median_s"], "iqr_s": t["iqr_s"],
                     "patches_per_s": batch_size / t["median_s"],
                     "best_patches_per_s": batch_size / t["min_s"]})
        print(f"synth_batch B={batch_size:4d} phantoms={pf:.2f}: {rows[-1]['patches_per_s']:8.0f} patches/s "
              f"median, {rows[-1]['best_patches_per_s']:.0f} best (compile {t['first_call_s']:.1f} s)",
              flush=True)
    rng = np.random.default_rng(0)
    nb = 32 if args.quick else 128
    t0 = time.perf_counter()
    numpy_batch(rng, fields, psfs, nb)
    base = nb / (time.perf_counter() - t0)
    print(f"NumPy/SciPy baseline: {base:.0f} patches/s", flush=True)
    main_row = next(r for r in rows if r["batch_size"] == 128 and r["phantom_fraction"] == 0.0)
    result = {"benchmark": "synth_batch", "quick": args.quick, **environment(), "configs": rows,
              "patches_per_s": main_row["patches_per_s"], "baseline_numpy_patches_per_s": base,
              "speedup_vs_numpy": main_row["patches_per_s"] / base}
    if not args.quick:
        result["bg_rate"] = bg_rates(fields, psfs)
        print("bg rate (central grid):", result["bg_rate"], flush=True)
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
