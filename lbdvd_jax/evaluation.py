"""The paper's patch-level evaluation (Fig. 8) and an end-to-end timing, as library functions.

Fig. 8 protocol here: held-out in-focus fields are blurred with each level's Eq. 2 PSF (whole
field, reflected borders), given camera noise (`data.add_camera_noise`, the part the real field
already carries subtracted) and rounded; about 45 foreground 84x84 patches per level are drawn
at random positions (patches that the paper's bg rule marks as bg are skipped), each with
`context` pixels of real neighbours; every patch is then restored five ways and its central
84x84 scored against the in-focus patch:

- ``input``: the noisy defocused patch,
- ``dv``: DelpNet's predicted level (bg and level 0 pass through, as in the paper),
- ``dv_oracle``: the true level (level 0 passes through),
- ``dv_soft``: the probability-weighted mixture of the 11 level PSFs (bg passes through),
- ``di``: the level-0 (in-focus) PSF everywhere,
- ``blind``: blind Richardson-Lucy from a mid-range starting PSF (like Matlab's deconvblind).

PSNR uses the 16-bit peak (65535); SSIM is Wang et al. 2004 (`quality.ssim`) with the dynamic
range of each in-focus reference patch (with the 16-bit range every SSIM is > 0.99 on these
dim images, see the module README), and the 16-bit-range SSIM is reported too.
"""

from __future__ import annotations

import functools
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.constants import BG_LABEL, COUNT_SCALE
from lbdvd_jax.constants import PATCH_SIZE as PATCH
from lbdvd_jax.data import add_camera_noise, bg_mask
from lbdvd_jax.errors import InputError
from lbdvd_jax.optics import Optics
from lbdvd_jax.psf import psf_stack
from lbdvd_jax.quality import psnr, ssim
from lbdvd_jax.synthesis import blur_same_reflect

METHODS = ("input", "dv", "dv_oracle", "dv_soft", "di", "blind")
INFOCUS_ENV = "LBDVD_INFOCUS"  #: environment variable naming the folder of in-focus fields


def _split_of(which, folder, seed):
    """(fields, names) of one `data.split_fields` split of the in-focus fields in `folder` (or
    $LBDVD_INFOCUS), or None when neither names a folder."""
    from lbdvd_jax.data import load_infocus_fields, split_fields
    folder = folder or os.environ.get(INFOCUS_ENV)
    if not folder:
        return None
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise InputError(f"fields: {str(folder)!r} is not a folder of in-focus TIFFs (from --fields or "
                         f"${INFOCUS_ENV}); point it at one, or unset it to use the bundled field")
    fields, names = load_infocus_fields(folder)
    if len(names) < 3:
        return fields, names
    idx = split_fields(names, seed=seed)[which]
    return fields[idx], [names[i] for i in idx]


def _bundled_field():
    from lbdvd_jax.io import read_tiff
    from lbdvd_jax.synthesis import bundled_path
    return read_tiff(bundled_path("a01_infocus.tif")).data[None].astype(np.float32), ["a01"]


def heldout_fields(folder=None, *, seed: int = 0):
    """In-focus fields held out from training (the 'test' split of `data.split_fields`).

    Args:
      folder: folder of in-focus TIFFs (default: $LBDVD_INFOCUS, else the bundled field a01).
      seed: split seed, as used in training (keyword-only).

    Returns:
      (fields (F, H, W) float32, names).
    """
    return _split_of("test", folder, seed) or _bundled_field()


def training_fields(folder=None, *, seed: int = 0):
    """In-focus fields of the 'train' split of `data.split_fields` (for tuning, never scoring).

    `folder` defaults to $LBDVD_INFOCUS; without either, the bundled field a01 (smoke runs).

    Returns:
      (fields (F, H, W) float32, names).
    """
    return _split_of("train", folder, seed) or _bundled_field()


_blur_pairs = jax.jit(jax.vmap(jax.vmap(blur_same_reflect, (None, 0)), (0, None)))  # every field x every PSF


