"""`restore` of images larger than memory, on dask: chunk by chunk, equal to the whole-image one.

Two passes over a 2-D (H, W) or (B, H, W) dask array (lazy OME-Zarr, a lazy TIFF, anything):

1. *Plan* (eager, `dask.compute`): every block classifies the patches whose corner lies in it
   (reading 84 px more on its bottom/right), and reports its pixel histogram, minimum and
   maximum. On the client, the small (rows, cols, 12) probability map is pooled and turned into
   the image's `RestorePlan` by the very function `restore` uses (neighbour pooling, depth
   surface, iteration policy), and the 0.5th-percentile background is taken exactly from the
   merged histograms (two histogram passes over float data; one over 8/16-bit integers).
2. *Deconvolve* (lazy, returned as a dask array): every output block gathers the patches that
   cover it, reads its pixels with `patch + context` px of neighbours (the image border padded
   exactly as `restore` pads it) and runs the streaming engine's sums over that region
   (`streaming.accumulate_patches`). Each block's patch list is padded to one length and its
   region to one shape, so a worker compiles once; the model, the PSFs and the plan are one
   graph node that each worker receives once.

The result equals `restore` of the whole image: the same level map, and the image to float32
rounding (the montage sums add the same terms in another order).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from lbdvd_jax.blocks import BlockSetup, block_slices, halo, max_slots, merge_chunks, restore_block
from lbdvd_jax.constants import NUM_LEVELS, PATCH_SIZE
from lbdvd_jax.defocus_map import ImageStats, defocus_map, judging_window, patch_probabilities, window_corners
from lbdvd_jax.errors import InputError
from lbdvd_jax.optics import Optics
from lbdvd_jax.patches import DEFAULT_CONTEXT, patch_grid
from lbdvd_jax.policy import DEFAULT_ITERATIONS, DEFAULT_PSF_DEPTH_UM, choose_policy
from lbdvd_jax.restore_plan import (
    background_from_order_stats,
    background_ranks,
    grid_shape,
    high_bits_histogram,
    low_bits_histogram,
    plan_restoration,
    rank_value,
    resolve_order_statistics,
)

__all__ = ["DaskRestoration", "block_slices", "restore_dask"]

MIN_BLOCK = 2048  #: blocks smaller than this (px per axis) are merged from whole chunks


class DaskRestoration(NamedTuple):
    """Result of `restore_dask` (the per-patch maps are small NumPy arrays, as in `Restoration`).

    Attributes:
        image: float32 dask array of the input's shape (lazy: compute or store it).
        levels, probs, z_um, certainty, psf_z_um: as `Restoration`, (rows, cols[, 12]) or (B, ...).
        origins: (n, 2) patch corners of the grid.
        depth_map: float32 dask array (H, W) / (B, H, W) of the fitted depth surface
            (defocus='continuous' with a surface), else None.
        background: the camera offset used per plane (counts).
    """

    image: object
    levels: np.ndarray
    probs: np.ndarray
    origins: np.ndarray
    z_um: np.ndarray
    certainty: np.ndarray
    psf_z_um: np.ndarray
    depth_map: object | None
    background: np.ndarray


# ----------------------------------------------------------------------------- pass 1


def _classify_block(slab, origins, model, batch_size, shape, offset):
    return patch_probabilities(slab, origins, model=model, batch_size=batch_size, image_shape=shape,
                               offset=offset)


def _block_summary(block, integer):
    """(histogram, min, max, count at max) of one block's pixels: of the values for 8/16-bit
    integers, else of the upper bits of their float32 patterns (`restore_plan.order_statistics`)."""
    a = np.asarray(block)
    top = float(a.max())
    hist = np.bincount(a.ravel().astype(np.int64), minlength=65536) if integer else high_bits_histogram(a)
    return hist, float(a.min()), top, int(np.count_nonzero(a == top))


def _background(plane, summaries, integer, scheduler):
    """Exact `restore_plan.image_background` of a dask plane from block histograms."""
    import dask

    hist = sum(s[0] for s in summaries)
    lo, hi, frac = background_ranks(int(hist.sum()))
    if integer:
        return background_from_order_stats(rank_value(hist, lo), rank_value(hist, hi), frac)
    highs = sorted({rank_value(hist, lo), rank_value(hist, hi)})
    blocks = plane.to_delayed().ravel()
    lows = dask.compute({h: [dask.delayed(low_bits_histogram)(b, h) for b in blocks] for h in highs},
                        scheduler=scheduler)[0]
    values = resolve_order_statistics(hist, {h: sum(v) for h, v in lows.items()}, (lo, hi))
    return background_from_order_stats(values[0], values[1], frac)


def _plan_plane(plane, *, model, origins, stride, pool, mode, num_iter, num_psfs, levels, defocus,
                surface_degree, psf_depth_um, background, scheduler, batch_size, policy=None, z_um=None):
    import dask

    h, w = plane.shape
    rows_s = np.unique(origins[:, 0])
    cols_s = np.unique(origins[:, 1])
    ncols = len(cols_s)
    integer = np.issubdtype(plane.dtype, np.integer) and plane.dtype.itemsize <= 2
    window = judging_window(model)
    tasks, index = [], []
    rchunks, cchunks = plane.chunks
    for r0, r1 in block_slices(h, rchunks):
        for c0, c1 in block_slices(w, cchunks):
            ri = np.flatnonzero((rows_s >= r0) & (rows_s < r1))
            ci = np.flatnonzero((cols_s >= c0) & (cols_s < c1))
            summary = dask.delayed(_block_summary)(plane[r0:r1, c0:c1], integer)
            probs = None
            if mode in ("dv", "soft") and len(ri) and len(ci):
                found = np.array([(rows_s[i], cols_s[j]) for i in ri for j in ci], np.int32)
                corners = window_corners(found, (h, w), window)  # the patches' judging windows
                sr0, sc0 = int(corners[:, 0].min()), int(corners[:, 1].min())
                sr1, sc1 = min(int(corners[:, 0].max()) + window, h), min(int(corners[:, 1].max()) + window, w)
                probs = dask.delayed(_classify_block)(plane[sr0:sr1, sc0:sc1], found, model, batch_size,
                                                      (h, w), (sr0, sc0))
                index.append((ri, ci))
            tasks.append((summary, probs))
    results = dask.compute(tasks, scheduler=scheduler)[0]
    summaries = [s for s, _ in results]
    top = max(s[2] for s in summaries)
    at_top = sum(s[3] for s in summaries if s[2] == top) / float(h * w)
    dmap = None
    if mode in ("dv", "soft"):
        probs = np.empty((len(origins), NUM_LEVELS + 1), np.float32)
        for (ri, ci), (_, p) in zip(index, [r for r in results if r[1] is not None]):
            probs[(ri[:, None] * ncols + ci[None, :]).ravel()] = p
        cy, cx = (h - PATCH_SIZE) // 2, (w - PATCH_SIZE) // 2
        centre = np.asarray(plane[cy:cy + PATCH_SIZE, cx:cx + PATCH_SIZE].compute(scheduler="sync"))
        stats = ImageStats(top, min(s[1] for s in summaries), at_top, centre)
        dmap = defocus_map(probs, origins, pool=pool, stats=stats)
    plan = plan_restoration((h, w), origins, mode=mode, num_iter=num_iter, num_psfs=num_psfs, dmap=dmap,
                            levels=levels, defocus=defocus, surface_degree=surface_degree,
                            psf_depth_um=psf_depth_um, policy=policy, z_um=z_um)
    if isinstance(background, str):
        background = _background(plane, summaries, integer, scheduler)
    return plan, float(background)


# ----------------------------------------------------------------------------- pass 2


def _depth_block(surface, shape, r0, r1, c0, c1):
    from lbdvd_jax.depth_surface import _design

    h, w = shape
    sy, sx = max(h - 1, 1) / 2.0, max(w - 1, 1) / 2.0
    degree = int(round((math.sqrt(8 * len(surface.coeffs) + 1) - 3) / 2))
    yy, xx = np.mgrid[r0:r1, c0:c1]
    return (_design((yy - sy) / sy, (xx - sx) / sx, degree) @ surface.coeffs).astype(np.float32)


def restore_dask(array, *, model=None, optics=Optics(), mode: str = "dv", levels=None, z_um=None,
                 stride: int = 42, weights: str = "triangular", context: int | None = None, num_iter=None,
                 chunk_size: int | None = None, psf_size: int = 49, pad_mode: str = "reflect",
                 background="auto", pool=True, psf_depth_um=None, defocus: str = "levels",
                 surface_degree="auto", scheduler=None, block: int = MIN_BLOCK,
                 batch_size: int = 256) -> DaskRestoration:
    """`restore` of a dask array, chunk by chunk (module docstring); equal to the in-memory result.

    Args:
        array: (H, W) or (B, H, W) dask array (or anything `dask.array.asarray` takes), any
            chunking: blocks are whole chunks merged up to >= `block` px per axis.
        model, optics, mode, levels, z_um, stride, weights, context, num_iter, chunk_size,
            psf_size, pad_mode, background, pool, psf_depth_um, defocus, surface_degree: as `restore`.
        scheduler: dask scheduler for the planning pass (None: dask's default, or the active
            `distributed.Client`); the returned arrays are lazy and run where they are computed.
        block: minimum block side in px (memory per task ~ 10 float32 copies of a block + halo).
        batch_size: patches per classifier call.

    Returns:
        `DaskRestoration`: the planning pass has run (level maps are NumPy), the image is lazy.
    """
    import dask
    import dask.array as da

    from lbdvd_jax.restore_checks import check_options

    arr = da.asarray(array)
    if arr.ndim not in (2, 3):
        raise InputError(f"array: expected (H, W) or (B, H, W), got shape {arr.shape}; select one "
                         "channel / time point first")
    if arr.dtype.kind not in "uif":
        raise InputError(f"array: dtype {arr.dtype} is not numeric; pass counts (uint8/uint16/float)")
    planes = arr if arr.ndim == 3 else arr[None]
    h, w = planes.shape[-2:]
    context = DEFAULT_CONTEXT if context is None else int(context)
    policy = choose_policy(mode, defocus, num_iter, psf_depth_um, z_um)
    if num_iter is None:
        num_iter = 15 if mode == "di" else DEFAULT_ITERATIONS
    if psf_depth_um is None and mode != "di":
        psf_depth_um = DEFAULT_PSF_DEPTH_UM
    psfs = check_options(model=model, mode=mode, levels=levels, weights=weights, stride=stride,
                          shape=(h, w), optics=optics, psf_depth_um=psf_depth_um, psf_size=psf_size,
                          num_iter=num_iter, defocus=defocus, z_um=z_um, pool=pool)
    origins = patch_grid((h, w), patch=PATCH_SIZE, stride=stride)
    rblocks = block_slices(h, merge_chunks(planes.chunks[1], block))
    cblocks = block_slices(w, merge_chunks(planes.chunks[2], block))
    planes = planes.rechunk((1, tuple(b - a for a, b in rblocks), tuple(b - a for a, b in cblocks)))
    per_image_levels = levels is not None and np.ndim(levels) == 3
    per_image_z = z_um is not None and np.ndim(z_um) == 3
    plans, backgrounds = [], []
    for b in range(planes.shape[0]):
        plan, bg = _plan_plane(planes[b], model=model, origins=origins, stride=stride, pool=pool, mode=mode,
                               num_iter=num_iter, num_psfs=psfs.shape[0],
                               levels=np.asarray(levels)[b] if per_image_levels else levels,
                               defocus=defocus, surface_degree=surface_degree, psf_depth_um=psf_depth_um,
                               background=background, scheduler=scheduler, batch_size=batch_size,
                               policy=policy, z_um=np.asarray(z_um)[b] if per_image_z else z_um)
        plans.append(plan)
        backgrounds.append(bg)
    bh = max(b - a for a, b in rblocks)
    bw = max(b - a for a, b in cblocks)
    setup = BlockSetup(model, np.asarray(psfs), optics, mode, int(stride), context, weights, chunk_size, pad_mode,
                   psf_size, (h, w), (bh, bw), max_slots(origins, (h, w), rblocks, cblocks))
    setup_node = dask.delayed(setup, pure=False, traverse=False)
    pad = halo(setup)
    out_planes, depth_planes = [], []
    for b, (plan, bg) in enumerate(zip(plans, backgrounds)):
        plan_node = dask.delayed(plan, pure=False, traverse=False)
        rows_out, depth_rows = [], []
        for r0, r1 in rblocks:
            row, drow = [], []
            for c0, c1 in cblocks:
                s0, s1 = max(0, r0 - pad), min(h, r1 + pad)
                t0, t1 = max(0, c0 - pad), min(w, c1 + pad)
                task = dask.delayed(restore_block, pure=True)(planes[b, s0:s1, t0:t1], setup_node, plan_node,
                                                               bg, origins, r0, r1, c0, c1, s0, t0)
                row.append(da.from_delayed(task, (r1 - r0, c1 - c0), np.float32))
                if plan.surface is not None:
                    dtask = dask.delayed(_depth_block, pure=True)(plan.surface, (h, w), r0, r1, c0, c1)
                    drow.append(da.from_delayed(dtask, (r1 - r0, c1 - c0), np.float32))
            rows_out.append(row)
            depth_rows.append(drow)
        out_planes.append(da.block(rows_out))
        depth_planes.append(da.block(depth_rows) if plans[b].surface is not None else None)
    rows, cols = grid_shape(origins)

    def stack(key, shape_tail=()):
        maps = [np.asarray(getattr(p, key)).reshape((rows, cols) + shape_tail) for p in plans]
        return maps[0] if arr.ndim == 2 else np.stack(maps)

    image = out_planes[0] if arr.ndim == 2 else da.stack(out_planes)
    depth = None
    if all(d is not None for d in depth_planes):
        depth = depth_planes[0] if arr.ndim == 2 else da.stack(depth_planes)
    return DaskRestoration(image, stack("labels"), stack("probs", (-1,)), origins, stack("z_um"),
                           stack("certainty"), stack("psf_z_um"), depth, np.asarray(backgrounds))
