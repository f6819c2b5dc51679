"""Does object size make neighbouring defocus levels look alike? A physics check, no estimator.

A nucleus of diameter D blurred by a defocus disc of diameter d looks much like a nucleus of
another size blurred by another disc: convolution commutes, and the fields' nuclei differ in size
(BBBC006: median diameters 29-38 px over the seven fields). If object size alone made level k
look like level k +- 1, no estimator could read isolated patches of a field never seen better
than a floor set by that confusion. This script measures it on noise-free objects:

- each field's median nucleus diameter (Otsu threshold on log counts, connected components of
  >= 30 px): the spread S = max / min is the size uncertainty of a field never seen;
- for noise-free nuclei phantoms (`phantoms.phantoms(kind='nuclei')`, textured ellipses of
  6-16 px semi-axis), every 84-px patch that the paper's bg rule calls foreground at level k:
  the smallest distance, in units of the calibrated camera noise (Poisson-Gaussian at the
  patch's own counts), between it and the same objects magnified by s in [1/S, S] (cubic
  interpolation about the patch centre) at level k - 1 or k + 1, with brightness and offset
  fitted (the estimator may not use either). d < 2 means the two are confused at least 16 % of
  the time by any classifier (the pairwise Bayes error Phi(-d/2) of two Gaussians d noise units
  apart); the floor is only the object-size part of the confusion, a lower bound.

    python examples/size_ambiguity.py -o benchmarks/results/size_ambiguity.json

Prints one JSON summary as its last line.
"""

import argparse
import math
import os
import sys

import jax
import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import add_model_and_fields, centred_kernel, write_result  # noqa: E402

from lbdvd_jax.camera import OFFSET, bg_mask, camera_variance  # noqa: E402
from lbdvd_jax.constants import NUM_LEVELS, PATCH_SIZE  # noqa: E402
from lbdvd_jax.fields import load_infocus_fields  # noqa: E402
from lbdvd_jax.optics import Optics  # noqa: E402
from lbdvd_jax.phantoms import phantoms  # noqa: E402
from lbdvd_jax.psf import psf_stack  # noqa: E402

WINDOW = 256  #: phantom window (px): the 84-px patch, the PSF's reach and room to shrink by 1/S
PSF_SIZE = 99  #: PSF support (px): holds the 20 µm PSF's rings
MIN_AREA = 30  #: smallest connected component (px) counted as a nucleus


def otsu_threshold(values, bins=256):
    """Otsu's threshold: the cut between histogram bins that maximises the between-class variance."""
    hist, edges = np.histogram(np.asarray(values, np.float64).ravel(), bins)
    centre = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * centre)
    w1 = w0[-1] - w0
    between = (m0[-1] * w0 / w0[-1] - m0) ** 2 / np.maximum(w0 * w1, 1)
    return float(centre[np.argmax(between)])


def nucleus_diameter(field, offset=OFFSET):
    """Median equivalent diameter (px) of the field's nuclei: Otsu on log(counts - offset + 10),
    components of >= MIN_AREA px; (diameter, count)."""
    logc = np.log(np.maximum(np.asarray(field, np.float64) - offset, 0.0) + 10.0)
    labels, _ = ndimage.label(logc > otsu_threshold(logc))
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas >= MIN_AREA]
    if len(areas) == 0:
        return float("nan"), 0
    return float(np.sqrt(4.0 * np.median(areas) / np.pi)), int(len(areas))


def magnify(image, s):
    """`image` magnified s x about its centre (cubic spline, edges held)."""
    c = (np.asarray(image.shape, np.float64) - 1.0) / 2.0
    return ndimage.affine_transform(image, np.eye(2) / s, offset=c - c / s, order=3, mode="nearest")


def level_otfs(size, optics=Optics()):
    """(11, size, size // 2 + 1) rfft2 of the unit-sum Eq. 2 PSFs at levels 0..10, centred at 0."""
    p = np.asarray(psf_stack(optics, size=PSF_SIZE), np.float64)
    return np.array([np.fft.rfft2(centred_kernel(q, size)) for q in p])


def blurred_patches(signal, otfs):
    """(11, 84, 84) central patches of `signal` (counts above the offset) blurred at every level
    (circular convolution; the window leaves the patch clear of the wrap)."""
    n = signal.shape[0]
    full = np.fft.irfft2(np.fft.rfft2(signal)[None] * otfs, s=(n, n))
    a = (n - PATCH_SIZE) // 2
    return full[:, a:a + PATCH_SIZE, a:a + PATCH_SIZE]


