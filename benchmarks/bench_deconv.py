"""Benchmark: patch-wise depth-variant RL on a real 696x520 image vs a SciPy/scikit-image loop.

The job (paper Section 2.3): every 84-px patch of the stride-42 grid (192 patches on
696x520, the last row/column flush with the border), ``context`` px of neighbours (zeros beyond
the image), 15 RL iterations, the 11 Eq. 2 PSF levels spread over the patches (level 0 passes
through, as in the paper), triangular montage.

Baselines, same run, same windows, PSFs, initial estimate (the observed window) and blending:
  * ``scipy_loop``: scikit-image's RL loop body (``scipy.signal.convolve(mode='same')``, i.e.
    fftconvolve at these sizes) with the paper's initial estimate, one patch at a time in
    float32; ``speedup_vs_skimage`` is its time over ours. The same loop in float64 is the
    oracle for ``max_rel_diff`` (max |ours - oracle| / max |oracle| over the montage).
  * ``skimage.restoration.richardson_lucy`` itself (initial estimate 0.5, so its values differ)
    over the same windows: timing only, ``speedup_vs_skimage_function``.

JAX runs in one jit; with ``--devices 2`` (default on CPU) the process starts with two XLA host
devices and the patch batch is split over them with ``shard_map`` (``shard=True``), because
XLA's CPU FFT keeps about one core busy, and RL runs in cache-sized batches of windows
(``streaming.default_rl_batch``). ``--sweep`` adds FFT sizes, shard on/off, skipping
level-0 patches or not, the streaming step (patches per step, split over the devices,
then RL batches of ``default_rl_batch``), and the context-cost table (patch-wise vs
whole-image RL).

    python benchmarks/bench_deconv.py [--quick] [--sweep] [--devices N] [--context C]

Last stdout line: one JSON object.
"""

import argparse
import os
import pathlib
import sys
import time

_ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_ap.add_argument("--quick", action="store_true", help="fewer repeats (< 1 min)")
_ap.add_argument("--sweep", action="store_true", help="FFT sizes, sharding, skipping, context")
_ap.add_argument("--devices", type=int, default=2, help="XLA host devices to split patches over")
_ap.add_argument("--context", type=int, default=None, help="px around patches (library default)")
_ap.add_argument("--fft-size", type=int, default=None, help="padded FFT size (default: auto)")
_ap.add_argument("--image", default=None, help="16-bit TIFF (default: BBBC006 a01 in focus)")

if __name__ == "__main__":
    _ARGS = _ap.parse_args()
    from lbdvd_jax.cli import use_host_cores  # before JAX starts its CPU client

    use_host_cores(cpu_count=_ARGS.devices)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import scipy.signal  # noqa: E402
import tifffile  # noqa: E402
from _common import emit, environment, time_call  # noqa: E402

from lbdvd_jax import (  # noqa: E402
    Optics,
    depth_invariant_deconvolve,
    depth_variant_deconvolve,
    patch_grid,
    psf_stack,
    richardson_lucy,
    seam_score,
    triangular_weights,
)
from lbdvd_jax.deconv import fast_fft_size  # noqa: E402
from lbdvd_jax.patches import DEFAULT_CONTEXT  # noqa: E402
from lbdvd_jax.streaming import default_rl_batch, default_stream_chunk  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = (ROOT.parent / "shared/data/real/bbbc006/infocus/"
                 "BBBC006_z_aligned__a01__s1__w1_10.tif")
PATCH, STRIDE, ITERS = 84, 42, 15


def load_image(path):
    path = pathlib.Path(path) if path else DEFAULT_IMAGE
    if not path.exists():
        path = ROOT / "lbdvd_jax/data/a01_infocus.tif"  # bundled copy of the same field
    return tifffile.imread(path).astype(np.float32), str(path)


def scipy_rl(window, psf, num_iter, eps=1e-12):
    """scikit-image's RL loop, initial estimate = the observed window, ratio 0 where conv<=eps."""
    est = window.copy()
    mirror = psf[::-1, ::-1]
    for _ in range(num_iter):
        conv = scipy.signal.convolve(est, psf, mode="same")
        ok = conv > eps
        est = est * scipy.signal.convolve(np.where(ok, window / np.where(ok, conv, 1), 0), mirror,
                                          mode="same")
    return est


