"""`lbdvd demo`: restore bundled real BBBC006 images, offline, with the shipped defocus estimator.

Two cases, both on field a01 of BBBC006 (bundled in `lbdvd_jax/data/`):

(a) the REAL out-of-focus plane z=00 with its real in-focus partner as reference. That plane is
    nominally 32 µm from focus (the Eq. 2 fit says about 40 µm), beyond the paper's largest
    level (10 = 20 µm), so the classifier should call it level 10 and restoration can only
    partly recover it: the demo reports what it gains, honestly.
(b) the real in-focus field defocused SYNTHETICALLY with a tilted and undulating depth map
    (0-20 µm; every object pixel blurred with the Eq. 2 PSF of its own depth), plus camera
    noise, so one image holds many levels: the paper's motivating case.

Outputs go to a folder (default ./lbdvd_output) under fixed names; existing files there are
never replaced unless `overwrite=True` (`--overwrite`), and the check happens before any work.
"""

from __future__ import annotations

import importlib.resources
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.data import OFFSET, add_camera_noise
from lbdvd_jax.optics import Optics
from lbdvd_jax.psf import psf_stack

OUTPUT_FILES = (
    "real_z00_input.tif", "real_z00_dv.tif", "real_z00_di.tif", "real_z00_levels.tif",
    "synthetic_input.tif", "synthetic_depth_um.tif", "synthetic_dv.tif", "synthetic_di.tif",
    "synthetic_oracle.tif", "synthetic_levels.tif", "demo_summary.json", "demo.png",
)


def bundled_path(name: str) -> pathlib.Path:
    """Path of a bundled demo image: 'a01_infocus.tif' or 'a01_z00.tif'."""
    return pathlib.Path(str(importlib.resources.files("lbdvd_jax") / "data" / name))


def tilted_depth_map(shape, *, z_max_um: float = 20.0, seed: int = 0) -> np.ndarray:
    """A tilted plane plus a smooth undulation, clipped to [0, z_max_um] µm.

    Args:
      shape: (H, W).
      z_max_um: largest defocus in µm (keyword-only).
      seed: phase of the undulation (keyword-only).

    Returns:
      float32 array (H, W) of defocus distances in µm.
    """
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 2)
    tilt = 0.05 + 0.9 * x / max(w - 1, 1)
    wave = 0.12 * np.sin(2 * np.pi * y / (0.9 * h) + phase[0]) * np.cos(np.pi * x / w + phase[1])
    return (z_max_um * np.clip(tilt + wave, 0.0, 1.0)).astype(np.float32)


def blur_same_reflect(image, kernel):
    """'same'-size FFT convolution of `image` with an odd `kernel`, borders reflected."""
    r = kernel.shape[-1] // 2
    padded = jnp.pad(image, r, mode="symmetric")
    return jax.scipy.signal.fftconvolve(padded, kernel, mode="valid")


def depth_variant_blur(image, depth_um, *, optics=Optics(), size: int = 49,
                       offset: float = 0.0):
    """Blurs each object pixel with the Eq. 2 PSF of its own depth (linear in z between levels).

    out = offset + sum_k h_k * (w_k(z) (image - offset)), with w_k the linear interpolation
    weights of z between the 2-µm levels; borders are reflected.

    Args:
      image: (H, W) in-focus image in counts.
      depth_um: (H, W) defocus in µm, within [0, 20].
      optics: `Optics` (keyword-only).
      size: odd kernel size (keyword-only, static).
      offset: camera offset in counts, kept out of the blur (keyword-only).
    """
    image = jnp.asarray(image, jnp.float32)
    psfs = psf_stack(optics, size=size).astype(image.dtype)
    level = jnp.clip(jnp.asarray(depth_um, image.dtype) / 2.0, 0.0, psfs.shape[0] - 1.0)
    signal = image - offset
    out = jnp.zeros_like(image)
    for k in range(psfs.shape[0]):
        weight = jnp.clip(1.0 - jnp.abs(level - k), 0.0, 1.0)
        out = out + blur_same_reflect(signal * weight, psfs[k])
    return out + offset


