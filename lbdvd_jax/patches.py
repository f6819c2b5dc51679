"""Patch-wise depth-variant deconvolution (paper Section 2.3, Fig. 2(d)).

The pieces, usable on their own so that a classifier can label exactly the patches that are
deconvolved:

* :func:`patch_grid` -- origins of ``patch``-px patches every ``stride`` px, covering any image
  of at least one patch (the last patch on each axis sits flush with the border);
* :func:`extract_patches` -- each patch with ``context`` px of real neighbours around it
  (zeros, or a reflection, beyond the image), the paper's 110-px window being ``context=13``;
* :func:`triangular_weights` / :func:`rectangular_weights` and :func:`montage` -- a vectorised
  scatter-add of weighted patches normalised by the summed weights;
* :func:`depth_variant_deconvolve` -- every patch deconvolved with the PSF of its own defocus
  level in one vmapped Richardson-Lucy loop (bg and level-0 patches pass through), then the
  montage; :func:`depth_invariant_deconvolve` uses one PSF everywhere;
* :func:`seam_score` -- the patch-boundary artefact of Fig. 9 as a number.

Images smaller than one patch are rejected with a ValueError (pad them first if you must).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.constants import BG_LABEL
from lbdvd_jax.deconv import richardson_lucy
from lbdvd_jax.devices import sharded_map
from lbdvd_jax.validate import check_float_array, check_image, check_psf, is_concrete

__all__ = [
    "DEFAULT_CONTEXT", "add_windows_in_place", "deconvolve_streaming", "deconvolve_windows",
    "default_chunk_size", "default_stream_chunk", "depth_invariant_deconvolve",
    "depth_variant_deconvolve", "extract_patches", "gather_windows", "iteration_counts",
    "montage", "patch_grid", "rectangular_weights", "scatter_add_windows", "seam_score",
    "sharded_map", "triangular_weights",
]

#: px of neighbours around each patch: the PSF radius at 20 um. Measured on the real BBBC006 a01
#: field blurred at level 5 / 10, patch-wise vs whole-image RL (max error / image max):
#: context 13 (the paper's 110-px window): 0.7 % / 3.3 %; 24: 0.10 % / 2.2 %; 32: 0.02 % / 1.2 %;
#: 48: 0.001 % / 0.3 %, at FFT sizes 135 / 160 / 175 / 210 (time x1, x1.3, x1.7, x2.4).
DEFAULT_CONTEXT = 24
_PAD_MODES = ("constant", "reflect")


def _axis_origins(length, patch, stride):
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] + patch < length:
        starts.append(length - patch)  # flush with the border: no partial patches
    return starts


def patch_grid(shape, *, patch=84, stride=42):
    """Origins of the patches covering an image, row-major.

    Args:
        shape: image shape ``(H, W)`` (H, W >= patch).
        patch: static patch size in px (paper: 84).
        stride: static step in px, 1 <= stride <= patch (paper: 42 with triangular weights,
            84 with rectangular ones). When ``H - patch`` is not a multiple of ``stride`` one
            extra patch is placed flush with the bottom (and right) border.

    Returns:
        (n, 2) int NumPy array of ``(row, col)`` top-left corners.

    Raises:
        ValueError: the image is smaller than a patch, or patch/stride do not tile.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W); got {shape!r}.")
    patch, stride = int(patch), int(stride)
    if patch < 1 or not 1 <= stride <= patch:
        raise ValueError(f"patch/stride must satisfy 1 <= stride <= patch so that patches tile "
                         f"the image without gaps; got patch={patch!r}, stride={stride!r}. Fix: "
                         f"stride=patch // 2 (triangular) or stride=patch (rectangular).")
    if min(shape) < patch:
        raise ValueError(f"image of shape {shape!r} is smaller than one {patch}x{patch} patch. "
                         f"Fix: pad the image to at least {patch} px per axis (e.g. np.pad(..., "
                         f"mode='reflect')) or use a smaller patch.")
    rows, cols = _axis_origins(shape[0], patch, stride), _axis_origins(shape[1], patch, stride)
    return np.array([(r, c) for r in rows for c in cols], dtype=np.int32)


_WINDOWS = jax.lax.ScatterDimensionNumbers(update_window_dims=(1, 2), inserted_window_dims=(),
                                           scatter_dims_to_operand_dims=(0, 1))


def gather_windows(padded, origins, size):
    """(n, size, size) windows of ``padded`` at corners ``origins``: one windowed gather.

    A gather of whole windows (``vmap`` of ``dynamic_slice``) copies rows, where fancy
    indexing gathers pixel by pixel (2x slower on a CPU). Corners must keep windows inside.
    """
    o = jnp.asarray(origins, jnp.int32)
    return jax.vmap(lambda q: jax.lax.dynamic_slice(padded, (q[0], q[1]), (size, size)))(o)