def baseline(image, levels, psfs, context, *, rl):
    """The same job by loops: pad with zeros, deconvolve active windows, triangular montage."""
    origins = patch_grid(image.shape, patch=PATCH, stride=STRIDE)
    w = np.asarray(triangular_weights(patch=PATCH), image.dtype)
    padded = np.pad(image, context)
    num, den = np.zeros_like(image), np.zeros_like(image)
    s = PATCH + 2 * context
    for (r, c), lv in zip(origins, levels):
        win = padded[r:r + s, c:c + s]
        if lv not in (0, 11):
            win = rl(win, psfs[lv])
        num[r:r + PATCH, c:c + PATCH] += w * win[context:context + PATCH, context:context + PATCH]
        den[r:r + PATCH, c:c + PATCH] += w
    return num / den


def fft_flops(n_patches, fft_n):
    """~2.5 N log2 N real flops per real 2-D FFT of N = fft_n**2 points, 4 per RL iteration."""
    n = fft_n * fft_n
    return n_patches * ITERS * 4 * 2.5 * n * np.log2(n)


def timed(fn, repeats):
    return time_call(lambda: jax.block_until_ready(fn()), repeats=repeats, warmup=1)


def time_plain(fn, repeats):
    """NumPy baselines have nothing to compile: every call is a timed repeat."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    q = np.percentile(ts, [25, 75])
    return {"median_s": float(np.median(ts)), "min_s": min(ts), "max_s": max(ts),
            "iqr_s": float(q[1] - q[0]), "repeats": repeats}


def context_table(image, psfs, contexts, levels_to_test, repeats):
    """Patch-wise (one level everywhere) vs whole-image RL: accuracy and time per context."""
    rows = []
    for lv in levels_to_test:
        blurred = scipy.signal.fftconvolve(image.astype(np.float64), psfs[lv].astype(np.float64),
                                           mode="same").clip(0).astype(np.float32)
        whole = np.asarray(jax.jit(lambda x, h=psfs[lv]: richardson_lucy(x, h))(blurred))
        for ctx in contexts:
            f = jax.jit(lambda x, c=ctx, h=psfs[lv]: depth_invariant_deconvolve(x, h, context=c))
            t = timed(lambda: f(blurred), repeats)
            d = np.abs(np.asarray(f(blurred)) - whole)
            rows.append({"level": lv, "context": ctx, "window": PATCH + 2 * ctx,
                         "fft": fast_fft_size(PATCH + 2 * ctx + psfs.shape[-1] // 2),
                         "max_rel": float(d.max() / whole.max()),
                         "mean_rel": float(d.mean() / whole.mean()),
                         "median_s": round(t["median_s"], 3)})
            print(rows[-1], flush=True)
    return rows


def main(args):
    env = environment()
    image, path = load_image(args.image)
    psfs = np.asarray(psf_stack(Optics()), np.float32)
    context = DEFAULT_CONTEXT if args.context is None else args.context
    origins = patch_grid(image.shape, patch=PATCH, stride=STRIDE)
    levels = (np.arange(len(origins)) % psfs.shape[0]).astype(np.int32)  # 11 levels spread
    active = int(np.sum(levels != 0))
    fft_n = args.fft_size or fast_fft_size(PATCH + 2 * context + psfs.shape[-1] // 2)
    shard = jax.local_device_count() > 1
    repeats = 2 if args.quick else 5

    def ours_fn(fft, shard=shard, skip=True, chunk=None, rl_batch=None):
        kw = dict(context=context, fft_shape=(fft, fft), shard=shard, chunk_size=chunk,
                  rl_batch=rl_batch,
                  passthrough=(0, 11) if skip else (11,))  # no skip: level 0 deconvolved too
        return jax.jit(lambda x: depth_variant_deconvolve(x, levels, psfs, **kw))

    ours = ours_fn(fft_n)
    t0 = time.perf_counter()
    ours.lower(image).compile()  # compile time apart (AOT); the jit cache is not shared
    compile_s = time.perf_counter() - t0
    t_ours = timed(lambda: ours(image), repeats)
    out = np.asarray(ours(image))

    b_rep = 1 if args.quick else 3
    base32 = lambda: baseline(image, levels, psfs, context,  # noqa: E731
                              rl=lambda w, h: scipy_rl(w, h, ITERS))
    t_base = time_plain(base32, b_rep)
    from skimage import restoration

    sk = lambda: baseline(image, levels, psfs, context,  # noqa: E731
                          rl=lambda w, h: restoration.richardson_lucy(w, h, ITERS, clip=False))
    t_sk = time_plain(sk, b_rep)
    oracle = baseline(image.astype(np.float64), levels, psfs.astype(np.float64), context,
                      rl=lambda w, h: scipy_rl(w, h, ITERS))
    max_rel = float(np.max(np.abs(out - oracle)) / np.max(np.abs(oracle)))

    # seams (Fig. 9): the same levels pattern on the rectangular (stride 84) grid, once
    rect_grid = patch_grid(image.shape, patch=PATCH, stride=PATCH)
    rect_levels = (np.arange(len(rect_grid)) % psfs.shape[0]).astype(np.int32)
    rect = jax.jit(lambda x: depth_variant_deconvolve(x, rect_levels, psfs, stride=PATCH,
                                                      weights="rectangular", context=context))
    seams = {"triangular": seam_score(out, origins),
             "rectangular": seam_score(np.asarray(rect(image)), rect_grid),
             "observed_image": seam_score(image, origins)}

    flops = fft_flops(active, fft_n)
    win = PATCH + 2 * context
    res = {
        "benchmark": "depth_variant_deconvolve", "image": pathlib.Path(path).name,
        "shape": list(image.shape), "patches": len(origins), "active_patches": active,
        "context": context, "window": win, "fft_size": fft_n, "iterations": ITERS,
        "sharded_devices": jax.local_device_count() if shard else 1,
        "rl_batch": default_rl_batch(), "stream_step": default_stream_chunk(),
        "ours": t_ours, "scipy_loop": t_base, "skimage_function": t_sk,
        "speedup_vs_skimage": t_base["median_s"] / t_ours["median_s"],
        "speedup_vs_skimage_function": t_sk["median_s"] / t_ours["median_s"],
        "max_rel_diff": max_rel, "seam_score": seams,
        "compile_s": compile_s,
        "fft_gflops": flops / t_ours["median_s"] / 1e9,
        "gpx_iter_per_s": active * win * win * ITERS / t_ours["median_s"] / 1e9,
        **env,
    }
    print(f"ours {t_ours['median_s']:.3f}s  scipy loop {t_base['median_s']:.3f}s  skimage "
          f"{t_sk['median_s']:.3f}s  speedup {res['speedup_vs_skimage']:.2f}x  max_rel_diff "
          f"{max_rel:.2e}  seams {seams}  load {os.getloadavg()[0]:.1f}", flush=True)

    if args.sweep:
        sweep = []
        configs = ([(n, s, True, None, None) for n in sorted({fft_n, 162, 168, 180, 192})
                    if n >= fft_n for s in ({False, shard})] + [(fft_n, shard, False, None, None)]
                   + [(fft_n, shard, True, c, None) for c in (2, 4, 16, 64, 256)]
                   # one step holding every patch: the RL batch alone decides cache use
                   + [(fft_n, shard, True, 256, b) for b in (1, 4, 8, 16, 32, 256)])
        for n, s, skip, chunk, rl_batch in configs:
            f = ours_fn(n, shard=s, skip=skip, chunk=chunk, rl_batch=rl_batch)
            t = timed(lambda: f(image), 3)
            pts = active if skip else len(origins)
            sweep.append({"fft": n, "shard": s, "skip_level0": skip,
                          "stream_step": chunk or default_stream_chunk(),
                          "rl_batch": rl_batch or default_rl_batch(),
                          "median_s": round(t["median_s"], 3), "iqr_s": round(t["iqr_s"], 3),
                          "fft_gflops": round(fft_flops(pts, n) / t["median_s"] / 1e9, 2),
                          "load": round(os.getloadavg()[0], 2)})
            print(sweep[-1], flush=True)
        res["sweep"] = sweep
        res["context_table"] = context_table(image, psfs, (0, 13, 24, 32, 48), (5, 10), 2)
    emit(res)


if __name__ == "__main__":
    main(_ARGS)