def synthesize_defocus(image, *, optics=Optics(), level: int | None = None, seed: int = 0,
                       noise: bool = True):
    """Synthetic defocus of an in-focus image: one level everywhere, or the tilted depth map.

    Camera noise is `lbdvd_jax.data.add_camera_noise` (Poisson photoelectrons above the 100-count
    offset, gain 0.33, read noise), less the part the blurred real field still carries.

    Returns:
      (blurred image float32 (H, W), depth map in µm (H, W)).
    """
    image = np.asarray(image, np.float32)
    if level is None:
        depth = tilted_depth_map(image.shape, seed=seed)
    else:
        depth = np.full(image.shape, 2.0 * level, np.float32)
    blurred = depth_variant_blur(image, depth, optics=optics, offset=OFFSET)
    if noise:
        # the real field already carries camera noise, and blurring keeps sum(psf^2) of it
        psfs = psf_stack(optics, size=49)
        kept = jnp.sum(psfs**2, axis=(1, 2))
        lev = jnp.clip(jnp.asarray(depth) / 2.0, 0.0, 10.0)
        present = jnp.interp(lev, jnp.arange(11.0), kept)
        blurred = jnp.round(add_camera_noise(jax.random.PRNGKey(seed), blurred, present=present))
    return np.asarray(blurred, np.float32), depth


def save_figure(path, rows, *, titles=("input", "level map", "restored (DV)", "reference")):
    """Writes the demo figure: one row per case, columns input | level map | restored | reference.

    Args:
      path: PNG path (written atomically).
      rows: list of (name, input, level map (rows, cols) or (H, W), restored, reference).
      titles: column titles (keyword-only).

    Returns:
      The path, or None when matplotlib is not installed.
    """
    try:  # the object API: no pyplot, so a notebook user's backend is left alone
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(16, 3.4 * len(rows)))
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for r, (name, inp, lev, out, ref) in enumerate(rows):
        lo, hi = np.percentile(ref, [0.5, 99.8])
        for c, (img, title) in enumerate(zip((inp, lev, out, ref), titles)):
            ax = axes[r, c]
            if c == 1:
                shown = np.ma.masked_equal(np.asarray(lev), 11)
                im = ax.imshow(shown, cmap="viridis", vmin=0, vmax=10, interpolation="nearest",
                               extent=(0, inp.shape[1], inp.shape[0], 0))
                fig.colorbar(im, ax=ax, fraction=0.035, label="level (x2 µm); blank = bg")
            else:
                ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(f"{name}: {title}" if c == 0 else title, fontsize=9)
            ax.set_axis_off()
    fig.tight_layout()
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    tmp.replace(path)
    return path


def _load_model(model_path):
    """The shipped defocus estimator (or `model_path`); an untrained DelpNet, with a warning, if no
    weights ship."""
    import warnings

    from lbdvd_jax.checkpoint import load_delpnet
    try:
        return load_delpnet(model_path), "shipped" if model_path is None else str(model_path)
    except FileNotFoundError:
        if model_path is not None:
            raise
        from flax import nnx

        from lbdvd_jax.model import DelpNet
        warnings.warn("no shipped DelpNet weights found in lbdvd_jax/weights/; using an "
                      "UNTRAINED DelpNet, so the DV levels below are meaningless", UserWarning)
        model = DelpNet(rngs=nnx.Rngs(0))
        model.eval()
        return model, "untrained"


def _scores(reference, image):
    from lbdvd_jax.quality import psnr, ssim
    ref = jnp.asarray(reference, jnp.float32)
    rng = float(ref.max() - ref.min())
    return {"psnr_db": round(float(psnr(ref, jnp.asarray(image, jnp.float32))), 3),
            "ssim": round(float(ssim(ref, jnp.asarray(image, jnp.float32), data_range=rng)), 4)}


