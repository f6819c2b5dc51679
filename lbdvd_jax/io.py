"""TIFF in and out (tifffile): dtype, axes, pixel size and metadata handling live here.

Everything that touches files is NumPy, not JAX: `read_tiff` returns the stored array untouched
(uint8, uint16 or float32; a 2-D plane or a stack of planes) with its pixel size and the metadata
needed to write a restored image back in the same form; `write_tiff` converts a float result back
to the input's dtype (rounded, clipped with a warning) and writes it atomically (a temporary file
in the output folder, then `os.replace`), never overwriting an existing file unless asked.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import warnings
import xml.etree.ElementTree as ET
from typing import Any, NamedTuple

import numpy as np
import tifffile

from lbdvd_jax.errors import InputError, InputTypeError

SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))

# Length units found in OME (PhysicalSizeXUnit) and ImageJ ('unit') metadata, in micrometres.
_UNIT_UM = {
    "um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3,
    "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6,
}
# Resolution values that image software writes by default without meaning a physical scale.
_PLACEHOLDER_DPI = (1.0, 72.0, 96.0, 300.0)


class TiffImage(NamedTuple):
    """A TIFF as read by `read_tiff`.

    Attributes:
      data: the stored pixels, shape (y, x) or (..., y, x), dtype uint8, uint16 or float32.
      pixel_um: lateral pixel size in µm (from the file, else the caller's default, else None).
      pixel_source: where `pixel_um` came from: 'ome', 'imagej', 'resolution', 'default' or None.
      axes: tifffile's axes string of the stored series, e.g. 'YX', 'ZYX', 'TZYX'.
      compression: the input's compression as a `tifffile.imwrite` argument (None, 'zlib', 'lzw').
      metadata: what `write_tiff(..., like=)` carries to the output (ImageJ/OME/description).
    """

    data: np.ndarray
    pixel_um: float | None
    pixel_source: str | None
    axes: str
    compression: str | None
    metadata: dict


def _unit_um(unit: Any) -> float | None:
    if unit is None:
        return None
    return _UNIT_UM.get(str(unit).strip().lower().replace("\\u00b5", "µ"), None)


def _ome_pixel_um(xml: str) -> float | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("Pixels") and "PhysicalSizeX" in el.attrib:
            scale = _unit_um(el.attrib.get("PhysicalSizeXUnit", "µm"))
            value = float(el.attrib["PhysicalSizeX"])
            if scale is not None and value > 0:
                return value * scale
    return None


def _resolution_pixel_um(page, unit_um: float | None) -> float | None:
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
    if not num or not den:
        return None
    per_unit = num / den  # pixels per resolution unit
    if unit_um is not None:  # ImageJ: resolution is pixels per metadata 'unit'
        return unit_um / per_unit
    runit = page.tags.get("ResolutionUnit")
    runit = int(runit.value) if runit is not None else 2
    if runit == 1 or any(abs(per_unit - d) < 1e-6 for d in _PLACEHOLDER_DPI):
        return None  # no absolute unit, or a software default such as 72 dpi
    if runit not in (2, 3):
        return None
    return (25400.0 if runit == 2 else 10000.0) / per_unit


def read_tiff(path: str | os.PathLike, *, default_pixel_um: float | None = None) -> TiffImage:
    """Reads a 2-D plane or a multi-page stack from a TIFF file.

    Args:
      path: the TIFF file (uncompressed, LZW or zlib/deflate; LZW needs `imagecodecs`).
      default_pixel_um: pixel size in µm used when the file holds none (keyword-only).

    Returns:
      A `TiffImage`; `data` keeps the stored dtype and shape.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: the file is not a readable TIFF, or holds colour (RGB) samples.
      TypeError: the pixel dtype is not uint8, uint16 or float32.

    Examples:
      >>> img = read_tiff("cells.tif", default_pixel_um=0.65)  # doctest: +SKIP
      >>> img.data.shape, img.pixel_um  # doctest: +SKIP
      ((520, 696), 0.65)
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path: {str(path)!r} does not exist; check the file name")
    if path.is_dir():
        raise InputError(f"path: {str(path)!r} is a folder, expected a TIFF file")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            page = tif.pages[0]
            axes = series.axes
            compression = page.compression.name
            colour = page.samplesperpixel > 1
            # 16-bit/float planar samples are stacks saved by tifffile's default (it tags a
            # (3|4, H, W) array RGB), rarely colour: read them as grey planes, saying so
            planar_stack = (colour and page.planarconfig == 2 and data.dtype != np.uint8
                            and axes.startswith("S"))
            meta: dict = {}
            pixel_um = source = None
            if tif.is_ome and tif.ome_metadata:
                pixel_um = _ome_pixel_um(tif.ome_metadata)
                source = "ome" if pixel_um else None
                meta["ome"] = True
            if tif.is_imagej:
                ij = dict(tif.imagej_metadata or {})
                meta["imagej"] = {k: v for k, v in ij.items()
                                  if k in ("unit", "spacing", "finterval", "Info", "Labels")}
                if pixel_um is None:
                    pixel_um = _resolution_pixel_um(page, _unit_um(ij.get("unit")))
                    source = "imagej" if pixel_um else None
            if pixel_um is None and not tif.is_imagej:
                pixel_um = _resolution_pixel_um(page, None)
                source = "resolution" if pixel_um else None
            if not tif.is_ome and not tif.is_imagej and not tif.is_shaped and page.description:
                meta["description"] = page.description
            meta["software"] = page.tags["Software"].value if "Software" in page.tags else None
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as err:  # tifffile raises many types for corrupt or foreign files
        raise InputError(
            f"path: {str(path)!r} is not a readable TIFF ({type(err).__name__}: {err}); "
            "check that the file is complete and is a TIFF (LZW needs the imagecodecs package)"
        ) from None
    if planar_stack:
        warnings.warn(f"{path.name}: {data.shape[0]} planar {data.dtype} samples tagged as colour were "
                      "read as grey planes (save stacks with photometric='minisblack' to say so)",
                      UserWarning, stacklevel=2)
        axes = "Z" + axes[1:]
    elif colour:
        raise InputError(f"path: {str(path)!r} holds colour samples (axes {axes!r}); expected "
                         "grey-level planes: save one channel per file, or a stack with "
                         "tifffile.imwrite(path, stack, photometric='minisblack')")
    if data.dtype not in SUPPORTED_DTYPES:
        raise InputTypeError(f"path: {str(path)!r} has pixel dtype {data.dtype}, expected uint8, uint16 "
                        "or float32; convert it first (e.g. to float32 with tifffile or Fiji)")
    if data.ndim < 2:
        raise InputError(f"path: {str(path)!r} holds a {data.ndim}-D array, expected an image")
    if pixel_um is None and default_pixel_um is not None:
        pixel_um, source = float(default_pixel_um), "default"
    comp = {"NONE": None, "LZW": "lzw"}.get(compression, "zlib")
    return TiffImage(data, pixel_um, source, axes, comp, meta)


def read_tiff_metadata(path: str | os.PathLike) -> tuple[float | None, str]:
    """(pixel size in µm or None, series axes) of a TIFF, without reading its pixels."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        axes = tif.series[0].axes
        pixel_um = None
        if tif.is_ome and tif.ome_metadata:
            pixel_um = _ome_pixel_um(tif.ome_metadata)
        if pixel_um is None and tif.is_imagej:
            pixel_um = _resolution_pixel_um(page, _unit_um(dict(tif.imagej_metadata or {}).get("unit")))
        if pixel_um is None and not tif.is_imagej:
            pixel_um = _resolution_pixel_um(page, None)
    return pixel_um, axes


def check_pixel_size(pixel_um: float | None, optics_pixel_um: float, *, rtol: float = 0.02,
                     name: str = "image") -> bool:
    """Warns when an image's pixel size differs from the optics the model was trained for.

    Args:
      pixel_um: the image's pixel size in µm (None: unknown, no check).
      optics_pixel_um: `Optics.pixel_um` of the model, in µm.
      rtol: relative tolerance (keyword-only).
      name: how to call the image in the warning (keyword-only).

    Returns:
      True when the sizes agree (or `pixel_um` is None), False after warning.
    """
    if pixel_um is None:
        return True
    optics_pixel_um = float(optics_pixel_um)
    if abs(pixel_um - optics_pixel_um) <= rtol * optics_pixel_um:
        return True
    warnings.warn(
        f"{name}: pixel size {pixel_um:.4g} µm differs from the model's optics "
        f"({optics_pixel_um:.4g} µm); DelpNet levels and PSFs assume the latter "
        "(resample the image or pass matching optics)", UserWarning, stacklevel=2)
    return False


def to_dtype(values: np.ndarray, dtype, *, name: str = "image") -> np.ndarray:
    """Converts restored float values to a stored dtype; integers rounded, clipped with a warning.

    Args:
      values: float array.
      dtype: uint8, uint16 or float32.
      name: how to call the image in the warning (keyword-only).
    """
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise InputTypeError(f"dtype: got {dtype}, expected uint8, uint16 or float32")
    values = np.asarray(values)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{name}: holds NaN or Inf; nothing was written")
    if dtype.kind == "f":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    rounded = np.rint(values)
    clipped = int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
    if clipped:
        warnings.warn(f"{name}: {clipped} pixel(s) clipped to the {dtype} range "
                      f"[{info.min}, {info.max}]", UserWarning, stacklevel=2)
    return np.clip(rounded, info.min, info.max).astype(dtype)


def _current_umask() -> int:
    """The process umask, read without changing it (Linux /proc); elsewhere the classic
    set-and-restore, which other threads could observe for a moment."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_tiff(path: str | os.PathLike, data, *, like: TiffImage | None = None,
               pixel_um: float | None = None, overwrite: bool = False,
               compression: str | None = "zlib") -> pathlib.Path:
    """Writes an image atomically, in the dtype, shape and metadata of a source TIFF.

    The file is written to a temporary name in the output folder and renamed into place, so a
    failure never leaves a partial file.

    Args:
      path: output file.
      data: array to write; with `like`, it must have `like.data`'s shape and is converted to its
        dtype (integers rounded and clipped, with a warning when clipping happens).
      like: the `TiffImage` the output stands in for (keyword-only): dtype, shape, pixel size,
        ImageJ/OME metadata, description and compression are carried over.
      pixel_um: pixel size in µm to record (keyword-only; default: `like.pixel_um`).
      overwrite: replace an existing file (keyword-only; default False: FileExistsError).
      compression: used when `like` is None (keyword-only; None, 'zlib' or 'lzw').

    Returns:
      The written path.

    Raises:
      FileExistsError: `path` exists and `overwrite` is False.
      ValueError: shape mismatch with `like`, NaN/Inf values, or an unwritable folder.
      TypeError: unsupported dtype.
    """
    path = pathlib.Path(path)
    data = np.asarray(data)
    if like is not None:
        if data.shape != like.data.shape:
            raise InputError(f"data: shape {data.shape} differs from the input's "
                             f"{like.data.shape}; pass an array of the input's shape")
        data = to_dtype(data, like.data.dtype, name=str(path.name))
        compression = like.compression
        if pixel_um is None:
            pixel_um = like.pixel_um
    elif data.dtype not in SUPPORTED_DTYPES:
        raise InputTypeError(f"data: dtype {data.dtype} is not supported, expected uint8, uint16 or "
                        "float32; convert with io.to_dtype first")
    if path.exists() and not overwrite:
        raise FileExistsError(f"path: {str(path)!r} exists; pass overwrite=True "
                              "(--overwrite) or choose another output")
    folder = path.parent if str(path.parent) else pathlib.Path(".")
    if not folder.is_dir():
        raise InputError(f"path: folder {str(folder)!r} does not exist or is not a folder; "
                         "create it first")
    meta = like.metadata if like is not None else {}
    kwargs: dict[str, Any] = {"photometric": "minisblack"}
    resolution = (1e4 / pixel_um, 1e4 / pixel_um) if pixel_um else None
    if meta.get("imagej") is not None and data.dtype != np.float64:
        ij = dict(meta["imagej"])
        ij.setdefault("axes", like.axes if like is not None else None)
        if ij["axes"] is None:
            ij.pop("axes")
        if resolution:
            ij["unit"] = "um"
            resolution = (1.0 / pixel_um, 1.0 / pixel_um)
        kwargs.update(imagej=True, metadata=ij)
        compression = None  # ImageJ reads only uncompressed hyperstacks reliably
    elif meta.get("ome"):
        om = {"axes": like.axes}
        if pixel_um:
            om.update(PhysicalSizeX=pixel_um, PhysicalSizeY=pixel_um,
                      PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
        kwargs.update(ome=True, metadata=om)
    else:
        kwargs["metadata"] = {}  # tifffile's shaped JSON keeps N-D shapes
        if meta.get("description"):
            kwargs["description"] = meta["description"]
        if resolution:
            kwargs["resolutionunit"] = "CENTIMETER"
    if resolution:
        kwargs["resolution"] = resolution
    if meta.get("software"):
        kwargs["software"] = meta["software"]
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise InputError(f"path: cannot write into {str(folder)!r} ({err.strerror}); "
                         "choose a writable output folder") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp's 0600 -> the usual permissions of a new file
    _PENDING.add(tmp)
    try:
        try:
            tifffile.imwrite(tmp, data, compression=compression, **kwargs)
        except OSError as err:  # disk full, quota, I/O error: one line naming the file
            raise InputError(f"path: writing {str(path)!r} failed ({err.strerror or err}); nothing "
                             "was written: free space or choose another output") from None
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, fails if `path` appeared meanwhile
            except FileExistsError:
                raise FileExistsError(f"path: {str(path)!r} exists; pass overwrite=True") from None
            except OSError:  # file systems without hard links
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        _PENDING.discard(tmp)
    return path


# Temporary files being written right now: an interrupt handler (the `lbdvd` command's) removes
# them before the process ends, so that only complete outputs are ever left on disk.
_PENDING: set = set()


def remove_pending_temporaries() -> None:
    """Delete the temporary files of writes in progress (for signal handlers; never raises)."""
    for tmp in list(_PENDING):
        try:
            os.unlink(tmp)
        except OSError:
            pass
