"""What the napari plugin does to layers, without Qt: check a layer, restore it, build the result layers.

`check_layer` says in one sentence why a layer cannot be restored (RGB, labels, a volume, an
image smaller than a patch), `restore_layer_data` runs `restore` (or `restore_dask` for a
dask-backed layer) on a 2-D image or a (B, H, W) stack, block by block so that a progress
callback can report and stop it, and `result_layers` turns the result into napari
`LayerDataTuple`s that keep the source's scale, translate and metadata: the restored image,
the level map as a Labels layer (label = level + 1, so that bg is napari's transparent 0; the
features table gives each label's level and defocus in µm, shown on hover), the per-patch
certainty and, for continuous defocus, the depth surface. The widget (`napari_widget.py`) is a
thin Qt shell around these functions.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lbdvd_jax.constants import BG_LABEL, LEVEL_STEP_UM, NUM_LEVELS, PATCH_SIZE

__all__ = ["LayerOptions", "RESULT_SUFFIXES", "check_layer", "restore_layer_data", "result_layers"]

#: names of the layers the plugin adds, after the source layer's name
RESULT_SUFFIXES = {"image": " restored", "levels": " defocus levels", "certainty": " certainty",
                   "depth": " depth (µm)"}


class LayerOptions(NamedTuple):
    """The widget's settings."""

    mode: str = "dv"
    defocus: str = "levels"
    num_iter: object = None
    weights: str = "triangular"
    background: object = "auto"
    pixel_um: float = 0.65
    planes: str = "current"  #: stacks: 'current' plane or 'all'
    block: int = 512  #: blocks per progress step (and the granularity of Cancel)


def check_layer(kind: str, data_shape: tuple, *, rgb: bool = False) -> str | None:
    """None when a layer can be restored, else one sentence naming the problem and the fix.

    Args:
        kind: the napari layer type name ('image', 'labels', ...).
        data_shape: the layer's data shape.
        rgb: the image layer shows RGB(A) colour.
    """
    if kind != "image":
        return (f"lbdvd restores grey-level image layers; the selected layer is a {kind} layer. "
                "Select the microscope image")
    if rgb:
        return ("lbdvd restores one fluorescence channel; this layer is RGB. Split the channels "
                "(Layers > Split RGB) and restore one")
    if len(data_shape) not in (2, 3):
        return (f"lbdvd restores 2-D planes or a (planes, y, x) stack; this layer has shape {tuple(data_shape)}. "
                "Select or split one channel / time point")
    if min(data_shape[-2:]) < PATCH_SIZE:
        return (f"the image is {data_shape[-2]}x{data_shape[-1]} px, smaller than one {PATCH_SIZE}x{PATCH_SIZE} "
                "patch; restore a larger field")
    return None


def restore_layer_data(data, *, model, options: LayerOptions, current: int = 0, progress=None):
    """Restore a layer's data (module docstring).

    Args:
        data: (H, W) or (B, H, W) array (NumPy or dask).
        model: the defocus estimator (`load_delpnet()`); unused by mode 'di'.
        options: `LayerOptions`.
        current: the plane shown in the viewer (stacks with options.planes == 'current').
        progress: callable(done, total) called after each block; may raise to stop.

    Returns:
        (planes_index, list of `Restoration`-like results, one per restored plane): planes_index
        is None for a 2-D layer, else the restored plane indices.
    """
    from lbdvd_jax.optics import Optics
    from lbdvd_jax.pipeline import restore

    optics = Optics(pixel_um=float(options.pixel_um))
    stack = np.ndim(data) == 3
    index = None if not stack else ([int(current)] if options.planes == "current" else list(range(data.shape[0])))
    planes = [data] if not stack else [data[i] for i in index]
    results = []
    n = len(planes)
    for k, plane in enumerate(planes):
        def plane_progress(done, total, k=k):
            if progress is not None:
                progress(k * total + done, n * total)
        if hasattr(plane, "dask") and plane.shape[0] * plane.shape[1] > 4096 * 4096:
            from lbdvd_jax.dask_restore import restore_dask

            res = restore_dask(plane, model=model, optics=optics, mode=options.mode, defocus=options.defocus,
                               num_iter=options.num_iter, weights=options.weights,
                               background=options.background, scheduler="threads")
        else:
            arr = np.asarray(plane, np.float32)
            res = restore(arr, model=model, optics=optics, mode=options.mode, defocus=options.defocus,
                          num_iter=options.num_iter, weights=options.weights, background=options.background,
                          block=int(options.block), progress=plane_progress)
        results.append(res)
    return index, results


