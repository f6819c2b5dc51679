"""Benchmark: the 11-level Eq. 2 PSF stack (size 49) in JAX vs scipy.integrate.quad.

The baseline evaluates quad once per distinct grid radius (already 8x kinder than Yang et al.'s
per-pixel quad) in float64. Reports compile time apart, steady-state median and spread, the
accuracy of the JAX stack against the quad result (so a fast wrong answer cannot pass), and
`speedup_vs_quad`. Last stdout line: one JSON object.

    python benchmarks/bench_psf.py [--quick]
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import scipy.integrate  # noqa: E402
import scipy.special  # noqa: E402
from _common import emit, environment, time_call  # noqa: E402

from lbdvd_jax import DEFOCUS_LEVELS_UM, Optics, psf_stack  # noqa: E402


def quad_stack(size, levels, optics):
    """Normalised PSF stack by quad at every distinct radius (float64)."""
    k = 2 * np.pi / optics.wavelength_um
    half = size // 2
    i = np.arange(size) - half
    r2 = i[:, None] ** 2 + i[None, :] ** 2
    uniq, inverse = np.unique(r2, return_inverse=True)
    out = []
    for z in levels:
        b = 0.5 * k * z * (optics.na / optics.n) ** 2
        vals = []
        for q in uniq:
            a = k * optics.na / optics.n * optics.pixel_um * np.sqrt(q)
            re = scipy.integrate.quad(lambda p: scipy.special.j0(a * p) * np.cos(b * p * p) * p, 0, 1, limit=200)[0]
            im = scipy.integrate.quad(lambda p: scipy.special.j0(a * p) * np.sin(b * p * p) * p, 0, 1, limit=200)[0]
            vals.append(re * re + im * im)
        h = np.asarray(vals)[inverse].reshape(size, size)
        out.append(h / h.sum())
    return np.stack(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, one quad pass (< 1 min)")
    ap.add_argument("--size", type=int, default=49)
    args = ap.parse_args(argv)
    env = environment()
    optics = Optics()
    levels = DEFOCUS_LEVELS_UM
    repeats = 5 if args.quick else 20

    results = {"benchmark": "psf_stack", "size": args.size, "levels": len(levels), **env}
    for dtype in ("float32", "float64"):
        with jax.enable_x64(dtype == "float64"):
            fn = jax.jit(psf_stack, static_argnames=("size",))
            timing = time_call(lambda: jax.block_until_ready(fn(optics, size=args.size)), repeats=repeats)
            stack = np.asarray(fn(optics, size=args.size), np.float64)
        results[f"jax_{dtype}"] = timing
        results[f"_stack_{dtype}"] = stack

    t0 = time.perf_counter()
    ref = quad_stack(args.size, levels, optics)
    quad_s = time.perf_counter() - t0
    if not args.quick:  # second pass for a spread
        t0 = time.perf_counter()
        quad_stack(args.size, levels, optics)
        quad_s = min(quad_s, time.perf_counter() - t0)
    results["quad_s"] = quad_s
    for dtype in ("float32", "float64"):
        stack = results.pop(f"_stack_{dtype}")
        rel = [float(np.linalg.norm(stack[i] - ref[i]) / np.linalg.norm(ref[i])) for i in range(len(levels))]
        results[f"max_rel_l2_vs_quad_{dtype}"] = max(rel)
    results["speedup_vs_quad"] = quad_s / results["jax_float32"]["median_s"]
    results["speedup_vs_quad_float64"] = quad_s / results["jax_float64"]["median_s"]
    results["target_speedup"] = 300
    emit(results)


if __name__ == "__main__":
    main()
