"""A microscope's optics as a JSON file: calibrated once (`lbdvd calibrate`), passed to every restore.

    {"kind": "lbdvd-optics", "version": 1, "wavelength_um": 0.451, "na": 0.5, "n": 1.0,
     "pixel_um": 0.65, "calibration": {...}}

`load_optics` refuses a file that does not parse or holds impossible values (NA >= n, a
non-positive wavelength or pixel) with the file and the field named; `save_optics` never
replaces a file without `overwrite=True` and writes atomically. `TRAINED_OPTICS` are the optics
the shipped estimator was trained for (BBBC006: Hoechst, 20x/0.5 air, 0.65 µm pixels);
`optics_mismatch` says which fields of other optics differ from them.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile

from lbdvd_jax.errors import InputError
from lbdvd_jax.optics import Optics

__all__ = ["FIELDS", "TRAINED_OPTICS", "load_optics", "optics_mismatch", "save_optics"]

FIELDS = ("wavelength_um", "na", "n", "pixel_um")
TRAINED_OPTICS = Optics()


def save_optics(path, optics: Optics, *, calibration: dict | None = None, overwrite: bool = False):
    """Write `optics` (validated) as JSON; `calibration` records how it was measured."""
    optics = Optics(**{f: float(getattr(optics, f)) for f in FIELDS}).validate()
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"optics file: {path} exists; pass overwrite=True (--overwrite) to replace it")
    doc = {"kind": "lbdvd-optics", "version": 1, **{f: float(getattr(optics, f)) for f in FIELDS}}
    if calibration:
        doc["calibration"] = calibration
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_optics(path) -> Optics:
    """The `Optics` of a JSON file written by `save_optics` (or by hand with the same keys).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not an optics file, a missing or non-numeric field, or impossible
            optics; the message names the file, the field and the fix.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"optics file: {path} does not exist; write one with `lbdvd calibrate`")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"optics file: {path.name} is not JSON ({err}); write it with `lbdvd calibrate`") from None
    if not isinstance(doc, dict) or doc.get("kind", "lbdvd-optics") != "lbdvd-optics":
        raise InputError(f"optics file: {path.name} is not an lbdvd optics file (expected an object with "
                         f"{', '.join(FIELDS)})")
    values = {}
    for f in FIELDS:
        v = doc.get(f, getattr(TRAINED_OPTICS, f) if f == "pixel_um" else None)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"optics file: {path.name}: {f} must be a finite number, got {v!r}")
        values[f] = float(v)
    try:
        return Optics(**values).validate()
    except ValueError as err:
        raise InputError(f"optics file: {path.name}: {err}") from None


def optics_mismatch(optics: Optics, reference: Optics = TRAINED_OPTICS, *, rtol: float = 0.02) -> list[str]:
    """Fields of `optics` that differ from `reference` by more than `rtol`, as 'name a vs b'."""
    out = []
    for f in FIELDS:
        a, b = float(getattr(optics, f)), float(getattr(reference, f))
        if abs(a - b) > rtol * abs(b):
            out.append(f"{f} {a:g} vs {b:g}")
    return out
