"""The `lbdvd` command's checks: every input, output and option is validated before any work,
and a user mistake becomes one `UsageError` line naming the option or file and the fix."""

from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")

__all__ = ["MAX_ITERATIONS", "TIFF_SUFFIXES", "UsageError", "pool_option"]


class UsageError(Exception):
    """A mistake in the command line or its files, reported as one line."""


def _collect_inputs(paths: list[str]) -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in TIFF_SUFFIXES)
            if not found:
                raise UsageError(f"IN: folder {str(p)!r} holds no .tif/.tiff files")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise UsageError(f"IN: {str(p)!r} does not exist; check the path")
    return files


def _output_paths(inputs, out: str, suffix: str) -> list[pathlib.Path]:
    out_path = pathlib.Path(out)
    if len(inputs) == 1 and out_path.suffix.lower() in TIFF_SUFFIXES:
        return [out_path]
    if out_path.exists() and not out_path.is_dir():
        raise UsageError(f"-o: {out!r} is a file; give a folder for several inputs")
    names = [p.stem + suffix + p.suffix for p in inputs]
    if len(set(names)) != len(names):
        raise UsageError("IN: two inputs have the same file name; restore them into separate "
                         "output folders")
    return [out_path / n for n in names]


def _probe_writable(folder):
    """Create and remove a temporary folder in `folder`: the only test that holds for root, read-only
    mounts and pseudo file systems alike. Nothing is left behind."""
    import tempfile
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lbdvd-probe-", dir=folder))
    except OSError as err:
        raise UsageError(f"-o: cannot create or write files in {str(folder)!r} ({err.strerror}); "
                         "choose another output folder") from None


def _check_outputs(paths, inputs, overwrite: bool):
    for p, src in zip(paths, inputs):
        anc = p.parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise UsageError(f"-o: {str(anc)!r} is a file, not a folder; choose another output")
        if p.resolve() == src.resolve():
            raise UsageError(f"-o: output {str(p)!r} is the input itself; choose another folder")
        if p.exists() and not overwrite:
            raise UsageError(f"-o: {str(p)!r} exists; pass --overwrite (or --skip-existing for "
                             "restore) or choose another output")
        if p.exists() and overwrite and not os.access(p, os.W_OK):
            raise UsageError(f"-o: {str(p)!r} exists and is not writable")
        _probe_writable(anc)


MAX_ITERATIONS = 2000  #: more RL iterations than this only amplify noise (and take minutes per image)


def _check_ranges(args):
    """Every numeric option's range, in CLI words, before any file is read or model loaded."""
    def bad(opt, got, want):
        raise UsageError(f"{opt}: got {got!r}, expected {want}")

    stride = getattr(args, "stride", None)
    if stride is not None and not 1 <= stride <= 84:
        bad("--stride", stride, "1..84 px (42: triangular montage, the paper's; 84: rectangular)")
    context = getattr(args, "context", None)
    if context is not None and not 0 <= context <= 84:
        bad("--context", context, "0..84 px of neighbours around each patch (default 24)")
    for opt, name in (("--pixel-um", "pixel_um"), ("--wavelength-um", "wavelength_um"),
                      ("--na", "na"), ("--n", "n")):
        v = getattr(args, name, None)
        if v is not None and not (np.isfinite(v) and v > 0):
            bad(opt, v, "a positive number")
    na, n = getattr(args, "na", None), getattr(args, "n", None)
    if na is not None and na >= (n if n is not None else 1.0):
        bad("--na", na, f"less than the refractive index --n ({n if n is not None else 1.0})")
    it = getattr(args, "iterations", None)
    if it is not None and max(np.atleast_1d(it)) > MAX_ITERATIONS:
        bad("--iterations", it, f"at most {MAX_ITERATIONS} per level (the paper uses 15)")
    bg = getattr(args, "background", None)
    if bg is not None and bg != "auto":
        try:
            value = float(bg)
        except ValueError:
            bad("--background", bg, "'auto' or a number of counts")
        if not (np.isfinite(value) and value >= 0):
            bad("--background", bg, "'auto' or counts >= 0")


def _check_values(data, name):
    """NaN/Inf and negative pixels are refused up front, naming the file."""
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise UsageError(f"IN: {name} holds NaN or Inf pixels; replace them (e.g. with 0) "
                             "and save it again")
        if data.size and data.min() < 0:
            raise UsageError(f"IN: {name} has negative pixels (min {float(data.min()):g}); "
                             "restore needs non-negative intensities: clip at 0")


def _read_one_plane(args, why):
    """The single-plane TIFF of `args.input`, its values checked; stacks refused with `why`."""
    from lbdvd_jax import io
    img = io.read_tiff(args.input, default_pixel_um=args.pixel_um)
    name = pathlib.Path(args.input).name
    if _planes(img.data).shape[0] > 1:
        raise UsageError(f"IN: {name} holds {_planes(img.data).shape[0]} planes; {why}")
    _check_values(img.data, name)
    return img, name


def _planes(data):
    return data.reshape((-1,) + data.shape[-2:])


def _iterations(text):
    """`--iterations`: an int, or 11 comma-separated ints (one per defocus level)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 11 comma-separated ints, got {text!r}")
    if any(v < 0 for v in values) or len(values) not in (1, 11):
        raise argparse.ArgumentTypeError(f"expected an int >= 0 or 11 comma-separated ints >= 0 "
                                         f"(one per level 0..10), got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def pool_option(args):
    """`restore`'s pool argument of --pool / --no-pool."""
    return False if args.no_pool or args.pool == "none" else args.pool