def defocused_fields(fields, psfs, *, seed: int = 0):
    """(F, L, H, W) noisy defocused versions of each field at each level (rounded counts)."""
    kept = jnp.sum(psfs**2, axis=(1, 2))
    expected = _blur_pairs(jnp.asarray(fields, jnp.float32), jnp.asarray(psfs, jnp.float32))
    key = jax.random.PRNGKey(seed)
    noisy = add_camera_noise(key, expected, present=kept[None, :, None, None])
    return jnp.clip(jnp.round(noisy), 0.0, COUNT_SCALE)


def sample_windows(fields, noisy, *, per_level: int = 45, context: int = 24, seed: int = 0):
    """Random foreground windows: returns (clean (L,n,84,84), noisy windows (L,n,84+2c,84+2c))."""
    rng = np.random.default_rng(seed)
    f_count, levels, h, w = noisy.shape
    win = PATCH + 2 * context
    clean_out, noisy_out = [], []
    fields = np.asarray(fields)
    noisy = np.asarray(noisy)
    for lev in range(levels):
        cl, nz = [], []
        for _ in range(200 * per_level):
            if len(cl) == per_level:
                break
            f = rng.integers(f_count)
            y, x = rng.integers(0, h - win + 1), rng.integers(0, w - win + 1)
            window = noisy[f, lev, y:y + win, x:x + win]
            centre = window[context:context + PATCH, context:context + PATCH]
            if bool(bg_mask(centre)):
                continue
            cl.append(fields[f, y + context:y + context + PATCH, x + context:x + context + PATCH])
            nz.append(window)
        clean_out.append(np.stack(cl))
        noisy_out.append(np.stack(nz))
    return np.stack(clean_out), np.stack(noisy_out)


@functools.partial(jax.jit, static_argnames=("num_iter", "context"))
def _rl_windows(windows, psfs, background=0.0, iters=None, *, num_iter, context):
    from lbdvd_jax.streaming import deconvolve_windows
    windows = jnp.maximum(windows - background, 0)
    out = deconvolve_windows(windows, psfs, iters, num_iter=num_iter)
    return out[:, context:context + PATCH, context:context + PATCH] + background


def tune_iterations(fields, *, optics=Optics(), candidates=(0, 1, 2, 3, 5, 8, 10, 15),
                    per_level: int = 45, context: int = 24, seed: int = 0, background="auto"):
    """The RL iteration count per defocus level that maximises the mean PSNR gain.

    Each level's patches (the Fig. 8 protocol: blur, camera noise, foreground windows) are
    deconvolved with their TRUE level's PSF for every candidate count; the best count per level
    is a table for `restore(num_iter=...)`. Tune on training fields, evaluate on held-out ones:
    the optimum depends on the noise of the camera and on the structures, not on the model.

    Args:
      fields: (F, H, W) in-focus fields in counts (e.g. the training split).
      optics: `Optics` of the level PSFs (keyword-only, like the rest).
      candidates: iteration counts to try (0 = leave the patch as observed).
      per_level, context, seed: sampling, as in `fig8_evaluation`.
      background: counts subtracted before RL ('auto': the fields' 0.5th percentile).

    Returns:
      {'table': [best count per level], 'candidates': [...], 'gain_db': [[mean PSNR gain per
      candidate] per level]}.
    """
    psfs = psf_stack(optics, size=49)
    noisy = defocused_fields(fields, psfs, seed=seed)
    clean, windows = sample_windows(fields, noisy, per_level=per_level, context=context, seed=seed)
    levels, n = clean.shape[:2]
    flat = windows.reshape((-1,) + windows.shape[2:])
    ref = jnp.asarray(clean.reshape((-1, PATCH, PATCH)))
    true = np.repeat(np.arange(levels), n)
    if isinstance(background, str):
        background = float(np.percentile(np.asarray(fields), 0.5))
    before = np.asarray(psnr(ref, jnp.asarray(flat[:, context:context + PATCH,
                                                    context:context + PATCH])))
    gains = np.zeros((levels, len(candidates)))
    for j, it in enumerate(candidates):
        if int(it) == 0:  # the patch as observed (restore passes 0-iteration patches through)
            continue
        out = _rl_windows(flat, psfs[true], jnp.float32(background), num_iter=int(it),
                          context=context)
        g = np.asarray(psnr(ref, out)) - before
        gains[:, j] = [g[true == lev].mean() for lev in range(levels)]
    best = [int(candidates[j]) for j in gains.argmax(axis=1)]
    return {"table": best, "candidates": [int(c) for c in candidates],
            "gain_db": np.round(gains, 3).tolist()}


