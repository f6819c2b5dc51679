"""OME-Zarr (NGFF 0.4 and 0.5) and large TIFFs as lazy dask arrays, and a resumable OME-Zarr writer.

Reading: `open_lazy(path)` opens an OME-Zarr image group (its first multiscale's full-
resolution dataset, the path read from the metadata) or a TIFF through tifffile's zarr
interface, without loading pixels, and says which axes are restored: (y, x) planes, a (z, y, x)
or (t, y, x) stack of planes restored one by one; one channel is taken from a singleton 'c'
axis, more channels (or both time and z) are refused with the fix.

Writing: `OmeZarrWriter` creates an NGFF 0.5 group (zarr v3) with the input's axes, scale and
chunking: the restored image (s0), the defocus level map as an NGFF label image
(labels/defocus_levels: per pixel, 11 = bg), the per-patch maps (lbdvd/levels, z_um,
certainty, psf_z_um) and, for continuous defocus, the depth surface (lbdvd/depth_um). Blocks
are written as whole chunks and each finished block sets its own one-element marker
(lbdvd/done), so an interrupted run resumes where it stopped; the group is marked complete
(attribute lbdvd.complete) only after the last block.

References:
    J. Moore et al., "OME-NGFF", Nature Methods 18 (2021); NGFF specification 0.4 / 0.5.
"""

from __future__ import annotations

import json
import pathlib
from typing import NamedTuple

import numpy as np

from lbdvd_jax.errors import InputError

__all__ = ["LazyImage", "OmeZarrWriter", "is_ome_zarr", "open_lazy"]

ZARR_SUFFIXES = (".zarr", ".ome.zarr")


class LazyImage(NamedTuple):
    """A lazily opened image.

    Attributes:
        data: dask array, the full stored array.
        planes: dask array (H, W) or (B, H, W) of what is restored (singleton axes dropped).
        axes: the stored axes, e.g. "yx", "zyx", "tczyx".
        scale: per stored axis (µm for space axes where known, else 1).
        chunks: the stored chunk shape.
        pixel_um: y/x pixel size in µm, or None when the file says nothing.
        ngff_version: "0.4" / "0.5" for OME-Zarr, None for a TIFF.
        units: per stored axis unit (or None).
    """

    data: object
    planes: object
    axes: str
    scale: tuple
    chunks: tuple
    pixel_um: float | None
    ngff_version: str | None
    units: tuple


def is_ome_zarr(path) -> bool:
    """True for a path that names (or would name) a zarr store."""
    p = str(path).rstrip("/")
    return p.endswith(ZARR_SUFFIXES) or (pathlib.Path(p) / "zarr.json").exists() or (
        pathlib.Path(p) / ".zattrs").exists()


_UNIT_UM = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "meter": 1e6}


def _multiscales(attrs):
    if "ome" in attrs and "multiscales" in attrs["ome"]:
        return attrs["ome"]["multiscales"], str(attrs["ome"].get("version", "0.5"))
    if "multiscales" in attrs:
        ms = attrs["multiscales"]
        return ms, str(ms[0].get("version", "0.4"))
    return None, None


def _planes(data, axes):
    """(H, W) / (B, H, W) view of `data` with `axes`, or ValueError naming the refused axis."""
    sizes = dict(zip(axes, data.shape))
    if not axes.endswith("yx"):
        raise InputError(f"axes: the last two axes must be y, x; got {axes!r}")
    index = []
    stack = None
    for ax in axes[:-2]:
        n = sizes[ax]
        if n == 1:
            index.append(0)
        elif ax == "c":
            raise InputError(f"axes: {n} channels; lbdvd restores one channel of wide-field intensity. "
                             "Write the channel to restore as its own image (or pass "
                             "restore_dask(array[c]) in Python)")
        elif stack is not None:
            raise InputError(f"axes: both {stack!r} ({sizes[stack]}) and {ax!r} ({n}) are longer than 1; "
                             "lbdvd restores planes one by one along one axis: split the image first")
        else:
            stack = ax
            index.append(slice(None))
    return data[tuple(index)]


