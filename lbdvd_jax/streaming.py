"""The patch-wise deconvolution engine (paper Section 2.3): RL on every active patch, montage.

* :func:`deconvolve_streaming` -- the engine behind `restore` and `depth_variant_deconvolve`: a
  loop over steps of patches that gathers windows, runs cache-sized vmapped Richardson-Lucy
  batches (per-patch kernels and iteration counts) and adds the weighted results in place, so
  memory stays bounded and only active patches cost time;
* :func:`depth_variant_deconvolve` -- every patch deconvolved with the PSF of its own defocus
  level (bg and level-0 patches pass through), then the montage;
  :func:`depth_invariant_deconvolve` uses one PSF everywhere.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.constants import BG_LABEL
from lbdvd_jax.deconv import richardson_lucy
from lbdvd_jax.devices import sharded_map
from lbdvd_jax.errors import InputError
from lbdvd_jax.patches import (
    DEFAULT_CONTEXT,
    _check_context,
    _weights,
    add_windows_in_place,
    gather_windows,
    patch_grid,
)
from lbdvd_jax.validate import check_image, check_psf, is_concrete

__all__ = ["accumulate_patches", "deconvolve_streaming", "deconvolve_windows", "default_rl_batch",
           "default_stream_chunk", "depth_invariant_deconvolve", "depth_variant_deconvolve", "iteration_counts"]


def default_rl_batch(backend=None):
    """Patches per vmapped RL batch: 2 on a CPU, 256 on an accelerator.

    On a CPU the batch must fit the cache: one 132-px window at FFT size 160 is ~0.3 MB of
    complex spectra per array, and the RL loop streams several such arrays per iteration.
    ``python benchmarks/bench_deconv.py --sweep`` on the 2-core CPU (174 patches in one step,
    15 iterations, two host devices): batches of 1-4 take 0.75 s, 8: 0.84 s, 16: 0.91 s,
    32: 1.08 s, all at once: 1.15 s. GPUs want the opposite: large batches that fill the device.
    """
    return 2 if (backend or jax.default_backend()) == "cpu" else 256


def deconvolve_windows(windows, kernels, iters=None, *, num_iter=15, rl_batch=None,
                       fft_shape=None):
    """Richardson-Lucy of (n, s, s) windows, each with its own (n, k, k) kernel.

    One ``fori_loop`` per batch of ``rl_batch`` windows, vmapped, and ``lax.map`` over the
    batches; the output does not depend on ``rl_batch`` (None: :func:`default_rl_batch`).
    ``iters``: optional (n,) int, each window's own iteration count (<= ``num_iter``).
    """
    n = windows.shape[0]
    rl_batch = default_rl_batch() if rl_batch is None else int(rl_batch)
    if rl_batch < 1:
        raise InputError(f"rl_batch must be a positive int or None; got {rl_batch!r}.")
    rl = lambda x, h, s=None: richardson_lucy(x, h, num_iter=num_iter,  # noqa: E731
                                              fft_shape=fft_shape, stop=s)
    args = (windows, kernels) if iters is None else (windows, kernels, iters)
    if rl_batch >= n:
        return jax.vmap(rl)(*args)
    return jax.lax.map(lambda a: rl(*a), args, batch_size=rl_batch)


def iteration_counts(num_iter, levels, num_levels):
    """Static loop length and per-patch iteration counts for an int or a per-level table.

    Args:
        num_iter: an int (every patch) or a sequence of ``num_levels`` ints (the count for a
            patch deconvolved with level ``l``'s PSF is ``num_iter[l]``).
        levels: (n,) int labels (clipped into the table).
        num_levels: number of PSF levels.

    Returns:
        ``(max_iter, iters)``: a Python int and an (n,) int32 array.
    """
    if np.ndim(num_iter) == 0:
        it = int(num_iter)
        if it < 0:
            raise InputError(f"num_iter must be >= 0; got {it!r}.")
        return it, jnp.full(jnp.shape(levels), it, jnp.int32)
    table = np.asarray(num_iter)
    if table.shape != (num_levels,) or not np.issubdtype(table.dtype, np.integer) or (table < 0).any():
        raise InputError(f"num_iter must be an int or one non-negative int per PSF level "
                         f"({num_levels}); got {num_iter!r}.")
    return int(table.max()), jnp.asarray(table, jnp.int32)[jnp.clip(levels, 0, num_levels - 1)]


def _check_levels(levels, n, num_psfs, passthrough):
    levels = jnp.asarray(levels)
    if not jnp.issubdtype(levels.dtype, jnp.integer) or levels.shape != (n,):
        raise InputError(f"levels must be an integer array of shape ({n},), one label per patch of"
                         f" patch_grid(image.shape, ...); got dtype {levels.dtype!s}, shape "
                         f"{tuple(levels.shape)!r}. Fix: classify exactly those patches.")
    if is_concrete(levels):
        v = np.asarray(levels)
        bad = ~(((v >= 0) & (v < num_psfs)) | np.isin(v, passthrough))
        if bad.any():
            raise InputError(f"levels must index psfs (0..{num_psfs - 1}) or be a pass-through "
                             f"label {tuple(passthrough)!r}; got {sorted(set(v[bad].tolist()))!r}.")
    return levels


def default_stream_chunk(backend=None):
    """Patches per step of :func:`deconvolve_streaming`: 8 on a CPU, 256 on an accelerator.

    Small steps waste little on a partly active last step (the loop stops after the last step
    holding active patches). ``bench_deconv.py --sweep`` on the 2-core CPU: steps of 2-16
    take 0.66 s, 64: 0.72 s, 256: 0.74 s.
    """
    return 8 if (backend or jax.default_backend()) == "cpu" else 256


def accumulate_patches(padded, origins, kernels, active, iters=None, *, valid=None, background=None,
                       patch=84, context=DEFAULT_CONTEXT, weights="triangular", num_iter=15,
                       chunk_size=None, rl_batch=None, fft_shape=None, shard=False, report=None,
                       report_args=()):
    """The engine's sums over one region: Σ_active w_i (RL_i - observed_i) and Σ_valid w_i.

    ``padded`` is the region with ``context`` px of real (or border-padded) pixels on every
    side; ``origins`` are patch corners in *region* coordinates (the window of patch i is
    ``padded[o : o + patch + 2 context]``). The montage over the region is then
    ``region + num / den`` where ``den > 0`` (:func:`deconvolve_streaming` on the whole image,
    or one block of a chunked image, `dask_restore`, with the patches that cover it). Patches
    with ``valid`` False (padding slots, so that every block has one patch count and compiles
    once) add nothing to either sum; ``active`` must be False for them.

    Returns:
        ``(num, den)``, each of the region's shape (``padded.shape - 2 context``).
    """
    origins = jnp.asarray(origins, jnp.int32)
    n, size, c = origins.shape[0], patch + 2 * context, int(context)
    shape = (padded.shape[0] - 2 * c, padded.shape[1] - 2 * c)
    cs = min(default_stream_chunk() if chunk_size is None else int(chunk_size), n)
    nch = math.ceil(n / cs)
    pad = nch * cs - n
    order = jnp.argsort(~active, stable=True).astype(jnp.int32)  # active patches first
    order = jnp.concatenate([order, jnp.full((pad,), n, jnp.int32)])  # index n: padding
    org = jnp.concatenate([origins, jnp.zeros((1, 2), jnp.int32)])
    kernels = jnp.concatenate([kernels, kernels[:1]])
    if iters is not None:
        iters = jnp.concatenate([jnp.asarray(iters, jnp.int32), jnp.zeros((1,), jnp.int32)])
    act = jnp.concatenate([active, jnp.zeros((1,), bool)])
    w = _weights(weights, patch, padded.dtype)
    n_active = jnp.sum(active)
    rl = jax.tree_util.Partial(deconvolve_windows, num_iter=num_iter, fft_shape=fft_shape,
                               rl_batch=rl_batch)
    if shard:
        rl = sharded_map(rl)
    if background is not None:
        bg = jnp.asarray(background, padded.dtype)
        rl_raw = rl
        rl = lambda x, *rest: rl_raw(jnp.maximum(x - bg, 0), *rest) + bg  # noqa: E731
    per_patch = (lambda idx: (kernels[idx],)) if iters is None else (  # noqa: E731
        lambda idx: (kernels[idx], iters[idx]))

    def step(i, num):
        idx = jax.lax.dynamic_slice_in_dim(order, i * cs, cs)
        o = org[idx]
        win = gather_windows(padded, o, size)
        out = rl(win, *per_patch(idx))
        keep = act[idx] if iters is None else act[idx] & (iters[idx] > 0)  # 0 iterations: as observed
        delta = jnp.where(keep[:, None, None], out - win, 0)[:, c:c + patch, c:c + patch]
        if report is not None:
            jax.debug.callback(report, *report_args, jnp.minimum((i + 1) * cs, n_active), n_active)
        return add_windows_in_place(num, o, delta * w)

    # montage = sum_i w_i x_i / sum_i w_i with x_i = image where patch i passes through, so
    # it equals image + sum_active w_i (rl_i - image) / sum_i w_i: the loop visits the active
    # steps only (a traced trip count) and the weight sum is one scatter outside it.
    # (in place, and never materialising n copies of w: 1 GB at 8192^2; XLA constant-folds a
    # scatter of constants here, which took minutes to compile at 2048^2)
    if valid is None:
        den = add_windows_in_place(jnp.zeros(shape, padded.dtype), origins, w)
    else:
        valid = jnp.asarray(valid, bool)
        den = jax.lax.fori_loop(0, n, lambda i, a: add_windows_in_place(
            a, jax.lax.dynamic_slice_in_dim(origins, i, 1), jnp.where(valid[i], w, 0)[None]),
            jnp.zeros(shape, padded.dtype))
    num = jax.lax.fori_loop(0, (n_active + cs - 1) // cs, step, jnp.zeros(shape, padded.dtype))
    return num, den


def deconvolve_streaming(image, kernels, active, iters=None, *, background=None, patch=84, stride=42,
                         context=DEFAULT_CONTEXT, weights="triangular", num_iter=15,
                         chunk_size=None, rl_batch=None, pad_mode="constant", fft_shape=None,
                         shard=False, report=None, report_args=()):
    """The streaming engine: per-patch RL with per-patch kernels, then the weighted montage.

    Active patches are sorted first; a loop over steps of ``chunk_size`` of them (a traced trip
    count: bg-rich images cost less while one program serves every level map) gathers their
    windows, deconvolves them and scatter-adds ``weights * (restored - observed)``; the result
    is the image plus that sum over the summed weights of all patches, which equals the
    weighted montage of restored and passed-through patches. Memory is the image, one sum and
    one step of windows, whatever the image size. Traceable (forward only: the trip count is
    traced); jit it with every keyword static (``background`` and the arrays may be traced).

    Args:
        image: (H, W) non-negative float image.
        kernels: (n, k, k) PSF per patch of ``patch_grid(image.shape, patch, stride)``.
        active: (n,) bool; False patches keep their observed pixels.
        iters: optional (n,) int, each patch's own RL iteration count (<= ``num_iter``, the
            static loop length); see :func:`iteration_counts`.
        background: None (the windows as they are), or counts subtracted from each window
            before RL (clipped at 0) and added back after, so that RL's zero-padded
            convolutions meet no step at the window edge.
        patch, stride, context, weights, num_iter, pad_mode, fft_shape: as in
            :func:`depth_variant_deconvolve`.
        chunk_size: static patches per step (None: :func:`default_stream_chunk`).
        rl_batch: static windows per vmapped RL batch inside a step (per device when sharded;
            None: :func:`default_rl_batch`, cache-sized on a CPU).
        shard: static; split each step over ``jax.local_devices()`` (:func:`sharded_map`).
        report: static host callable ``report(done, total)`` (active patches deconvolved so
            far, out of all active ones) called after each step through
            ``jax.debug.callback`` (a progress bar), or None.
        report_args: traced arrays passed to ``report`` before ``(done, total)``: a per-call
            token lets one compiled program serve many callers' callbacks.

    Returns:
        (H, W) image, dtype of ``image``.
    """
    origins = patch_grid(image.shape, patch=patch, stride=stride)
    c = int(context)
    num, den = accumulate_patches(jnp.pad(image, c, mode=pad_mode), origins, kernels, active, iters,
                                  background=background, patch=patch, context=c, weights=weights,
                                  num_iter=num_iter, chunk_size=chunk_size, rl_batch=rl_batch,
                                  fft_shape=fft_shape, shard=shard, report=report,
                                  report_args=report_args)
    good = den > 0
    return jnp.where(good, image + num / jnp.where(good, den, 1), 0)


def depth_variant_deconvolve(image, levels, psfs, *, patch=84, stride=42, context=DEFAULT_CONTEXT,
                             weights="triangular", num_iter=15, chunk_size=None, rl_batch=None,
                             pad_mode="constant", passthrough=(0, BG_LABEL), fft_shape=None,
                             shard=False):
    """Patch-wise depth-variant deconvolution (paper Section 2.3): RL per patch, then montage.

    Every patch of ``patch_grid(image.shape, patch=patch, stride=stride)`` is extracted with
    ``context`` px of neighbours, deconvolved with ``psfs[levels[i]]`` (a vmapped
    ``fori_loop`` over the patches), cropped back to ``patch`` px and stitched with
    ``weights`` by :func:`deconvolve_streaming`. Patches whose label is in ``passthrough`` (bg
    and level 0 by default) keep their observed pixels and cost no RL, whether ``levels`` is
    concrete or traced: the active patches are sorted first and the loop skips the rest.

    Args:
        image: (H, W) non-negative float image, H, W >= patch.
        levels: (n,) int labels, one per grid patch (0..len(psfs)-1, or 11 = bg).
        psfs: (L, k, k) PSF stack (odd k, each summing to 1), e.g. ``psf_stack(Optics())``.
        patch, stride: static grid (84/42 triangular, 84/84 rectangular).
        context: static px of neighbours around each patch (paper: 13). The default, 24, is
            the PSF radius at 20 um; the measured cost of 13 px is in the README.
        weights: ``'triangular'``, ``'rectangular'`` or a (patch, patch) array.
        num_iter: static RL iterations (paper: 15), or one count per PSF level (a patch of
            level ``l`` gets ``num_iter[l]``; see ``evaluation.tune_iterations``).
        chunk_size: static patches per streaming step; bounds memory (one step of windows
            lives at once). None: 8 on a CPU, 256 on an accelerator
            (:func:`default_stream_chunk`); inside a step RL runs in cache-sized batches
            (``rl_batch``, None: :func:`default_rl_batch`). The output depends on neither.
        rl_batch: static windows per vmapped RL batch (see :func:`deconvolve_streaming`).
        pad_mode: static, ``'constant'`` (zeros, paper) or ``'reflect'`` beyond the image.
        passthrough: static tuple of labels left undeconvolved.
        fft_shape: static FFT size per window (default: smallest fast size without wrap).
        shard: static; split the patches over ``jax.local_devices()`` with :func:`sharded_map`.

    Returns:
        (H, W) deconvolved image, dtype of ``image``.

    Examples:
        >>> import numpy as np
        >>> from lbdvd_jax import Optics, psf_stack, patch_grid, extract_patches
        >>> image = np.full((200, 300), 100.0, np.float32)
        >>> grid = patch_grid(image.shape)            # (n, 2): classify exactly these patches,
        >>> windows = extract_patches(image, grid)    # e.g. DelpNet on the 84-px windows
        >>> levels = np.full(len(grid), 5, np.int32)  # (n,) labels 0..10, 11 = bg
        >>> out = depth_variant_deconvolve(image, levels, psf_stack(Optics()))
        >>> out.shape
        (200, 300)
    """
    image = check_image(image, "image")
    psfs = check_psf(psfs, "psfs", ndim=3).astype(image.dtype)
    passthrough = tuple(int(v) for v in passthrough)
    origins = patch_grid(image.shape, patch=patch, stride=stride)
    levels = _check_levels(levels, len(origins), psfs.shape[0], passthrough)
    context = _check_context(context, pad_mode, image.shape)
    _weights(weights, patch, image.dtype)  # validate early
    active = ~jnp.isin(levels, jnp.asarray(passthrough, levels.dtype))
    kernels = psfs[jnp.clip(levels, 0, psfs.shape[0] - 1)]
    num_iter, iters = iteration_counts(num_iter, levels, psfs.shape[0])
    return deconvolve_streaming(image, kernels, active, iters, patch=patch, stride=stride,
                                context=context, weights=weights, num_iter=num_iter,
                                chunk_size=chunk_size, rl_batch=rl_batch, pad_mode=pad_mode,
                                fft_shape=fft_shape, shard=shard)


def depth_invariant_deconvolve(image, psf, **kwargs):
    """The paper's depth-invariant comparison: every patch deconvolved with one PSF.

    Args:
        image: (H, W) non-negative float image.
        psf: (k, k) PSF (e.g. the level-0 PSF), odd k, sums to 1.
        **kwargs: keyword-only options of :func:`depth_variant_deconvolve` (except
            ``passthrough``: nothing passes through here).
    """
    image = check_image(image, "image")
    psf = check_psf(psf, "psf")
    n = len(patch_grid(image.shape, patch=kwargs.get("patch", 84), stride=kwargs.get("stride", 42)))
    return depth_variant_deconvolve(image, np.zeros(n, np.int32), psf[None], passthrough=(),
                                    **kwargs)
