"""End-to-end LB-DVD (paper Fig. 2(c)-(d)): DelpNet levels per patch -> depth-variant RL -> montage.

`restore(image, model=...)` classifies every 84x84 patch of the `patch_grid` (raw counts, the
model normalises), deconvolves each patch with the Eq. 2 PSF of its level (bg and level 0 pass
through unchanged, as in the paper) and stitches the patches with triangular weights.

Memory stays bounded on large images: patches are classified in batches and deconvolved by
`streaming.deconvolve_streaming`, a loop over steps of `chunk_size` patches that gathers,
deconvolves and scatter-adds each step, so only the image, two image-sized sums and one step
of windows live at once. Patches to deconvolve are sorted first and the loop stops after the
last of them, so bg-rich images cost less while the deconvolution compiles once per image
shape and configuration (the level map, the number of active patches and the mode's kernels
are traced values).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.blocks import restore_blockwise
from lbdvd_jax.constants import MODES
from lbdvd_jax.constants import PATCH_SIZE as PATCH
from lbdvd_jax.defocus_map import DefocusMap, predict_defocus
from lbdvd_jax.errors import InputError
from lbdvd_jax.optics import Optics
from lbdvd_jax.patches import DEFAULT_CONTEXT, patch_grid
from lbdvd_jax.policy import DEFAULT_ITERATIONS, DEFAULT_PSF_DEPTH_UM, choose_policy
from lbdvd_jax.restore_checks import check_image, check_options, is_trained_model
from lbdvd_jax.restore_plan import grid_shape, image_background, patch_kernels, plan_restoration
from lbdvd_jax.streaming import deconvolve_streaming

BLOCKWISE_PIXELS = 3072 * 3072  #: larger images are deconvolved block by block (bounded memory)
BLOCK = 2048  #: block side (px) of the blockwise path

__all__ = ["DEFAULT_ITERATIONS", "DEFAULT_PSF_DEPTH_UM", "MODES", "Restoration", "level_map_pixels", "predict_levels",
           "restore", "restore_timed"]



class Restoration(NamedTuple):
    """Result of `restore`.

    Attributes:
      image: restored image(s), shape and float dtype of the input, (H, W) or (B, H, W).
      levels: int32 label per patch, (rows, cols) or (B, rows, cols): 0..10 = defocus level
        (z = 2 µm x level), 11 = bg. For 'di' all non-bg patches are 0 (the in-focus PSF).
      probs: (..., rows, cols, 12) DelpNet probabilities (one-hot for 'di' and 'oracle').
      origins: (n, 2) int patch corners of the grid, row-major (n = rows * cols).
      z_um: (..., rows, cols) estimated defocus in µm (NaN for bg): the expected z of the
        probabilities, or with defocus='continuous' the fitted depth surface at the patch.
      certainty: (..., rows, cols) 1 - H(p_levels) / log 11 of each patch's call.
      psf_z_um: (..., rows, cols) depth of the PSF actually used (the policy's choice; NaN bg).
      depth_map: (..., H, W) fitted depth surface in µm (defocus='continuous' with a surface),
        else None.
    """

    image: jax.Array
    levels: jax.Array
    probs: jax.Array
    origins: np.ndarray
    z_um: np.ndarray | None = None
    certainty: np.ndarray | None = None
    psf_z_um: np.ndarray | None = None
    depth_map: np.ndarray | None = None


def predict_levels(image, *, model, stride: int = 42, pool=True,
                   batch_size: int = 256) -> DefocusMap:
    """The defocus level, expected z and certainty of every patch of the grid.

    Args:
      image: (H, W) image (H, W >= 84); any gain and offset for the shipped estimator.
      model: `load_delpnet()` (the shipped estimator), a paper `DelpNet`, or any callable
        (n, 84, 84) raw patches -> (n, 12) probabilities.
      stride: static grid step in px (keyword-only; 42 triangular, 84 rectangular).
      pool: evidence pooled between patches (`defocus_map`): True / 'surface' (default) 3x3
        neighbours then a depth-surface prior, 'neighbours' the 3x3 pooling only, False each
        patch's own call.
      batch_size: patches per classifier call (bounds memory).

    Returns:
      `DefocusMap(labels (n,), probs (n, 12), origins (n, 2), z_um, spread_um, certainty)`.
    """
    return predict_defocus(np.asarray(image, np.float32), model=model, stride=stride, pool=pool,
                           batch_size=batch_size)


# Progress callbacks of the restore() calls in flight, by token: the compiled core passes its
# call's token back to the host, so concurrent calls (threads) each reach their own callback.
_CALLBACKS: dict = {}
_CALLBACKS_LOCK = threading.Lock()
_TOKENS = itertools.count(1)


def _report_progress(token, done, total):
    with _CALLBACKS_LOCK:
        callback = _CALLBACKS.get(int(token))
    if callback is not None:
        callback(int(done), int(total))


@functools.partial(jax.jit, static_argnames=("stride", "context", "weights", "num_iter",
                                             "chunk_size", "pad_mode", "shard", "report"))
def _deconvolve_core(image, kernels, active, background, iters=None, token=0, *, stride, context,
                     weights, num_iter, chunk_size, pad_mode, shard=False, report=False):
    """`deconvolve_streaming` compiled once per image shape and configuration."""
    return deconvolve_streaming(image, kernels, active, iters, background=background, patch=PATCH,
                                stride=stride, context=context, weights=weights,
                                num_iter=num_iter, chunk_size=chunk_size, pad_mode=pad_mode,
                                shard=shard, report=_report_progress if report else None,
                                report_args=(jnp.asarray(token, jnp.int32),))


def _restore_one(image, *, model, psfs, mode, levels, stride, weights, context, num_iter,
                 chunk_size, pad_mode, shard, background, progress, timings, pool,
                 defocus="levels", surface_degree="auto", optics=None, psf_depth_um=None, psf_size=49,
                 block=None, policy=None, z_um=None):
    t0 = time.perf_counter()
    origins = patch_grid(image.shape, patch=PATCH, stride=stride)
    dmap = None
    if mode in ("dv", "soft"):
        dmap = predict_defocus(np.asarray(image), model=model, stride=stride, pool=pool)
    plan = plan_restoration(image.shape, origins, mode=mode, num_iter=num_iter, num_psfs=psfs.shape[0],
                            dmap=dmap, levels=levels, defocus=defocus, surface_degree=surface_degree,
                            psf_depth_um=psf_depth_um, policy=policy, z_um=z_um)
    t1 = time.perf_counter()
    if isinstance(background, str):
        if background != "auto":
            raise InputError(f"background: got {background!r}, expected 'auto' or counts")
        background = image_background(image)
    background = jnp.asarray(background, image.dtype)
    token = next(_TOKENS)
    if progress is not None:
        with _CALLBACKS_LOCK:
            _CALLBACKS[token] = progress
    try:
        if block is not None or image.shape[0] * image.shape[1] > BLOCKWISE_PIXELS:
            out = restore_blockwise(image, plan, background, origins, psfs=psfs, mode=mode, optics=optics,
                                     stride=stride, context=context, weights=weights, chunk_size=chunk_size,
                                     pad_mode=pad_mode, psf_size=psf_size, shard=shard, progress=progress,
                                     block=BLOCK if block is None else block)
        else:
            kernels = patch_kernels(plan, np.arange(len(origins)), mode=mode, psfs=psfs, optics=optics,
                                    psf_size=psf_size, dtype=image.dtype)
            iters = None if plan.iters is None else jnp.asarray(plan.iters)
            out = _deconvolve_core(image, kernels, jnp.asarray(plan.active), background, iters, token,
                                   stride=stride, context=context, weights=weights, num_iter=plan.max_iter,
                                   chunk_size=chunk_size, pad_mode=pad_mode, shard=shard,
                                   report=progress is not None)
        jax.block_until_ready(out)
        jax.effects_barrier()
    finally:
        with _CALLBACKS_LOCK:
            _CALLBACKS.pop(token, None)
    t2 = time.perf_counter()
    if timings is not None:
        timings["classify"] = timings.get("classify", 0.0) + t1 - t0
        timings["deconvolve"] = timings.get("deconvolve", 0.0) + t2 - t1
    rows, cols = grid_shape(origins)
    zmap = plan.surface.z_map if plan.surface is not None else None
    return (out, jnp.asarray(plan.labels).reshape(rows, cols), jnp.asarray(plan.probs).reshape(rows, cols, -1),
            origins, plan.z_um.reshape(rows, cols), plan.certainty.reshape(rows, cols),
            plan.psf_z_um.reshape(rows, cols), zmap)


def restore(image, *, model=None, optics=Optics(), mode: str = "dv", levels=None, z_um=None,
            stride: int = 42, weights="triangular", context: int | None = None,
            num_iter=None, chunk_size: int | None = None, psf_size: int = 49,
            pad_mode: str = "reflect", shard: bool | None = None, background="auto",
            progress=None, pool=True, psf_depth_um=None, defocus: str = "levels",
            surface_degree="auto", block: int | None = None) -> Restoration:
    """Learning-based depth-variant deconvolution of a wide-field image (or a stack of them).

    Args:
      image: (H, W) image in camera counts (uint8/uint16/float; H, W >= 84), or (B, H, W)
        images of one shape (classified and restored one after another with one compile).
      model: the defocus estimator (`load_delpnet()`), a paper `DelpNet`, or a callable
        (n, 84, 84) patches -> (n, 12) probabilities; needed by 'dv' and 'soft' (keyword-only).
      optics: `Optics` of the microscope, giving the 11 level PSFs (keyword-only).
      mode: static (keyword-only): 'dv' (default) the predicted level's PSF per patch; 'di' the
        in-focus (level-0) PSF everywhere; 'oracle' the PSFs of `levels`; 'soft' each
        non-bg patch with the probability-weighted mixture of the 11 level PSFs.
      levels: 'oracle' only: per-patch labels (rows, cols) / (n,) (or (B, ...)), or a per-pixel
        map of the image's shape sampled at patch centres; 0..10, 11 = bg (keyword-only).
        For a stack: (B, rows, cols) / (B, H, W) per image, or one 2-D map for all.
      z_um: 'oracle' only, instead of `levels`: the depth of each patch in µm, (rows, cols) /
        (n,) or a per-pixel (H, W) map sampled at patch centres (a stack: (B, ...) or one map);
        NaN = bg (passed through), beyond 20 µm clipped with a warning, negative refused. Each
        patch is deconvolved as `defocus='continuous'` deconvolves a patch of that depth.
      stride: static grid step in px: 42 (triangular, paper) or 84 (rectangular).
      weights: 'triangular' (default) or 'rectangular' (keyword-only; for array weights use
        `patches.montage` on your own patches).
      context: static px of real neighbours around each patch (default 24 = the 20 µm PSF
        radius; the paper's 110-px window is 13).
      num_iter: static RL iterations, or one count per level (11 ints): a patch deconvolved
        with level l's PSF gets num_iter[l] ('soft': its predicted level's). None (default):
        `DEFAULT_ITERATIONS` (1 at levels 0-1, 15 above) for 'dv', 'soft' and 'oracle', the
        paper's 15 for 'di'. `evaluation.tune_iterations` measures such a table on in-focus
        data; on BBBC006 noise 15 iterations at level 1 lose 3.1 dB where 1 gains 1.0 dB.
      chunk_size: static patches per streaming step (None: 8 on a CPU, 256 on an accelerator);
        bounds memory, does not change the result.
      psf_size: static odd PSF size (49 holds 99 % of the 20 µm PSF).
      pad_mode: static, beyond the image: 'reflect' (default) or 'constant' (zeros, as the
        paper allows; with a camera offset of ~100 counts zeros cost 4-5 dB of PSNR, see README).
      background: camera offset in counts subtracted from each window before RL (clipped at 0)
        and added back after, so that the zero padding of RL's convolutions meets no step;
        'auto' (default) uses the image's 0.5th percentile (+1 to +5 dB at levels 4-10 over 0,
        the paper's RL on raw counts, whose window edges ring; see README).
      progress: optional host callable `progress(patches_done, patches_total)`, called after
        every chunk of patches (a progress bar); None (default) adds no callback.
      shard: static; split each step's patches and the classifier's batches over
        `jax.local_devices()`. None (default): when there is more than one. On a CPU, start
        Python with XLA_FLAGS=--xla_force_host_platform_device_count=2 (the `lbdvd` command
        does) so that XLA's FFTs use two cores (`bench_deconv.py --sweep`: 1.41 s -> 0.67 s).
        Sharding replicates the image-sized buffers on every host device, so peak memory
        grows with the device count (`bench_restore.py --devices 1` vs the default reports
        it); pass shard=False when memory, not time, is the limit.
      pool: 'dv'/'soft': evidence pooled between patches (`defocus_map`): True / 'surface'
        (default) 3x3 neighbours then a Gaussian prior around a depth surface fitted over the
        field; 'neighbours' the 3x3 pooling only (a specimen whose depth is not smooth);
        False classifies each patch alone (the paper).
      psf_depth_um: depth in µm of the PSF used for each level's patches (11 numbers; 'dv',
        'soft', 'oracle'). None: `DEFAULT_PSF_DEPTH_UM` (the in-focus PSF for level 1, 2 µm x
        level above); `tuple(2.0 * l for l in range(11))` is the paper's.
      defocus: 'dv' only: 'levels' (default, the paper's 11 PSFs) or 'continuous': each patch
        gets the PSF of its own real-valued depth (the pooled expected z, or the depth surface).
        With neither `num_iter` nor `psf_depth_um` given, the PSF depth and the iteration count
        follow `policy.CONTINUOUS_POLICY`, fitted by gradient through RL and the PSF on the
        training fields (`policy_fit.py`); given either, `psf_depth_um` is interpolated between
        the levels and `num_iter` taken at the nearest level.
      block: deconvolve block by block, blocks of this side in px (>= 84): the same pixels with
        memory bounded by the image, the output and one block (`blocks.py`); `progress` then
        counts blocks and may raise to stop between them. None (default): blocks of 2048 px
        for images over 3072² px, else the whole image at once.
      surface_degree: 'continuous' only: degree of the certainty-weighted robust polynomial depth
        surface fitted over the field (`depth_surface.fit_depth_surface`; 'auto' picks 0..4 by
        BIC); None: per-patch depths.

    Returns:
      `Restoration(image, levels, probs, origins)`.

    Raises:
      ValueError / TypeError: bad mode, missing model or levels, NaN/Inf or negative pixels,
        images smaller than a patch, bad stride.

    Examples:
      >>> from lbdvd_jax import load_delpnet, read_tiff, restore
      >>> img = read_tiff("cells.tif").data  # doctest: +SKIP
      >>> result = restore(img, model=load_delpnet())  # doctest: +SKIP
      >>> result.image.shape, result.levels.shape  # doctest: +SKIP
      ((520, 696), (12, 16))
    """
    options = dict(locals())
    del options["image"]
    return _restore(image, None, **options)


def _restore(image, timings, *, model, optics, mode, levels, z_um, stride, weights, context, num_iter,
             chunk_size, psf_size, pad_mode, shard, background, progress, pool, psf_depth_um, defocus,
             surface_degree, block):
    """`restore`'s body; `timings` (a dict or None) receives seconds per stage."""
    context = DEFAULT_CONTEXT if context is None else int(context)
    policy = choose_policy(mode, defocus, num_iter, psf_depth_um, z_um)
    if num_iter is None:
        num_iter = 15 if mode == "di" else DEFAULT_ITERATIONS
    image = check_image(image)
    if psf_depth_um is None:
        psf_depth_um = DEFAULT_PSF_DEPTH_UM if mode != "di" else None
    psfs = check_options(model=model, mode=mode, levels=levels, weights=weights, stride=stride,
                          shape=image.shape[-2:], optics=optics, psf_depth_um=psf_depth_um,
                          psf_size=psf_size, num_iter=num_iter, defocus=defocus, z_um=z_um, pool=pool)
    opts = dict(model=model, psfs=psfs, mode=mode, stride=int(stride), context=context,
                weights=weights, num_iter=num_iter if np.ndim(num_iter) else int(num_iter),
                chunk_size=None if chunk_size is None else int(chunk_size), pad_mode=pad_mode,
                shard=jax.local_device_count() > 1 if shard is None else bool(shard),
                background=background, progress=progress, pool=pool,
                timings=timings, defocus=defocus, surface_degree=surface_degree, optics=optics,
                psf_depth_um=psf_depth_um, psf_size=psf_size, block=block, policy=policy)
    if mode in ("dv", "soft") and is_trained_model(model):
        from lbdvd_jax.optics_file import optics_mismatch

        differ = optics_mismatch(optics)
        if differ:
            import warnings

            from lbdvd_jax.defocus_map import EstimatorDomainWarning

            warnings.warn(f"defocus estimator: trained for other optics ({'; '.join(differ)}): its levels assume "
                          "those; the PSFs use yours", EstimatorDomainWarning, stacklevel=2)
    if block is not None and (not isinstance(block, int) or block < PATCH):
        raise InputError(f"block: got {block!r}, expected None or an int >= {PATCH} px")
    if image.ndim == 2:
        return Restoration(*_restore_one(image, levels=levels, z_um=z_um, **opts))
    per_image = levels is not None and np.ndim(levels) == 3
    per_image_z = z_um is not None and np.ndim(z_um) == 3
    outs = [_restore_one(im, levels=np.asarray(levels)[b] if per_image else levels,
                         z_um=np.asarray(z_um)[b] if per_image_z else z_um, **opts)
            for b, im in enumerate(image)]
    maps = [o[7] for o in outs]
    return Restoration(jnp.stack([o[0] for o in outs]), jnp.stack([o[1] for o in outs]),
                       jnp.stack([o[2] for o in outs]), outs[0][3],
                       np.stack([o[4] for o in outs]), np.stack([o[5] for o in outs]),
                       np.stack([o[6] for o in outs]), None if maps[0] is None else np.stack(maps))


def restore_timed(image, **kwargs):
    """`restore` plus wall-clock seconds per stage: {'classify', 'deconvolve', 'total'}."""
    bound = inspect.signature(restore).bind(image, **kwargs)
    bound.apply_defaults()
    options = dict(bound.arguments)
    del options["image"]
    timings: dict = {}
    t0 = time.perf_counter()
    result = _restore(image, timings, **options)
    jax.block_until_ready(result.image)
    timings["total"] = time.perf_counter() - t0
    return result, timings


def level_map_pixels(levels, shape, *, stride: int = 42, region=None):
    """Expands a per-patch level map (rows, cols) to pixels: each pixel takes the label of the
    patch whose centre is nearest.

    Args:
      levels: (rows, cols) labels of `patch_grid(shape, stride=stride)` (or any per-patch values).
      shape: (H, W) of the image.
      stride: grid step (keyword-only).
      region: optional ((r0, r1), (c0, c1)): only these pixels (a block of a large image).

    Returns:
      (H, W) NumPy array of labels, or the region's (r1 - r0, c1 - c0).
    """
    origins = patch_grid(shape, patch=PATCH, stride=stride)
    levels = np.asarray(levels)
    rows, cols = grid_shape(origins)
    (r0, r1), (c0, c1) = region if region is not None else ((0, shape[0]), (0, shape[1]))
    cy = np.unique(origins[:, 0]) + PATCH / 2
    cx = np.unique(origins[:, 1]) + PATCH / 2
    iy = np.abs(np.arange(r0, r1)[:, None] + 0.5 - cy[None]).argmin(1)
    ix = np.abs(np.arange(c0, c1)[:, None] + 0.5 - cx[None]).argmin(1)
    return levels.reshape(rows, cols)[iy[:, None], ix[None, :]]