def scatter_add_windows(acc, origins, windows):
    """``acc`` plus each (p, p) window added at its corner: one windowed scatter-add.

    Overlapping windows accumulate (an XLA scatter-add whose updates are whole windows, 3x
    faster than a per-pixel scatter on a CPU). Corners must keep windows inside ``acc``.
    """
    o = jnp.asarray(origins, jnp.int32)
    return jax.lax.scatter_add(acc, o, windows.astype(acc.dtype), _WINDOWS)


def _check_context(context, pad_mode, shape):
    context = int(context)
    if context < 0:
        raise ValueError(f"context must be >= 0 px; got {context!r}.")
    if pad_mode not in _PAD_MODES:
        raise ValueError(f"pad_mode must be one of {_PAD_MODES!r}; got {pad_mode!r}.")
    if pad_mode == "reflect" and context >= min(shape):
        raise ValueError(f"pad_mode='reflect' needs context < image size; got context={context}"
                         f" for shape {tuple(shape)!r}. Fix: pad_mode='constant'.")
    return context


def add_windows_in_place(acc, origins, windows):
    """``acc`` plus each (n, p, q) window (or one (p, q) window) at its corner, one
    ``dynamic_update_slice`` after another.

    Inside a loop that carries ``acc`` (the streaming engine) XLA updates the buffer in
    place, where a scatter copied the whole image at every step (the cost grew with the image
    area times the number of steps; ``bench_restore.py`` shows the cost per Mpx now flat).
    """
    o = jnp.asarray(origins, jnp.int32)
    acc = jnp.asarray(acc)
    windows = jnp.asarray(windows, acc.dtype)
    p, q = windows.shape[-2:]
    same = windows.ndim == 2  # one (p, q) window added at every corner

    def add(i, a):
        r, c = o[i, 0], o[i, 1]
        win = windows if same else windows[i]
        return jax.lax.dynamic_update_slice(a, jax.lax.dynamic_slice(a, (r, c), (p, q)) + win,
                                            (r, c))

    return jax.lax.fori_loop(0, o.shape[0], add, acc)


def extract_patches(image, origins, *, patch=84, context=0, pad_mode="constant"):
    """Windows of ``patch + 2 * context`` px centred on each patch, by one vectorised gather.

    Args:
        image: (H, W) float image.
        origins: (n, 2) patch corners from :func:`patch_grid`.
        patch: static patch size in px.
        context: static px of neighbours on every side (paper: 13, a 110-px window).
        pad_mode: static, beyond the image: ``'constant'`` (zeros, the paper) or ``'reflect'``.

    Returns:
        (n, patch + 2 * context, patch + 2 * context) windows, dtype of ``image``.
    """
    image = check_float_array(image, "image", ndim=2)
    context = _check_context(context, pad_mode, image.shape)
    padded = jnp.pad(image, context, mode=pad_mode)
    return gather_windows(padded, origins, patch + 2 * context)


def triangular_weights(patch=84, *, dtype=None):
    """Separable triangular (bilinear) weights, base width = ``patch`` (paper Fig. 2(d)).

    Sampled at pixel centres, ``w(i) = 1 - |i + 1/2 - patch/2| / (patch/2)``, so they are > 0
    everywhere (the image border keeps its value) and sum to 1 at stride ``patch // 2``.
    """
    half = patch / 2.0
    w1 = 1.0 - np.abs(np.arange(patch) + 0.5 - half) / half
    return jnp.asarray(np.outer(w1, w1), dtype=dtype)


def rectangular_weights(patch=84, *, dtype=None):
    """Constant weights: non-overlapping montage at stride ``patch`` (shows seams, Fig. 9)."""
    return jnp.ones((patch, patch), dtype=dtype)


def _weights(weights, patch, dtype):
    if isinstance(weights, str):
        table = {"triangular": triangular_weights, "rectangular": rectangular_weights}
        if weights not in table:
            raise ValueError(f"weights must be 'triangular', 'rectangular' or a ({patch}, {patch})"
                             f" array; got {weights!r}.")
        return table[weights](patch, dtype=dtype)
    w = jnp.asarray(weights, dtype=dtype)
    if w.shape != (patch, patch):
        raise ValueError(f"weights must have shape ({patch}, {patch}); got {tuple(w.shape)!r}.")
    return w


