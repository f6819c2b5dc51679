"""Patch-wise depth-variant deconvolution (paper Section 2.3, Fig. 2(d)).

The geometry, usable on its own so that a classifier can label exactly the patches that are
deconvolved (the deconvolution engine over these pieces is `streaming.py`):

* :func:`patch_grid` -- origins of ``patch``-px patches every ``stride`` px, covering any image
  of at least one patch (the last patch on each axis sits flush with the border);
* :func:`extract_patches` -- each patch with ``context`` px of real neighbours around it
  (zeros, or a reflection, beyond the image), the paper's 110-px window being ``context=13``;
* :func:`triangular_weights` / :func:`rectangular_weights` and :func:`montage` -- a vectorised
  scatter-add of weighted patches normalised by the summed weights;
* :func:`seam_score` -- the patch-boundary artefact of Fig. 9 as a number.

Images smaller than one patch are rejected with a ValueError (pad them first if you must).
"""


import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.errors import InputError
from lbdvd_jax.validate import check_float_array

__all__ = [
    "DEFAULT_CONTEXT", "add_windows_in_place", "extract_patches", "gather_windows", "montage",
    "patch_grid", "rectangular_weights", "scatter_add_windows", "seam_score", "triangular_weights",
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
        raise InputError(f"shape must be (H, W); got {shape!r}.")
    patch, stride = int(patch), int(stride)
    if patch < 1 or not 1 <= stride <= patch:
        raise InputError(f"patch/stride must satisfy 1 <= stride <= patch so that patches tile "
                         f"the image without gaps; got patch={patch!r}, stride={stride!r}. Fix: "
                         f"stride=patch // 2 (triangular) or stride=patch (rectangular).")
    if min(shape) < patch:
        raise InputError(f"image of shape {shape!r} is smaller than one {patch}x{patch} patch. "
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
        raise InputError(f"context must be >= 0 px; got {context!r}.")
    if pad_mode not in _PAD_MODES:
        raise InputError(f"pad_mode must be one of {_PAD_MODES!r}; got {pad_mode!r}.")
    if pad_mode == "reflect" and context >= min(shape):
        raise InputError(f"pad_mode='reflect' needs context < image size; got context={context}"
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


def triangular_weights(*, patch=84, dtype=None):
    """Separable triangular (bilinear) weights, base width = ``patch`` (paper Fig. 2(d)).

    Sampled at pixel centres, ``w(i) = 1 - |i + 1/2 - patch/2| / (patch/2)``, so they are > 0
    everywhere (the image border keeps its value) and sum to 1 at stride ``patch // 2``.
    """
    half = patch / 2.0
    w1 = 1.0 - np.abs(np.arange(patch) + 0.5 - half) / half
    return jnp.asarray(np.outer(w1, w1), dtype=dtype)


def rectangular_weights(*, patch=84, dtype=None):
    """Constant weights: non-overlapping montage at stride ``patch`` (shows seams, Fig. 9)."""
    return jnp.ones((patch, patch), dtype=dtype)


def _weights(weights, patch, dtype):
    if isinstance(weights, str):
        table = {"triangular": triangular_weights, "rectangular": rectangular_weights}
        if weights not in table:
            raise InputError(f"weights must be 'triangular', 'rectangular' or a ({patch}, {patch})"
                             f" array; got {weights!r}.")
        return table[weights](patch=patch, dtype=dtype)
    w = jnp.asarray(weights, dtype=dtype)
    if w.shape != (patch, patch):
        raise InputError(f"weights must have shape ({patch}, {patch}); got {tuple(w.shape)!r}.")
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
        raise InputError(f"no patch border lies inside an image of shape {x.shape!r}.")
    return float(np.mean(np.concatenate(across)) / np.mean(np.concatenate(inside)))
