"""What each patch of a restore gets: its PSF, its RL iteration count, or pass-through.

`restore` and the chunked `dask_restore.restore_dask` share this step, so that a chunked
restore equals the whole-image one: the per-patch defocus (a `DefocusMap` over the whole field,
or oracle labels) becomes a `RestorePlan` of small per-patch arrays, and `patch_kernels` builds
the kernels of any subset of patches from it on demand (a chunk builds only its own; at
16384² all kernels at once would take 1.4 GB).

The image-wide camera offset (`image_background`) is the 0.5th percentile of the pixels; the
chunked path computes the same order statistics exactly from histograms (`background_from_order_stats`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from lbdvd_jax.constants import BG_LABEL, LEVEL_STEP_UM, NUM_CLASSES, NUM_LEVELS
from lbdvd_jax.constants import PATCH_SIZE as PATCH
from lbdvd_jax.errors import InputError
from lbdvd_jax.policy import DEFAULT_PSF_DEPTH_UM, continuous_depths, policy_psf_depth
from lbdvd_jax.psf import psf_stack
from lbdvd_jax.streaming import iteration_counts

__all__ = ["BACKGROUND_PERCENTILE", "RestorePlan", "background_from_order_stats", "background_ranks",
           "grid_shape", "high_bits_histogram", "image_background", "low_bits_histogram", "oracle_labels",
           "order_statistics", "patch_kernels", "plan_restoration", "rank_value", "resolve_order_statistics"]

BACKGROUND_PERCENTILE = 0.5  #: background='auto': this percentile of the image's pixels


class RestorePlan(NamedTuple):
    """Per-patch decisions of one image's restore (n patches of its `patch_grid`, row-major).

    Attributes:
        labels: (n,) int32 level 0..10 or 11 = bg (all 0 for 'di').
        probs: (n, 12) float32 probabilities (one-hot for 'di' and 'oracle').
        active: (n,) bool: deconvolved (False: the observed pixels pass through).
        iters: (n,) int32 RL iterations per patch, or None (every patch `max_iter`).
        max_iter: static loop length.
        kernel_z_um: (n,) float64 depth of each patch's own PSF ('continuous'), else None.
        z_um, certainty, psf_z_um: (n,) float32 as in `Restoration` (NaN for bg).
        surface: the fitted `DepthSurface` ('continuous' with a surface), else None.
    """

    labels: np.ndarray
    probs: np.ndarray
    active: np.ndarray
    iters: np.ndarray | None
    max_iter: int
    kernel_z_um: np.ndarray | None
    z_um: np.ndarray
    certainty: np.ndarray
    psf_z_um: np.ndarray
    surface: object | None


def grid_shape(origins):
    """(rows, cols) of a row-major `patch_grid`."""
    rows = len(np.unique(origins[:, 0]))
    return rows, len(origins) // rows


def oracle_labels(levels, shape, origins):
    """Per-patch labels from a (rows, cols)/(n,) patch map or an (H, W) per-pixel map."""
    levels = np.asarray(levels)
    rows, cols = grid_shape(origins)
    if levels.shape == tuple(shape) and levels.shape != (rows, cols):
        cy = np.minimum(origins[:, 0] + PATCH // 2, shape[0] - 1)
        cx = np.minimum(origins[:, 1] + PATCH // 2, shape[1] - 1)
        levels = levels[cy, cx]
    levels = levels.reshape(-1)
    if levels.shape != (len(origins),):
        raise InputError(f"levels: got shape {np.shape(levels)}, expected the patch grid "
                         f"({rows}, {cols}), ({len(origins)},) or the image shape {tuple(shape)}; "
                         "pass one label per patch of patch_grid(image.shape, stride=stride)")
    if not np.all(np.isin(levels, np.arange(NUM_CLASSES))):
        raise InputError(f"levels: labels must be integers 0..10 or 11 (bg), got values "
                         f"{sorted(set(np.unique(levels).tolist()) - set(range(12)))[:5]}")
    return levels.astype(np.int32)


def oracle_depths(z_um, shape, origins):
    """Per-patch depths (µm) from a (rows, cols)/(n,) patch map or an (H, W) per-pixel map
    (sampled at the patch centres). NaN marks bg (passed through, as `Restoration.z_um` marks
    it); depths beyond 20 µm are clipped to 20 with a warning (the levels' range: 20 µm is "20 or
    more"); negative or infinite depths are refused."""
    z = np.asarray(z_um, np.float64)
    rows, cols = grid_shape(origins)
    if z.shape == tuple(shape) and z.shape != (rows, cols):
        cy = np.minimum(origins[:, 0] + PATCH // 2, shape[0] - 1)
        cx = np.minimum(origins[:, 1] + PATCH // 2, shape[1] - 1)
        z = z[cy, cx]
    z = z.reshape(-1) if z.size == len(origins) else z
    if z.shape != (len(origins),):
        raise InputError(f"z_um: got shape {np.shape(z_um)}, expected the patch grid ({rows}, {cols}), "
                         f"({len(origins)},) or the image shape {tuple(shape)}: one depth per patch of "
                         "patch_grid(image.shape, stride=stride), NaN for bg")
    if np.isinf(z).any() or (z < 0).any():
        bad = z[np.isinf(z) | (z < 0)]
        raise InputError(f"z_um: depths must be finite and >= 0 µm (a defocus distance; NaN marks bg), "
                         f"got {bad[:3].tolist()}; pass |z|")
    top = LEVEL_STEP_UM * (NUM_LEVELS - 1)
    if (z > top).any():
        import warnings

        warnings.warn(f"z_um: {int((z > top).sum())} patch depth(s) beyond {top:g} µm were clipped to "
                      f"{top:g} µm, the deepest PSF of the levels", UserWarning, stacklevel=4)
    return np.minimum(z, top)


def plan_restoration(shape, origins, *, mode, num_iter, num_psfs, dmap=None, levels=None,
                     defocus="levels", surface_degree="auto", psf_depth_um=None, policy=None,
                     z_um=None) -> RestorePlan:
    """The `RestorePlan` of one image.

    Args:
        shape: (H, W) of the image; origins: its `patch_grid`.
        mode: 'dv', 'soft', 'oracle' or 'di' (as `restore`).
        num_iter: int or one count per level (validated by `iteration_counts`).
        num_psfs: number of level PSFs (11).
        dmap: 'dv'/'soft': the image's `DefocusMap`.
        levels: 'oracle': per-patch labels or a per-pixel map (`oracle_labels`).
        z_um: 'oracle' instead of `levels`: per-patch depths in µm (`oracle_depths`), each
            patch deconvolved as a continuous depth (through `policy`, as 'continuous').
        defocus, surface_degree, psf_depth_um: as `restore`.
        policy: a `policy.PolicyTable` for 'continuous' (PSF depth and iterations as functions of
            each patch's depth); None: `psf_depth_um` interpolated and the `num_iter` table at the
            nearest level.
    """
    n = len(origins)
    kernel_z = surface = None
    if mode in ("dv", "soft"):
        labels, probs = np.asarray(dmap.labels, np.int32), np.asarray(dmap.probs, np.float32)
        if defocus == "continuous":
            z_cont, surface = continuous_depths(dmap, origins, shape, surface_degree)
            kernel_z = (policy_psf_depth(z_cont, psf_depth_um) if policy is None
                        else policy.psf_depth(z_cont))
    elif mode == "oracle" and z_um is not None:
        z_cont = oracle_depths(z_um, shape, origins)
        labels = np.where(np.isnan(z_cont), BG_LABEL,
                          np.clip(np.rint(np.nan_to_num(z_cont) / LEVEL_STEP_UM), 0, NUM_LEVELS - 1)).astype(np.int32)
        probs = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
        kernel_z = (policy_psf_depth(z_cont, psf_depth_um) if policy is None
                    else policy.psf_depth(z_cont))
    elif mode == "oracle":
        labels = oracle_labels(levels, shape, origins)
        probs = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    else:  # 'di': the in-focus PSF everywhere, no classifier
        labels = np.zeros((n,), np.int32)
        probs = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    if mode == "soft" or (kernel_z is not None and policy is not None):  # the policy passes patches
        active = labels != BG_LABEL
    elif mode == "di":
        active = np.ones((n,), bool)
    else:
        active = (labels != BG_LABEL) & (labels != 0)
    if kernel_z is not None and policy is not None:  # the fitted policy's counts, 0 = pass through
        iters = np.where(active, policy.iteration_counts(z_cont), 0).astype(np.int32)
        max_iter = max(int(np.rint(np.max(policy.iterations))), 1)  # static: one compile per policy
        active = active & (iters > 0)
    elif np.ndim(num_iter) == 0:  # one count for all: no per-patch stop
        max_iter, iters = int(num_iter), None
    elif kernel_z is not None:  # the table at each patch's nearest level
        nearest = np.clip(np.rint(np.nan_to_num(z_cont) / LEVEL_STEP_UM), 0, NUM_LEVELS - 1)
        max_iter, iters = iteration_counts(num_iter, jnp.asarray(nearest, jnp.int32), NUM_LEVELS)
    else:  # per-level counts, indexed by the level whose PSF each patch gets
        max_iter, iters = iteration_counts(num_iter, np.where(labels == BG_LABEL, 0, labels), num_psfs)
    if dmap is not None:  # the estimator's expected z and certainty, already in the map
        z, cert = dmap.z_um, dmap.certainty
    else:  # one-hot labels ('oracle', 'di')
        from lbdvd_jax.estimator import defocus_from_probs

        z, _, cert = defocus_from_probs(probs)
    bg = labels == BG_LABEL
    z = np.where(bg, np.nan, z_cont if kernel_z is not None else z).astype(np.float32)
    if kernel_z is not None:
        psf_z = np.where(bg, np.nan, kernel_z)
    elif mode == "di":
        psf_z = np.zeros(n)
    else:
        depth = np.asarray(DEFAULT_PSF_DEPTH_UM if psf_depth_um is None else psf_depth_um)
        psf_z = np.where(bg, np.nan, depth[np.clip(labels, 0, NUM_LEVELS - 1)])
    return RestorePlan(labels, probs, np.asarray(active, bool),
                       None if iters is None else np.asarray(iters, np.int32), int(max_iter),
                       kernel_z, z, np.asarray(cert, np.float32), np.asarray(psf_z, np.float32),
                       surface)


def patch_kernels(plan: RestorePlan, idx, *, mode, psfs, optics, psf_size, dtype):
    """(len(idx), k, k) kernels of the patches `idx` of `plan` (the level table `psfs`)."""
    idx = np.asarray(idx)
    psfs = jnp.asarray(psfs, dtype)
    if mode == "soft":
        p = jnp.asarray(plan.probs[idx, :psfs.shape[0]], dtype)
        p = p / jnp.maximum(jnp.sum(p, axis=1, keepdims=True), jnp.finfo(dtype).tiny)
        return jnp.einsum("nl,lij->nij", p, psfs)
    if mode == "di":
        return jnp.broadcast_to(psfs[0], (len(idx),) + psfs.shape[1:])
    if plan.kernel_z_um is not None:  # the PSF of each patch's own depth, through the policy
        return psf_stack(optics, jnp.asarray(plan.kernel_z_um[idx], dtype=float), size=psf_size).astype(dtype)
    return psfs[jnp.clip(jnp.asarray(plan.labels[idx]), 0, psfs.shape[0] - 1)]


def background_ranks(count):
    """The two order statistics (0-based ranks) and the weight NumPy's linear percentile
    `BACKGROUND_PERCENTILE` interpolates between, for `count` pixels."""
    pos = BACKGROUND_PERCENTILE / 100.0 * (count - 1)
    lo = int(np.floor(pos))
    return lo, min(lo + 1, count - 1), pos - lo


def background_from_order_stats(lo_value, hi_value, frac):
    """NumPy's `percentile` (linear) from its two order statistics (float32 pixels)."""
    return float(np.percentile(np.asarray([lo_value, hi_value], np.float32), 100.0 * frac))


def _bits(chunk):
    # non-negative float32 values sort as their bit patterns (abs: -0.0 sorts as 0.0)
    return np.abs(np.asarray(chunk, np.float32)).ravel().view(np.uint32)


def high_bits_histogram(chunk):
    """65536-bin histogram of the upper 16 bits of a chunk's float32 bit patterns."""
    return np.bincount(_bits(chunk) >> 16, minlength=65536)


def low_bits_histogram(chunk, high):
    """65536-bin histogram of the lower 16 bits of the chunk's values whose upper bits are `high`."""
    bits = _bits(chunk)
    return np.bincount(bits[(bits >> 16) == high] & 0xFFFF, minlength=65536)


def rank_value(hist, rank):
    """The bin holding the 0-based `rank` of a histogram."""
    return int(np.searchsorted(np.cumsum(hist), rank, side="right"))


def resolve_order_statistics(high, lows, ranks):
    """Exact float32 order statistics from the merged upper-bit histogram `high` and, per upper
    value, the merged lower-bit histograms `lows` ({high value: histogram})."""
    out = []
    for r in ranks:
        t = rank_value(high, r)
        below = int(np.sum(high[:t]))
        out.append(np.uint32((t << 16) | rank_value(lows[t], r - below)).view(np.float32))
    return out


def order_statistics(chunks, ranks):
    """Exact order statistics (0-based `ranks`) of non-negative float32 pixels given in chunks
    (a callable returning a fresh iterator of arrays), by two 65536-bin histogram passes over the
    float bit patterns: memory is one chunk, not a sorted copy (`dask_restore` runs the same
    passes block by block on a cluster)."""
    high = sum(high_bits_histogram(c) for c in chunks())
    tops = {rank_value(high, r) for r in ranks}
    lows = {t: sum(low_bits_histogram(c, t) for c in chunks()) for t in tops}
    return resolve_order_statistics(high, lows, ranks)


def image_background(image):
    """background='auto': the `BACKGROUND_PERCENTILE` of the pixels (on the host: NumPy's selection
    is far cheaper than XLA's CPU sort; above 4 Mpx exact order statistics from row-chunk
    histograms, so that no sorted copy of a large image is made)."""
    a = np.asarray(image)
    if a.size <= 1 << 22:
        return float(np.percentile(a, BACKGROUND_PERCENTILE))
    lo, hi, frac = background_ranks(a.size)
    rows = max(1, (1 << 20) // a.shape[-1])
    flat = a.reshape(-1, a.shape[-1])
    values = order_statistics(lambda: (flat[i:i + rows] for i in range(0, flat.shape[0], rows)), (lo, hi))
    return background_from_order_stats(values[0], values[1], frac)
