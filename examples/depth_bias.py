"""Bias of the estimated depth at on- and off-grid depths: does the estimator snap to levels?

Each field is blurred uniformly at z = 0, 1, ..., 20 µm (the Eq. 2 PSF at the exact depth,
camera noise as calibrated on BBBC006) and judged as `restore` judges it (`predict_defocus`:
judging windows, neighbour pooling); the mean expected depth over foreground patches minus the
true depth is the bias. An estimator trained on the 11 levels only puts an off-grid depth on one
level (the bias staircases: about 0 at even z, up to ±1 µm at odd z); one trained with soft
targets at continuous depths (`lbdvd train --continuous-fraction`) should not.

Rows per field (training fields a03-a07, validation a01, test a02), and the RMS bias over the
depths, on- and off-grid apart.

    python examples/depth_bias.py                       # the shipped estimator
    python examples/depth_bias.py --model runs/x/best.npz -o out.json
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import add_model_and_fields, estimator_and_fields, write_result  # noqa: E402
from continuous_defocus import blur_at  # noqa: E402

from lbdvd_jax.constants import BG_LABEL  # noqa: E402
from lbdvd_jax.defocus_map import predict_defocus  # noqa: E402


def field_bias(model, field, depths, seed=100):
    """[(z, mean bias, median bias, fg patches)] of one field at each uniform depth."""
    rows = []
    for k, z in enumerate(depths):
        img = blur_at(field, np.full(field.shape, z, np.float32), seed=seed + k)
        d = predict_defocus(img, model=model)
        fg = d.labels != BG_LABEL
        e = d.z_um[fg] - z
        rows.append([float(z), float(np.mean(e)), float(np.median(e)), int(fg.sum())])
    return rows


def rms(rows, odd):
    sel = [r[1] for r in rows if (round(r[0]) % 2 == 1) == odd]
    return float(np.sqrt(np.mean(np.square(sel)))) if sel else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_fields(ap)
    ap.add_argument("--step", type=float, default=1.0, help="depth step (µm)")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    model, fields, names, split = estimator_and_fields(args)
    depths = np.arange(0.0, 20.0 + 1e-6, args.step)
    t0 = time.perf_counter()
    out = {"model": args.model or "shipped", "depths_um": depths.tolist(), "fields": {}}
    for part in ("train", "val", "test"):
        for i in split[part]:
            short = names[i].split("__")[1] if "__" in names[i] else names[i]
            rows = field_bias(model, fields[i], depths)
            out["fields"][short] = {"split": part, "rows": rows, "rms_bias_even_um": rms(rows, False),
                                    "rms_bias_odd_um": rms(rows, True)}
            both = "/".join("-" if v is None else f"{v:.2f}" for v in (rms(rows, False), rms(rows, True)))
            print(f"{short:4s} {part:5s} bias " + " ".join(f"{r[1]:+.1f}" for r in rows)
                  + f"  rms even/odd {both} µm", flush=True)
    for part in ("train", "val", "test"):
        f = [v for v in out["fields"].values() if v["split"] == part]
        out[part] = {k: (float(np.sqrt(np.mean([v[k] ** 2 for v in f]))) if f[0][k] is not None else None)
                     for k in ("rms_bias_even_um", "rms_bias_odd_um")}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    write_result(out, args.output, summary={k: out[k] for k in ("model", "train", "val", "test", "seconds")})


if __name__ == "__main__":
    main()