def open_lazy(path) -> LazyImage:
    """Open an OME-Zarr image or a TIFF lazily (module docstring).

    Raises:
        FileNotFoundError: no such path.
        ValueError: a zarr store without NGFF multiscales metadata, an unreadable file, or axes
            that cannot be restored (the message names the axis and the fix).
    """
    import dask.array as da
    import zarr

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IN: {str(path)!r} does not exist; check the path")
    if path.is_dir():
        try:
            group = zarr.open_group(str(path), mode="r")
        except Exception as err:
            raise InputError(f"IN: {path.name} is not a zarr group ({type(err).__name__}); expected an "
                             "OME-Zarr image (NGFF 0.4 or 0.5)") from None
        ms, version = _multiscales(dict(group.attrs))
        if not ms:
            raise InputError(f"IN: {path.name} is a zarr store without OME-NGFF multiscales metadata; "
                             "write it as OME-Zarr (e.g. ome-zarr-py's write_image) or pass a TIFF")
        first = ms[0]
        ds = first["datasets"][0]
        arr = group[ds["path"]]
        axes_meta = first.get("axes") or [{"name": n} for n in "tczyx"[-arr.ndim:]]
        axes = "".join((a["name"] if isinstance(a, dict) else a)[0] for a in axes_meta).lower()
        units = tuple(a.get("unit") if isinstance(a, dict) else None for a in axes_meta)
        scale = [1.0] * arr.ndim
        for t in ds.get("coordinateTransformations", []):
            if t.get("type") == "scale":
                scale = [float(v) for v in t["scale"]]
        data = da.from_zarr(arr)
        chunks = tuple(arr.chunks)
        unit = units[-1]
        pixel_um = scale[-1] * _UNIT_UM[unit] if unit in _UNIT_UM else None
    else:
        import tifffile

        from lbdvd_jax.io import read_tiff_metadata

        try:
            store = tifffile.imread(str(path), aszarr=True)
            arr = zarr.open(store, mode="r")
        except Exception as err:
            raise InputError(f"IN: {path.name} is not a readable TIFF ({type(err).__name__}: {err})") from None
        if isinstance(arr, zarr.Group):  # pyramidal TIFF: level 0
            arr = arr["0"]
        pixel_um, axes = read_tiff_metadata(path)
        axes = axes.lower().replace("q", "z").replace("i", "z")
        if len(axes) != arr.ndim or "s" in axes:
            raise InputError(f"IN: {path.name}: axes {axes!r} (colour samples or an unknown layout); "
                             "save grey-level planes")
        data = da.from_zarr(arr)
        chunks = tuple(arr.chunks)
        scale = tuple([1.0] * (arr.ndim - 2) + [pixel_um or 1.0] * 2)
        units = tuple([None] * (arr.ndim - 2) + (["micrometer"] * 2 if pixel_um else [None, None]))
        version = None
    if data.dtype.kind not in "uif":
        raise InputError(f"IN: {path.name} has dtype {data.dtype}; expected grey-level counts")
    planes = _planes(data, axes)
    return LazyImage(data, planes, axes, tuple(scale), chunks, pixel_um, version, units)


def _axes_meta(axes, units):
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    out = []
    for a, u in zip(axes, units):
        d = {"name": a, "type": kinds.get(a, "space")}
        if u:
            d["unit"] = u
        elif kinds.get(a) == "space" and a in "yx":
            d["unit"] = "micrometer"
        out.append(d)
    return out