def _level_labels(levels, shape, stride=42):
    from lbdvd_jax.pipeline import level_map_pixels

    lab = level_map_pixels(np.asarray(levels), shape, stride=stride).astype(np.uint8)
    return np.where(lab == BG_LABEL, 0, lab + 1).astype(np.uint8)


def _patch_map(values, shape, stride=42):
    from lbdvd_jax.pipeline import level_map_pixels

    return level_map_pixels(np.asarray(values, np.float32), shape, stride=stride).astype(np.float32)


def result_layers(source_name: str, index, results, *, scale, translate, metadata, shape, dtype=np.float32):
    """napari `LayerDataTuple`s of `restore_layer_data`'s output (module docstring).

    Args:
        source_name: the source layer's name (results are named after it).
        index, results: `restore_layer_data`'s output.
        scale, translate, metadata: the source layer's (copied onto every result layer).
        shape: the source layer's data shape.
    """
    h, w = shape[-2:]
    stack = index is not None
    if stack and len(index) == 1:  # one plane of a stack: keep its place in the stack
        scale2, translate2 = tuple(scale), tuple(translate)
        translate2 = (translate2[0] + index[0] * scale2[0],) + translate2[1:]
    else:
        scale2, translate2 = tuple(scale), tuple(translate)

    def stackup(arrays):
        arrays = [np.asarray(a) for a in arrays]
        return arrays[0][None] if stack and len(arrays) == 1 else (np.stack(arrays) if stack else arrays[0])

    image = stackup([r.image for r in results])
    levels = stackup([_level_labels(r.levels, (h, w)) for r in results])
    certainty = stackup([_patch_map(np.nan_to_num(r.certainty), (h, w)) for r in results])
    common = {"scale": scale2, "translate": translate2}
    features = {"label": list(range(NUM_LEVELS + 1)),
                "level": ["bg"] + [str(lv) for lv in range(NUM_LEVELS)],
                "defocus_um": [float("nan")] + [LEVEL_STEP_UM * lv for lv in range(NUM_LEVELS)]}
    meta = dict(metadata or {})
    meta["lbdvd"] = {"source": source_name, "planes": index}
    out = [
        (image.astype(np.float32), {"name": source_name + RESULT_SUFFIXES["image"], "metadata": meta,
                                    "colormap": "gray", **common}, "image"),
        (levels, {"name": source_name + RESULT_SUFFIXES["levels"], "features": features, "opacity": 0.5,
                  "metadata": {"lbdvd": {"label": "level + 1 (0 = bg)", "um_per_level": LEVEL_STEP_UM}},
                  **common}, "labels"),
        (certainty, {"name": source_name + RESULT_SUFFIXES["certainty"], "colormap": "magma",
                     "contrast_limits": (0.0, 1.0), "visible": False, "opacity": 0.6, **common}, "image"),
    ]
    if all(getattr(r, "depth_map", None) is not None for r in results):
        depth = stackup([np.asarray(r.depth_map) for r in results])
        out.append((depth.astype(np.float32), {"name": source_name + RESULT_SUFFIXES["depth"],
                                                "colormap": "viridis", "visible": False, "opacity": 0.6,
                                                "contrast_limits": (0.0, 20.0), **common}, "image"))
    return out
