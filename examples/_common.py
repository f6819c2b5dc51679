"""Plumbing shared by the example scripts: the estimator and the BBBC006 fields, JSON out.

The scripts put their own folder first on `sys.path` and import this module by name, as
`benchmarks/` does with its `_common.py`.
"""

import json
import os
import pathlib
import warnings

#: in-focus BBBC006 fields (train a03-a07, val a01, test a02 by `fields.split_fields`)
DEFAULT_FIELDS = os.environ.get("LBDVD_INFOCUS", "../shared/data/real/bbbc006/infocus")


def add_model_and_fields(ap, *, model=True):
    """--model (estimator weights; default the shipped one) and --fields on an ArgumentParser."""
    if model:
        ap.add_argument("--model", default=None, help="estimator weights (.npz); default the shipped one")
    ap.add_argument("--fields", default=DEFAULT_FIELDS, help="folder of in-focus BBBC006 fields")


def estimator_and_fields(args, *, quiet=True):
    """(model, fields, names, split) for `args.model` / `args.fields`; with `quiet` the
    estimator's domain warnings are silenced (the scripts measure, they do not advise)."""
    from lbdvd_jax.checkpoint import load_delpnet
    from lbdvd_jax.defocus_map import EstimatorDomainWarning
    from lbdvd_jax.fields import load_infocus_fields, split_fields

    if quiet:
        warnings.simplefilter("ignore", EstimatorDomainWarning)
    model = load_delpnet(getattr(args, "model", None))
    fields, names = load_infocus_fields(args.fields)
    return model, fields, names, split_fields(names, seed=0)


def write_result(result, path, *, summary=None):
    """Write `result` as indented JSON to `path` when one is given (through a temporary file
    renamed into place: an interrupted run leaves no half-written file), then print `summary`
    (default: `result`) as one JSON line, the scripts' last line."""
    if path:
        path = pathlib.Path(path)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)
    print(json.dumps(result if summary is None else summary))


def centred_kernel(psf, grid):
    """`psf` (odd side, float64, unit sum) zero-padded to (grid, grid) with its centre at (0, 0):
    its FFT is the PSF's transfer function, phase-free for a symmetric PSF."""
    import numpy as np

    psf = np.asarray(psf, np.float64)
    size = psf.shape[-1]
    padded = np.zeros((grid, grid))
    padded[:size, :size] = psf / psf.sum()
    return np.roll(padded, (-(size // 2), -(size // 2)), (0, 1))


def blur_at(field, depth, seed):
    """An in-focus field blurred by the Eq. 2 PSF at a per-pixel depth map (µm; interpolated on
    a fine 0.25 µm grid) with camera noise as calibrated on BBBC006 (less the part the field
    already carries)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lbdvd_jax.camera import OFFSET, add_camera_noise
    from lbdvd_jax.optics import Optics
    from lbdvd_jax.psf import psf_stack
    from lbdvd_jax.synthesis import blur_same_reflect

    zs = np.arange(0.0, 20.25, 0.25)
    psfs = psf_stack(Optics(), jnp.asarray(zs), size=49)
    signal = jnp.asarray(field - OFFSET, jnp.float32)
    idx = np.clip(depth / 0.25, 0, len(zs) - 1)
    out = jnp.zeros_like(signal)
    for k in np.unique(np.concatenate([np.floor(idx), np.ceil(idx)])).astype(int):
        w = np.clip(1.0 - np.abs(idx - k), 0.0, 1.0)
        if w.any():
            out = out + blur_same_reflect(signal * jnp.asarray(w, jnp.float32), psfs[k])
    kept = jnp.interp(jnp.asarray(depth), jnp.asarray(zs), jnp.sum(psfs ** 2, axis=(1, 2)))
    noisy = add_camera_noise(jax.random.key(seed), out + OFFSET, present=kept)
    return np.asarray(jnp.clip(jnp.round(noisy), 0, 65535), np.float32)