@functools.partial(jax.jit, static_argnames=("num_iter",))
def _blind_batch(windows, psf0, num_iter):
    from lbdvd_jax.deconv import blind_richardson_lucy
    return jax.vmap(lambda w: blind_richardson_lucy(w, psf0, num_iter=num_iter).image)(windows)


def _blind_windows(windows, psf0, *, num_iter, context):
    out = _blind_batch(windows, psf0, num_iter)  # the PSF is an argument: one compile per shape
    return out[:, context:context + PATCH, context:context + PATCH]


def _stats(values):
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return {"mean": float(v.mean()), "p25": float(np.percentile(v, 25)),
            "p75": float(np.percentile(v, 75))}


def fig8_evaluation(*, model, fields=None, optics=Optics(), per_level: int = 45,
                    context: int = 24, num_iter: int = 15, seed: int = 0, blind: bool = True,
                    blind_start_level: int = 5, background="auto", iterations=None):
    """PSNR improvement and SSIM per defocus level for the five methods (the paper's Fig. 8).

    Args:
      model: the defocus estimator (`load_delpnet()`) or a paper DelpNet, used by 'dv'.
      fields: (F, H, W) held-out in-focus fields (default `heldout_fields()`).
      optics: `Optics`.
      per_level: patches per level (paper: about 45).
      context: real-neighbour pixels around each 84 px patch for RL (24 = the 20 µm PSF radius).
      num_iter: RL iterations (paper: 15).
      seed: sampling and noise seed.
      blind: also run blind RL.
      blind_start_level: level whose PSF starts blind RL.
      background: counts subtracted before RL and added back ('auto': 0.5th percentile of
        each field), as in `restore`.
      iterations: optional per-level iteration table (`tune_iterations`): adds 'dv_tuned'
        and 'dv_oracle_tuned', the predicted / true level's PSF with that level's count.

    Returns:
      A JSON-ready dict: per-level statistics (mean, 25th, 75th percentile) of the PSNR gain over
      the input (dB), PSNR (dB), SSIM and SSIM ratio (over the input's), per method; DelpNet's
      accuracy on the sampled patches; the settings.
    """
    from lbdvd_jax.model import classify_patches
    t0 = time.perf_counter()
    names = None
    if fields is None:
        fields, names = heldout_fields()
    psfs = psf_stack(optics, size=49)
    noisy = defocused_fields(fields, psfs, seed=seed)
    clean, windows = sample_windows(fields, noisy, per_level=per_level, context=context,
                                    seed=seed)
    levels, n = clean.shape[:2]
    flat = windows.reshape((-1,) + windows.shape[2:])
    ref = jnp.asarray(clean.reshape((-1, PATCH, PATCH)))
    true = np.repeat(np.arange(levels), n)
    c = context
    inp = flat[:, c:c + PATCH, c:c + PATCH]
    labels, probs = classify_patches(model, inp)
    labels = np.asarray(labels)
    if isinstance(background, str):
        if background != "auto":
            raise InputError(f"background: got {background!r}, expected 'auto' or counts")
        background = float(np.percentile(np.asarray(fields), 0.5))
    rl = functools.partial(_rl_windows, background=jnp.float32(background), num_iter=num_iter,
                           context=context)
    passes = (labels == BG_LABEL) | (labels == 0)
    dv_lev = np.where(passes, 0, labels)

    def dv_and_oracle(rl_fn, suffix="", table=None):  # predicted / true level's PSF
        for name, lev, keep in (("dv", dv_lev, passes), ("dv_oracle", true, true == 0)):
            iters = {} if table is None else {"iters": jnp.asarray(table[lev])}
            restored[name + suffix] = jnp.where(keep[:, None, None], inp,
                                                rl_fn(flat, psfs[lev], **iters))

    restored = {"input": jnp.asarray(inp)}
    dv_and_oracle(rl)
    p = jnp.asarray(probs)[:, :levels]
    p = p / jnp.maximum(p.sum(axis=1, keepdims=True), 1e-30)
    restored["dv_soft"] = jnp.where((labels == BG_LABEL)[:, None, None], inp,
                                    rl(flat, jnp.einsum("nl,lij->nij", p, psfs)))
    restored["di"] = rl(flat, jnp.broadcast_to(psfs[0], (flat.shape[0],) + psfs.shape[1:]))
    if iterations is not None:
        table = np.asarray(iterations, np.int32)
        tuned = functools.partial(_rl_windows, background=jnp.float32(background),
                                  num_iter=int(table.max()), context=context)
        dv_and_oracle(tuned, "_tuned", table)
    if blind:
        restored["blind"] = _blind_windows(flat, psfs[blind_start_level], num_iter=num_iter,
                                           context=context)
    rng_ref = jnp.maximum(ref.max(axis=(1, 2)) - ref.min(axis=(1, 2)), 1.0)
    scores = {}
    for m, est in restored.items():
        scores[m] = {"psnr": np.asarray(psnr(ref, est)),
                     "ssim": np.asarray(ssim(ref, est, data_range=rng_ref)),
                     "ssim16": np.asarray(ssim(ref, est))}
    per_level_out = []
    for lev in range(levels):
        sl = slice(lev * n, (lev + 1) * n)
        entry = {"level": lev, "z_um": 2.0 * lev, "n": n,
                 "dv_accuracy": float(np.mean(labels[sl] == lev)),
                 "dv_within_1": float(np.mean(np.abs(labels[sl] - lev) <= 1))}
        for m in restored:
            s = scores[m]
            entry[m] = {"psnr": _stats(s["psnr"][sl]),
                        "psnr_gain": _stats(s["psnr"][sl] - scores["input"]["psnr"][sl]),
                        "ssim": _stats(s["ssim"][sl]),
                        "ssim_ratio": _stats(s["ssim"][sl] / scores["input"]["ssim"][sl]),
                        "ssim16": _stats(s["ssim16"][sl])}
        per_level_out.append(entry)
    return {"protocol": "fig8", "fields": names, "per_level": per_level,
            "background": background,
            "context": context, "num_iter": num_iter, "seed": seed,
            "iterations": None if iterations is None else [int(v) for v in iterations],
            "methods": list(restored), "levels": per_level_out,
            "dv_accuracy": float(np.mean(labels == true)),
            "seconds": round(time.perf_counter() - t0, 2)}