def fitted_distance(target, candidates, variance):
    """Per candidate m: min over a, b of sum((target - a m - b)^2 / variance), the squared
    distance in noise units once brightness and offset are fitted (weighted least squares)."""
    w = 1.0 / variance
    sw, sy = w.sum(), (w * target).sum()
    sm = (w * candidates).sum((-2, -1))
    smm = (w * candidates * candidates).sum((-2, -1))
    sym = (w * target * candidates).sum((-2, -1))
    det = sw * smm - sm ** 2
    a = np.where(det > 0, (sw * sym - sm * sy) / np.where(det > 0, det, 1.0), 0.0)
    b = (sy - a * sm) / sw
    resid = target - a[..., None, None] * candidates - b[..., None, None]
    return (w * resid ** 2).sum((-2, -1))


def pairwise_error(d):
    """Bayes error of telling two equally likely Gaussians d noise units apart: Phi(-d / 2)."""
    return 0.5 * math.erfc(d / (2.0 * math.sqrt(2.0)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_fields(ap, model=False)
    ap.add_argument("--phantoms", type=int, default=120, help="noise-free nuclei windows (default 120)")
    ap.add_argument("--scales", type=int, default=21, help="magnifications tried in [1/S, S] (default 21)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    if args.phantoms < 1:
        ap.error(f"--phantoms: got {args.phantoms}, expected >= 1")
    if args.scales < 2:
        ap.error(f"--scales: got {args.scales}, expected >= 2")
    fields, names = load_infocus_fields(args.fields)
    diam = {}
    for field, name in zip(fields, names):
        d, n = nucleus_diameter(field)
        diam[name.split("__")[1] if "__" in name else name] = {"median_diameter_px": d, "nuclei": n}
    sizes = [v["median_diameter_px"] for v in diam.values() if np.isfinite(v["median_diameter_px"])]
    if len(sizes) < 2:
        ap.error(f"--fields: fewer than two fields in {args.fields} hold nuclei; give the BBBC006 in-focus folder")
    spread = max(sizes) / min(sizes)
    scales = np.exp(np.linspace(-np.log(spread), np.log(spread), args.scales))
    otfs = level_otfs(WINDOW)
    objects = np.asarray(phantoms(jax.random.key(args.seed), args.phantoms, size=WINDOW, kind="nuclei"),
                         np.float64) - OFFSET
    dist = [[] for _ in range(NUM_LEVELS)]
    for o in objects:
        base = blurred_patches(o, otfs)
        alts = np.stack([blurred_patches(magnify(o, s), otfs) for s in scales])  # (S, 11, 84, 84)
        for k in range(NUM_LEVELS):
            target = base[k]
            if bool(bg_mask(target + OFFSET)):  # the paper's bg rule
                continue
            variance = camera_variance(target + OFFSET)
            d2 = min(fitted_distance(target, alts[:, j], variance).min()
                     for j in (k - 1, k + 1) if 0 <= j < NUM_LEVELS)
            dist[k].append(math.sqrt(max(d2, 0.0)))
    per_level = []
    for k, d in enumerate(dist):
        d = np.asarray(d)
        per_level.append({"level": k, "n": int(len(d)),
                          "median_d": float(np.median(d)) if len(d) else None,
                          "share_d_below_2": float(np.mean(d < 2.0)) if len(d) else None,
                          "error_floor": float(np.mean([pairwise_error(v) for v in d])) if len(d) else None})
    floors = [r["error_floor"] for r in per_level if r["error_floor"] is not None]
    result = {"fields": diam, "size_spread": spread, "scales": scales.tolist(),
              "phantoms": args.phantoms, "seed": args.seed, "levels": per_level,
              "mean_error_floor": float(np.mean(floors)) if floors else None}
    summary = {"size_spread": round(spread, 3),
               "median_diameter_px": {k: round(v["median_diameter_px"], 1) for k, v in diam.items()},
               "median_d": [None if r["median_d"] is None else round(r["median_d"], 1) for r in per_level],
               "share_d_below_2": [r["share_d_below_2"] for r in per_level],
               "error_floor": [None if r["error_floor"] is None else round(r["error_floor"], 3) for r in per_level]}
    write_result(result, args.output, summary=summary)


if __name__ == "__main__":
    main()