def montage(patches, origins, shape, *, weights="triangular"):
    """Stitch patches into an image: scatter-add of ``w * patch``, divided by the summed ``w``.

    Args:
        patches: (n, p, p) patches (context already removed).
        origins: (n, 2) corners from :func:`patch_grid` (they must cover the image).
        shape: static output shape ``(H, W)``.
        weights: ``'triangular'``, ``'rectangular'`` or a (p, p) array of positive weights.

    Returns:
        (H, W) image, dtype of ``patches``. ``montage(extract_patches(x, g), g, x.shape)``
        returns ``x`` to float rounding.
    """
    patches = check_float_array(patches, "patches", ndim=3)
    p = patches.shape[-1]
    w = _weights(weights, p, patches.dtype)
    shape = tuple(int(s) for s in shape)
    num = scatter_add_windows(jnp.zeros(shape, patches.dtype), origins, patches * w)
    den = scatter_add_windows(jnp.zeros(shape, patches.dtype), origins,
                              jnp.broadcast_to(w, patches.shape))
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def default_chunk_size(backend=None):
    """Patches per vmapped RL batch: 2 on a CPU, 256 on an accelerator.

    On a CPU the batch must fit the cache: one 132-px window at FFT size 160 is ~0.3 MB of
    complex spectra per array, and the RL loop streams several such arrays per iteration.
    ``python benchmarks/bench_deconv.py --sweep`` on the 2-core CPU (174 patches in one step,
    15 iterations, two host devices): batches of 1-4 take 0.75 s, 8: 0.84 s, 16: 0.91 s,
    32: 1.08 s, all at once: 1.15 s. GPUs want the opposite: large batches that fill the device.
    """
    return 2 if (backend or jax.default_backend()) == "cpu" else 256


def deconvolve_windows(windows, kernels, iters=None, *, num_iter=15, chunk_size=None,
                       fft_shape=None):
    """Richardson-Lucy of (n, s, s) windows, each with its own (n, k, k) kernel.

    One ``fori_loop`` per batch of ``chunk_size`` windows, vmapped, and ``lax.map`` over the
    batches; the output does not depend on ``chunk_size`` (None: :func:`default_chunk_size`).
    ``iters``: optional (n,) int, each window's own iteration count (<= ``num_iter``).
    """
    n = windows.shape[0]
    chunk_size = default_chunk_size() if chunk_size is None else int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}.")
    rl = lambda x, h, s=None: richardson_lucy(x, h, num_iter=num_iter,  # noqa: E731
                                              fft_shape=fft_shape, stop=s)
    args = (windows, kernels) if iters is None else (windows, kernels, iters)
    if chunk_size >= n:
        return jax.vmap(rl)(*args)
    return jax.lax.map(lambda a: rl(*a), args, batch_size=chunk_size)


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
            raise ValueError(f"num_iter must be >= 0; got {it!r}.")
        return it, jnp.full(jnp.shape(levels), it, jnp.int32)
    table = np.asarray(num_iter)
    if table.shape != (num_levels,) or not np.issubdtype(table.dtype, np.integer) or (table < 0).any():
        raise ValueError(f"num_iter must be an int or one non-negative int per PSF level "
                         f"({num_levels}); got {num_iter!r}.")
    return int(table.max()), jnp.asarray(table, jnp.int32)[jnp.clip(levels, 0, num_levels - 1)]


def _check_levels(levels, n, num_psfs, passthrough):
    levels = jnp.asarray(levels)
    if not jnp.issubdtype(levels.dtype, jnp.integer) or levels.shape != (n,):
        raise ValueError(f"levels must be an integer array of shape ({n},), one label per patch of"
                         f" patch_grid(image.shape, ...); got dtype {levels.dtype!s}, shape "
                         f"{tuple(levels.shape)!r}. Fix: classify exactly those patches.")
    if is_concrete(levels):
        v = np.asarray(levels)
        bad = ~(((v >= 0) & (v < num_psfs)) | np.isin(v, passthrough))
        if bad.any():
            raise ValueError(f"levels must index psfs (0..{num_psfs - 1}) or be a pass-through "
                             f"label {tuple(passthrough)!r}; got {sorted(set(v[bad].tolist()))!r}.")
    return levels


def default_stream_chunk(backend=None):
    """Patches per step of :func:`deconvolve_streaming`: 8 on a CPU, 256 on an accelerator.

    Small steps waste little on a partly active last step (the loop stops after the last step
    holding active patches). ``bench_deconv.py --sweep`` on the 2-core CPU: steps of 2-16
    take 0.66 s, 64: 0.72 s, 256: 0.74 s.
    """
    return 8 if (backend or jax.default_backend()) == "cpu" else 256