class OmeZarrWriter:
    """A resumable NGFF 0.5 output group (module docstring).

    Args:
        path: the output store (a folder; `.ome.zarr` by convention).
        like: the input's `LazyImage` (axes, scale, chunking, units).
        dtype: stored dtype of the restored image.
        blocks: (B, nr, nc) shape of the block grid (one marker per block).
        info: JSON-able description of the run (input, options); a resume must match it.
        resume: reopen an incomplete store with the same `info` instead of creating one.
        overwrite: replace an existing store.
    """

    def __init__(self, path, like: LazyImage, *, dtype, blocks, info: dict, resume=False, overwrite=False):
        import zarr

        self.path = pathlib.Path(path)
        exists = self.path.exists()
        if exists and not (resume or overwrite):
            raise FileExistsError(f"-o: {self.path} exists; pass --overwrite to replace it or --resume "
                                  "to finish an interrupted run")
        self.info = json.loads(json.dumps(info))
        if exists and resume:
            group = zarr.open_group(str(self.path), mode="r+")
            meta = dict(group.attrs).get("lbdvd", {})
            if meta.get("info") != self.info:
                raise InputError(f"--resume: {self.path} was written by another run (input or options "
                                 "differ); rerun with the same options or pass --overwrite")
            self.group = group
            return
        if exists:
            import shutil

            shutil.rmtree(self.path)
        group = zarr.open_group(str(self.path), mode="w-", zarr_format=3)
        space = [a for a in like.axes]
        group.attrs["ome"] = {"version": "0.5", "multiscales": [{
            "name": self.path.name.split(".")[0], "axes": _axes_meta(space, like.units),
            "datasets": [{"path": "s0", "coordinateTransformations": [
                {"type": "scale", "scale": [float(s) for s in like.scale]}]}],
        }]}
        # one plane per chunk along stack axes: blocks of different planes never share a chunk
        chunks = (1,) * (len(like.axes) - 2) + tuple(min(c, s) for c, s in zip(like.chunks[-2:], like.data.shape[-2:]))
        group.create_array("s0", shape=like.data.shape, chunks=chunks, dtype=dtype, fill_value=0)
        labels = group.create_group("labels")
        labels.attrs["ome"] = {"version": "0.5", "labels": ["defocus_levels"]}
        lv = labels.create_group("defocus_levels")
        lv.attrs["ome"] = {"version": "0.5", "image-label": {
            "version": "0.5", "source": {"image": "../../"},
            "colors": [{"label-value": 11, "rgba": [0, 0, 0, 0]}]}, "multiscales": [{
                "name": "defocus_levels", "axes": _axes_meta(space, like.units),
                "datasets": [{"path": "s0", "coordinateTransformations": [
                    {"type": "scale", "scale": [float(s) for s in like.scale]}]}]}]}
        lv.create_array("s0", shape=like.data.shape, chunks=chunks, dtype="uint8", fill_value=11)
        extra = group.create_group("lbdvd")
        extra.create_array("done", shape=tuple(blocks), chunks=(1,) * len(blocks), dtype="uint8", fill_value=0)
        group.attrs["lbdvd"] = {"complete": False, "info": self.info}
        self.group = group

    def done(self) -> np.ndarray:
        """(B, nr, nc) bool: blocks already written."""
        return np.asarray(self.group["lbdvd/done"][...]).astype(bool)

    def write_maps(self, maps: dict, attrs: dict):
        """The per-patch maps (small NumPy arrays) and their description."""
        extra = self.group["lbdvd"]
        for name, value in maps.items():
            value = np.asarray(value)
            if name in extra:
                del extra[name]
            extra.create_array(name, shape=value.shape, dtype=value.dtype, chunks=value.shape)[...] = value
        extra.attrs.update(json.loads(json.dumps(attrs)))

    def depth_array(self, shape, chunks):
        """The lbdvd/depth_um array (created on first use)."""
        extra = self.group["lbdvd"]
        if "depth_um" not in extra:
            extra.create_array("depth_um", shape=shape, chunks=chunks, dtype="float32", fill_value=np.nan)
        return extra["depth_um"]

    def finish(self):
        meta = dict(self.group.attrs)["lbdvd"]
        meta["complete"] = True
        self.group.attrs["lbdvd"] = meta


def write_block(path, index, region, image, levels, depth):
    """Write one finished block (whole chunks) and then its marker (runs in a worker)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group["s0"][region] = image
    group["labels/defocus_levels/s0"][region] = levels
    if depth is not None:
        group["lbdvd/depth_um"][region] = depth
    group["lbdvd/done"][index] = 1
    return 1