def true_patch_levels(depth_um, origins, *, patch: int = 84):
    """Oracle labels: the depth at each patch centre, rounded to the nearest 2-µm level."""
    cy = np.minimum(origins[:, 0] + patch // 2, depth_um.shape[0] - 1)
    cx = np.minimum(origins[:, 1] + patch // 2, depth_um.shape[1] - 1)
    return np.clip(np.rint(np.asarray(depth_um)[cy, cx] / 2.0), 0, 10).astype(np.int32)


def run_demo(output="lbdvd_output", *, overwrite: bool = False, model_path=None,
             figure: bool = True, print_fn=print) -> int:
    """Runs the demo (see the module docstring); returns 0. Raises FileExistsError up front when
    an output exists and `overwrite` is False."""
    from lbdvd_jax.io import read_tiff, write_tiff
    from lbdvd_jax.pipeline import level_map_pixels, restore

    out = pathlib.Path(output)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output: {str(out)!r} is a file; give a folder")
    clash = [n for n in OUTPUT_FILES if (out / n).exists()]
    if clash and not overwrite:
        raise FileExistsError(f"output: {str(out / clash[0])!r} exists; pass --overwrite or "
                              "choose another folder with -o")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model, model_source = _load_model(model_path)
    focus = read_tiff(bundled_path("a01_infocus.tif"), default_pixel_um=0.65)
    real = read_tiff(bundled_path("a01_z00.tif"), default_pixel_um=0.65)
    ref = focus.data.astype(np.float32)
    summary = {"model": model_source, "cases": {}}
    rows = []

    def save(name, data, like=None, **kw):
        write_tiff(out / name, data, like=like, overwrite=overwrite, **kw)

    # (a) the real far-out-of-focus plane
    print_fn("(a) real BBBC006 field a01, plane z=00 (about 32-40 µm from focus), "
             "reference: its in-focus plane")
    z00 = real.data.astype(np.float32)
    dv = restore(z00, model=model, mode="dv")
    di = restore(z00, mode="di")
    case = {"input": _scores(ref, z00), "dv": _scores(ref, dv.image), "di": _scores(ref, di.image),
            "level_counts": np.bincount(np.asarray(dv.levels).ravel(), minlength=12).tolist()}
    summary["cases"]["real_z00"] = case
    save("real_z00_input.tif", real.data, like=real)
    save("real_z00_dv.tif", np.asarray(dv.image), like=real)
    save("real_z00_di.tif", np.asarray(di.image), like=real)
    lev_a = level_map_pixels(dv.levels, z00.shape).astype(np.uint8)
    save("real_z00_levels.tif", lev_a)
    rows.append(("real z=00", z00, dv.levels, np.asarray(dv.image), ref))

    # (b) synthetic depth-variant defocus of the in-focus field
    print_fn("(b) the same in-focus field, defocused synthetically with a tilted + undulating "
             "depth map (0-20 µm) and camera noise")
    synth, depth = synthesize_defocus(ref, seed=0)
    truth = true_patch_levels(depth, dv.origins)
    res = {m: restore(synth, model=model, mode=m, levels=truth if m == "oracle" else None)
           for m in ("dv", "di", "oracle", "soft")}
    pred = np.asarray(res["dv"].levels).ravel()
    fg = pred != 11
    case = {"input": _scores(ref, synth)}
    case.update({m: _scores(ref, r.image) for m, r in res.items()})
    case["level_accuracy_fg"] = round(float(np.mean(pred[fg] == truth[fg])), 3) if fg.any() else None
    case["level_within_1_fg"] = (round(float(np.mean(np.abs(pred[fg] - truth[fg]) <= 1)), 3)
                                 if fg.any() else None)
    case["bg_patches"] = int((~fg).sum())
    summary["cases"]["synthetic_tilt"] = case
    like = focus._replace(data=focus.data)
    save("synthetic_input.tif", synth, like=like)
    save("synthetic_depth_um.tif", depth.astype(np.float32), pixel_um=0.65)
    for m in ("dv", "di", "oracle"):
        save(f"synthetic_{m}.tif", np.asarray(res[m].image), like=like)
    save("synthetic_levels.tif", level_map_pixels(res["dv"].levels, ref.shape).astype(np.uint8))
    rows.append(("synthetic tilt", synth, res["dv"].levels, np.asarray(res["dv"].image), ref))

    # report
    print_fn(f"{'case':16s} {'method':7s} {'PSNR dB':>8s} {'SSIM':>7s}   (vs the in-focus plane;"
             " PSNR peak 65535, SSIM range = reference range)")
    for cname, c in summary["cases"].items():
        for m in ("input", "di", "dv", "oracle", "soft"):
            if m in c:
                print_fn(f"{cname:16s} {m:7s} {c[m]['psnr_db']:8.2f} {c[m]['ssim']:7.4f}")
    a, b = summary["cases"]["real_z00"], summary["cases"]["synthetic_tilt"]
    print_fn(f"real z00: estimated levels (0..10, bg) {a['level_counts']}; DV gains "
             f"{a['dv']['psnr_db'] - a['input']['psnr_db']:+.2f} dB, DI "
             f"{a['di']['psnr_db'] - a['input']['psnr_db']:+.2f} dB (the plane is beyond level 10)")
    print_fn(f"synthetic: DV gains {b['dv']['psnr_db'] - b['input']['psnr_db']:+.2f} dB "
             f"(oracle {b['oracle']['psnr_db'] - b['input']['psnr_db']:+.2f}, soft "
             f"{b['soft']['psnr_db'] - b['input']['psnr_db']:+.2f}, DI "
             f"{b['di']['psnr_db'] - b['input']['psnr_db']:+.2f}); level accuracy on "
             f"foreground patches {b['level_accuracy_fg']} (within one level "
             f"{b['level_within_1_fg']})")
    if figure and save_figure(out / "demo.png", rows) is None:
        print_fn("matplotlib is not installed: no demo.png (pip install matplotlib)")
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    tmp = out / ".demo_summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "demo_summary.json")
    print_fn(f"outputs in {out.resolve()}")
    return 0
