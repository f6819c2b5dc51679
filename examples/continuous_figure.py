"""The continuous-defocus figure: input | estimated depth surface | true depth | restored | truth.

The held-out field a02 blurred on the curved depth surface of `continuous_defocus.py` (Eq. 2
PSF at the exact depth, calibrated camera noise), restored with defocus='continuous'.

    python examples/continuous_figure.py -o docs/continuous_defocus.png
"""

import argparse
import os
import pathlib
import sys
import warnings

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from continuous_defocus import blur_at  # noqa: E402

from lbdvd_jax.checkpoint import load_delpnet  # noqa: E402
from lbdvd_jax.defocus_map import EstimatorDomainWarning  # noqa: E402
from lbdvd_jax.demo import display_stretch  # noqa: E402
from lbdvd_jax.fields import load_infocus_fields, split_fields  # noqa: E402
from lbdvd_jax.pipeline import restore  # noqa: E402
from lbdvd_jax.quality import psnr  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", default=os.environ.get("LBDVD_INFOCUS", "../shared/data/real/bbbc006/infocus"))
    ap.add_argument("-o", "--output", default="docs/continuous_defocus.png")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", EstimatorDomainWarning)
    from matplotlib.figure import Figure

    fields, names = load_infocus_fields(args.fields)
    field = fields[split_fields(names, seed=0)["test"][0]]
    h, w = field.shape
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
    depth = (20.0 * np.clip(0.5 + 0.5 * np.sin(np.pi * (xx - 0.5)) * np.cos(np.pi * (yy - 0.5) * 0.8),
                            0, 1)).astype(np.float32)
    img = blur_at(field, depth, seed=7)
    model = load_delpnet()
    con = restore(img, model=model, defocus="continuous")
    lev = restore(img, model=model)
    ref = jnp.asarray(field)
    db = {k: float(psnr(ref, jnp.asarray(v))) for k, v in (("input", img), ("continuous", con.image),
                                                          ("levels", lev.image))}
    lo, hi = np.percentile(field, [0.5, 99.8])
    fig = Figure(figsize=(21, 3.8))
    axes = fig.subplots(1, 5)
    panels = [(f"input — PSNR {db['input']:.2f} dB", display_stretch(img, lo, hi), "gray", (0, 1)),
              ("estimated depth surface (µm)", con.depth_map, "viridis", (0, 20)),
              ("true depth (µm)", depth, "viridis", (0, 20)),
              (f"restored, continuous — {db['continuous']:.2f} dB (levels {db['levels']:.2f})",
               display_stretch(np.asarray(con.image), lo, hi), "gray", (0, 1)),
              ("in-focus truth", display_stretch(field, lo, hi), "gray", (0, 1))]
    for ax, (title, data, cmap, (vmin, vmax)) in zip(axes, panels):
        im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        if cmap == "viridis":
            fig.colorbar(im, ax=ax, fraction=0.035)
    rms = float(np.sqrt(np.nanmean((np.asarray(con.depth_map) - depth) ** 2)))
    fig.text(0.5, 0.01, f"held-out field {names[split_fields(names, seed=0)['test'][0]]}, curved depth "
             f"0-20 µm; surface RMS error over the field {rms:.2f} µm; grey: square-root stretch",
             ha="center", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70)
    print(f"wrote {out}: PSNR input {db['input']:.2f}, levels {db['levels']:.2f}, continuous "
          f"{db['continuous']:.2f} dB; surface RMS {rms:.2f} µm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