def deconvolve_streaming(image, kernels, active, iters=None, *, background=None, patch=84, stride=42,
                         context=DEFAULT_CONTEXT, weights="triangular", num_iter=15,
                         chunk_size=None, rl_batch=None, pad_mode="constant", fft_shape=None,
                         shard=False, report=None):
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
            None: :func:`default_chunk_size`, cache-sized on a CPU).
        shard: static; split each step over ``jax.local_devices()`` (:func:`sharded_map`).
        report: static host callable ``report(done, total)`` (active patches deconvolved so
            far, out of all active ones) called after each step through
            ``jax.debug.callback`` (a progress bar), or None.

    Returns:
        (H, W) image, dtype of ``image``.
    """
    origins = patch_grid(image.shape, patch=patch, stride=stride)
    n, size, c = len(origins), patch + 2 * context, int(context)
    cs = min(default_stream_chunk() if chunk_size is None else int(chunk_size), n)
    nch = math.ceil(n / cs)
    pad = nch * cs - n
    order = jnp.argsort(~active, stable=True).astype(jnp.int32)  # active patches first
    order = jnp.concatenate([order, jnp.full((pad,), n, jnp.int32)])  # index n: padding
    org = jnp.concatenate([jnp.asarray(origins), jnp.zeros((1, 2), jnp.int32)])
    kernels = jnp.concatenate([kernels, kernels[:1]])
    if iters is not None:
        iters = jnp.concatenate([jnp.asarray(iters, jnp.int32), jnp.zeros((1,), jnp.int32)])
    act = jnp.concatenate([active, jnp.zeros((1,), bool)])
    padded = jnp.pad(image, c, mode=pad_mode)
    w = _weights(weights, patch, image.dtype)
    n_active = jnp.sum(active)
    rl = jax.tree_util.Partial(deconvolve_windows, num_iter=num_iter, fft_shape=fft_shape,
                               chunk_size=rl_batch)
    if shard:
        rl = sharded_map(rl)
    if background is not None:
        bg = jnp.asarray(background, image.dtype)
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
            jax.debug.callback(report, jnp.minimum((i + 1) * cs, n_active), n_active)
        return add_windows_in_place(num, o, delta * w)

    # montage = sum_i w_i x_i / sum_i w_i with x_i = image where patch i passes through, so
    # it equals image + sum_active w_i (rl_i - image) / sum_i w_i: the loop visits the active
    # steps only (a traced trip count) and the weight sum is one scatter outside it.
    # (in place, and never materialising n copies of w: 1 GB at 8192^2; XLA constant-folds a
    # scatter of constants here, which took minutes to compile at 2048^2)
    den = add_windows_in_place(jnp.zeros(image.shape, image.dtype), origins, w)
    num = jax.lax.fori_loop(0, (n_active + cs - 1) // cs, step,
                            jnp.zeros(image.shape, image.dtype))
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
            (``rl_batch``, None: :func:`default_chunk_size`). The output depends on neither.
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


def seam_score(image, origins, *, patch=84, band=4):
    """Patch-boundary artefact (Fig. 9) as a number: gradient across borders / nearby gradient.

    For every patch border strictly inside the image (lines ``origin`` and ``origin + patch``
    of the grid), the mean ``|x[r] - x[r - 1]|`` across the border line is divided by the
    mean absolute gradient across the parallel lines up to ``band`` px on either side that
    are not borders themselves (the same content, inside the patches). About 1 means no
    visible seams; a rectangular montage of independently deconvolved patches scores higher.

    Args:
        image: (H, W) montage.
        origins: (n, 2) corners of the grid that produced it.
        patch: static patch size.
        band: static half-width in px of the comparison band.

    Returns:
        Python float ratio.
    """
    x = np.asarray(check_float_array(image, "image", ndim=2), np.float64)
    o = np.asarray(origins)
    across, inside = [], []
    for axis in (0, 1):
        g = np.abs(np.diff(x, axis=axis))  # index b - 1: the step between lines b - 1 and b
        g = g if axis == 0 else g.T
        n = x.shape[axis]
        borders = {int(v) for v in np.concatenate([o[:, axis], o[:, axis] + patch])} - {0, n}
        for b in sorted(borders):
            across.append(g[b - 1])
            near = [b + d for d in range(-band, band + 1)
                    if d and 0 < b + d < n and b + d not in borders]
            inside.extend(g[j - 1] for j in near)
    if not across:
        raise ValueError(f"no patch border lies inside an image of shape {x.shape!r}.")
    return float(np.mean(np.concatenate(across)) / np.mean(np.concatenate(inside)))