def format_fig8(result) -> str:
    """A plain-text table of the per-level means: PSNR gain (dB) and SSIM per method."""
    methods = [m for m in result["methods"] if m != "input"]
    head = "level  " + "  ".join(f"{m + ' dB':>10}" for m in methods) + "   " + \
        "  ".join(f"{'SSIM ' + m:>12}" for m in ["input"] + methods) + "  acc"
    lines = [head]
    for e in result["levels"]:
        gains = "  ".join(f"{e[m]['psnr_gain']['mean']:10.2f}" for m in methods)
        ss = "  ".join(f"{e[m]['ssim']['mean']:12.3f}" for m in ["input"] + methods)
        lines.append(f"{e['level']:5d}  {gains}   {ss}  {e['dv_accuracy']:.2f}")
    return "\n".join(lines)


def time_restore(*, model, shape=(520, 696), repeats: int = 5, mode: str = "dv", **kwargs):
    """Times `pipeline.restore` on a synthetic-defocus image: compile apart, per stage."""
    from lbdvd_jax.io import read_tiff
    from lbdvd_jax.pipeline import restore_timed
    from lbdvd_jax.synthesis import bundled_path, synthesize_defocus
    base = read_tiff(bundled_path("a01_infocus.tif")).data.astype(np.float32)
    reps = (-(-shape[0] // base.shape[0]), -(-shape[1] // base.shape[1]))
    base = np.tile(base, reps)[: shape[0], : shape[1]]
    image, _ = synthesize_defocus(base, seed=1)
    _, first = restore_timed(image, model=model, mode=mode, **kwargs)
    runs = [restore_timed(image, model=model, mode=mode, **kwargs)[1] for _ in range(repeats)]
    stages = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    return {"shape": list(shape), "first_call_s": first["total"],
            "median_s": stages["total"], "stages_median_s": stages,
            "loadavg_1m": round(os.getloadavg()[0], 2)}
