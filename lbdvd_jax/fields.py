"""Real in-focus fields: focal-plane selection, loading, tiling and train/val/test splits.

The paper (Sec. 2.1) takes the plane of maximum standard deviation of each BBBC006 z-stack as
in focus; splits here keep whole fields (or tiles) apart by default, so no field is scored that
was trained on; `protocol='paper'` reproduces the paper's split of (field, level) images.
"""

import pathlib

import numpy as np

from lbdvd_jax.errors import InputError

__all__ = ["load_infocus_fields", "select_focal_plane", "split_fields", "tile_fields"]


def select_focal_plane(stack):
    """Index of the in-focus plane of a z-stack: the plane of maximum standard deviation.

    Args:
        stack: (z, y, x) array of intensities.

    Returns:
        Python int in [0, z) (the paper's rule, Sec. 2.1).

    Raises:
        ValueError: `stack` is not 3-D or has no planes.
    """
    stack = np.asarray(stack)
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise InputError(f"stack: got shape {stack.shape}, expected a (z, y, x) z-stack with z >= 1")
    return int(np.argmax(stack.reshape(stack.shape[0], -1).astype(np.float64).std(axis=1)))


def load_infocus_fields(folder, *, pattern="*.tif*", exclude=("_cropped",)):
    """Reads the in-focus fields of a folder as one float32 array of counts.

    A file holding a 3-D z-stack contributes its focal plane (`select_focal_plane`).

    Args:
        folder: folder of TIFF files (uint8/uint16/float32; LZW needs `imagecodecs`).
        pattern: glob pattern of the files to read (keyword-only).
        exclude: file names containing any of these substrings are skipped (keyword-only; the
            default skips BBBC006's `_cropped` file, a sub-image of field a01).

    Returns:
        (fields, names): (F, H, W) float32 counts and the F file names, sorted by name.

    Raises:
        FileNotFoundError: `folder` does not exist.
        ValueError: no matching file, an unreadable TIFF, a non-image, or fields of
            different shapes.
    """
    import tifffile  # NumPy-side I/O only

    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder: {str(folder)!r} does not exist or is not a folder; "
                                "pass the folder holding the in-focus TIFFs")
    paths = sorted(p for p in folder.glob(pattern)
                   if p.is_file() and not any(s in p.name for s in exclude))
    if not paths:
        raise InputError(f"folder: {str(folder)!r} holds no file matching {pattern!r} "
                         f"(excluding {exclude!r}); put in-focus TIFFs there or change pattern=")
    fields, names = [], []
    for p in paths:
        try:
            arr = tifffile.imread(p)
        except Exception as err:  # tifffile raises many types for corrupt or foreign files
            raise InputError(f"folder: {p.name!r} is not a readable TIFF ({type(err).__name__}: "
                             f"{err}); remove it or fix it (LZW needs the imagecodecs package)") from None
        arr = np.squeeze(np.asarray(arr))
        if arr.size == 0:
            raise InputError(f"folder: {p.name!r} is not a readable TIFF (no image data); "
                             "remove it or re-save it")
        if arr.ndim == 3:
            arr = arr[select_focal_plane(arr)]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"folder: {p.name!r} holds a {arr.dtype} array of shape {arr.shape}, "
                             "expected a grey-level (y, x) image or (z, y, x) stack")
        fields.append(arr.astype(np.float32))
        names.append(p.name)
    shapes = {f.shape for f in fields}
    if len(shapes) > 1:
        listing = ", ".join(f"{n} {f.shape}" for n, f in zip(names, fields))
        raise InputError(f"folder: fields have different shapes ({listing}); crop them to one shape "
                         "or exclude the odd ones with exclude=")
    return np.stack(fields), names


def tile_fields(fields, *, tiles=(2, 3)):
    """Cuts each field into a grid of spatially disjoint tiles (for region-wise splits).

    Args:
        fields: (F, H, W) array.
        tiles: static (rows, cols) of the grid; the remainder pixels are dropped.

    Returns:
        (tiles_array, source): (F * rows * cols, H // rows, W // cols) and the (F*rows*cols,)
        int index of the field each tile came from.
    """
    fields = np.asarray(fields)
    if fields.ndim != 3:
        raise InputError(f"fields: got shape {fields.shape}, expected (F, H, W)")
    rows, cols = tiles
    f, h, w = fields.shape
    th, tw = h // rows, w // cols
    if th < 1 or tw < 1:
        raise InputError(f"tiles: {tiles!r} is too fine for fields of {h}x{w}")
    t = fields[:, :rows * th, :cols * tw].reshape(f, rows, th, cols, tw).transpose(0, 1, 3, 2, 4)
    return t.reshape(f * rows * cols, th, tw), np.repeat(np.arange(f), rows * cols)


def split_fields(names_or_count, *, fractions=(0.75, 0.15, 0.10), seed=0, protocol="field",
                 num_levels=11):
    """Splits sources into train / val / test.

    Args:
        names_or_count: a sequence of source names (fields or tiles) or their number F.
        fractions: (train, val, test) fractions, summing to 1 (keyword-only).
        seed: seed of the shuffle (keyword-only).
        protocol: 'field' (default): whole sources go to one split each (largest-remainder
            rounding, at least one source per split), so no field appears in two splits.
            'paper': the paper's protocol, the F * num_levels synthetic images (field, level)
            are split, so one field appears in several splits.
        num_levels: number of defocus levels (protocol 'paper' only).

    Returns:
        dict 'train'/'val'/'test' -> for 'field', sorted int index arrays of sources; for
        'paper', (F, num_levels) bool masks of the (field, level) images of each split (pass
        as `level_mask=` to `synth_batch` / `make_eval_set`).

    Raises:
        ValueError: bad fractions, unknown protocol, or fewer sources than splits.
    """
    n = int(names_or_count) if np.isscalar(names_or_count) else len(names_or_count)
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise InputError(f"fractions: got {fractions!r}, expected three non-negative numbers "
                         "summing to 1, e.g. (0.75, 0.15, 0.10)")
    if protocol not in ("field", "paper"):
        raise InputError(f"protocol: got {protocol!r}, expected 'field' or 'paper'")
    units = n if protocol == "field" else n * num_levels
    if units < 3:
        raise InputError(f"names_or_count: {n} source(s) cannot be split three ways; "
                         "use more fields, or tile_fields() to split regions")
    counts = np.floor(fr * units).astype(int)
    for i in np.argsort(-(fr * units - counts))[: units - counts.sum()]:
        counts[i] += 1
    for i in range(3):  # at least one unit per split, taken from the largest
        if counts[i] == 0:
            counts[i], counts[np.argmax(counts)] = 1, counts[np.argmax(counts)] - 1
    order = np.random.default_rng(seed).permutation(units)
    bounds = np.cumsum(counts)[:-1]
    parts = dict(zip(("train", "val", "test"), np.split(order, bounds)))
    if protocol == "field":
        return {k: np.sort(v) for k, v in parts.items()}
    masks = {}
    for k, v in parts.items():
        m = np.zeros(n * num_levels, bool)
        m[v] = True
        masks[k] = m.reshape(n, num_levels)
    return masks
