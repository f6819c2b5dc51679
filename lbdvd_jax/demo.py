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

import json
import pathlib
import time

import jax.numpy as jnp
import numpy as np

from lbdvd_jax.synthesis import (  # noqa: F401 (re-exported: the demo's building blocks)
    blur_same_reflect,
    bundled_path,
    depth_variant_blur,
    synthesize_defocus,
    tilted_depth_map,
    true_patch_levels,
)

OUTPUT_FILES = (
    "real_z00_input.tif", "real_z00_dv.tif", "real_z00_di.tif", "real_z00_levels.tif",
    "synthetic_input.tif", "synthetic_depth_um.tif", "synthetic_dv.tif", "synthetic_di.tif",
    "synthetic_oracle.tif", "synthetic_levels.tif", "demo_summary.json", "demo.png",
)


SCALE_BAR_UM = 50.0  #: length of the figure's scale bar


def display_stretch(img, lo, hi):
    """Square-root display stretch between the reference's 0.5 and 99.8 percentiles: dim nuclei
    stay visible beside bright ones (a linear stretch leaves them black)."""
    return np.sqrt(np.clip((np.asarray(img, np.float32) - lo) / max(hi - lo, 1e-12), 0.0, 1.0))


def demo_figure(rows, *, pixel_um: float = 0.65):
    """The demo figure (a matplotlib `Figure`; no pyplot, so a notebook's backend is left alone).

    One row per case, columns: input | estimated defocus | true defocus | restored (DV) |
    in-focus reference. Image panels carry their PSNR against the reference in the title, a
    square-root grey stretch and a scale bar; depth panels are in µm (bg patches blank), the
    true depth only where it is known (the synthetic case).

    Args:
        rows: list of dicts with keys name, input, input_psnr, depth_um ((rows, cols) or (H, W)
            estimated defocus in µm, NaN = bg), true_depth_um ((H, W) or None), restored,
            restored_psnr, reference.
        pixel_um: pixel size for the scale bar (keyword-only).

    Returns:
        the `Figure`, or None when matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError:
        return None
    fig = Figure(figsize=(19, 3.6 * len(rows)))
    axes = fig.subplots(len(rows), 5, squeeze=False)
    bar_px = SCALE_BAR_UM / pixel_um
    for r, row in enumerate(rows):
        ref = np.asarray(row["reference"], np.float32)
        lo, hi = np.percentile(ref, [0.5, 99.8])
        h, w = ref.shape
        panels = [("input", row["input"], f"{row['input_psnr']:.2f} dB"),
                  ("estimated defocus", row["depth_um"], None),
                  ("true defocus", row.get("true_depth_um"), None),
                  ("restored (DV)", row["restored"], f"{row['restored_psnr']:.2f} dB"),
                  ("in-focus reference", ref, None)]
        for c, (title, img, score) in enumerate(panels):
            ax = axes[r, c]
            ax.set_axis_off()
            if c in (1, 2):
                if img is None:
                    ax.text(0.5, 0.5, "not known\n(real data)", ha="center", va="center",
                            transform=ax.transAxes, fontsize=10, color="0.4")
                    ax.set_title(title, fontsize=10)
                    continue
                shown = np.ma.masked_invalid(np.asarray(img, np.float32))
                im = ax.imshow(shown, cmap="viridis", vmin=0, vmax=20, interpolation="nearest",
                               extent=(0, w, h, 0))
                fig.colorbar(im, ax=ax, fraction=0.035, label="defocus (µm); blank = bg")
            else:
                ax.imshow(display_stretch(img, lo, hi), cmap="gray", vmin=0, vmax=1)
                ax.add_patch(Rectangle((0.04 * w, 0.93 * h), bar_px, 0.015 * h, color="white"))
                ax.text(0.04 * w + bar_px / 2, 0.90 * h, f"{SCALE_BAR_UM:g} µm", color="white",
                        ha="center", va="bottom", fontsize=8)
            label = f"{row['name']}: {title}" if c == 0 else title
            ax.set_title(label + (f" — PSNR {score}" if score else ""), fontsize=10)
    fig.text(0.5, 0.002, "grey panels: square-root stretch between the reference's 0.5 and 99.8 "
             "percentiles; PSNR against the in-focus reference (peak 65535)", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


def save_figure(path, rows, *, pixel_um: float = 0.65):
    """Writes `demo_figure(rows)` to `path` (PNG, atomically); None when matplotlib is missing."""
    fig = demo_figure(rows, pixel_um=pixel_um)
    if fig is None:
        return None
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

        from lbdvd_jax.model import DelpNet, build_module
        warnings.warn("no shipped DelpNet weights found in lbdvd_jax/weights/; using an "
                      "UNTRAINED DelpNet, so the DV levels below are meaningless", UserWarning)
        model = build_module(lambda: DelpNet(rngs=nnx.Rngs(0)))
        model.eval()
        return model, "untrained"


def _scores(reference, image):
    from lbdvd_jax.quality import psnr, ssim
    ref = jnp.asarray(reference, jnp.float32)
    rng = float(ref.max() - ref.min())
    return {"psnr_db": round(float(psnr(ref, jnp.asarray(image, jnp.float32))), 3),
            "ssim": round(float(ssim(ref, jnp.asarray(image, jnp.float32), data_range=rng)), 4)}


def _patch_depth(restoration):
    """(rows, cols) estimated defocus in µm of a `Restoration` (level x 2 µm; NaN = bg)."""
    lev = np.asarray(restoration.levels, np.float32)
    return np.where(lev == 11, np.nan, 2.0 * lev)


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
    rows.append({"name": "real z=00", "input": z00, "input_psnr": case["input"]["psnr_db"],
                 "depth_um": _patch_depth(dv), "true_depth_um": None, "restored": np.asarray(dv.image),
                 "restored_psnr": case["dv"]["psnr_db"], "reference": ref})

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
    rows.append({"name": "synthetic tilt", "input": synth, "input_psnr": case["input"]["psnr_db"],
                 "depth_um": _patch_depth(res["dv"]), "true_depth_um": depth,
                 "restored": np.asarray(res["dv"].image), "restored_psnr": case["dv"]["psnr_db"],
                 "reference": ref})

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
