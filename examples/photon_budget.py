"""Dim images: does the estimated depth hold when the signal-to-noise ratio falls?

Microscopes other than BBBC006's often record far fewer photons per object (the stardist and
mahotas nuclei in ../shared/data/real/other have a tenth of its contrast over the noise). Here
the held-out fields (test a02, validation a01) are given at a fraction of their photon budget:
the in-focus signal above the camera offset is scaled by 1, 0.3, 0.1 and 0.03, blurred uniformly
at z = 0, 2 and 6 µm with the Eq. 2 PSF and given camera noise as calibrated on BBBC006. Per
case: the foreground patches (the estimator's own bg decision), the share called within one
level of the truth, and the mean expected depth (µm), judged as `restore` judges (windows,
pooling).

    python examples/photon_budget.py                        # the shipped estimator
    python examples/photon_budget.py --model runs/x/last.npz -o out.json
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import add_model_and_fields, estimator_and_fields, write_result  # noqa: E402
from continuous_defocus import blur_at  # noqa: E402

from lbdvd_jax.camera import OFFSET  # noqa: E402
from lbdvd_jax.constants import BG_LABEL, LEVEL_STEP_UM  # noqa: E402
from lbdvd_jax.defocus_map import predict_defocus  # noqa: E402

SCALES = (1.0, 0.3, 0.1, 0.03)
DEPTHS_UM = (0.0, 2.0, 6.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_fields(ap)
    ap.add_argument("--scales", type=float, nargs="+", default=SCALES, help="photon budgets (fractions)")
    ap.add_argument("--depths", type=float, nargs="+", default=DEPTHS_UM, help="uniform depths (µm)")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    model, fields, names, split = estimator_and_fields(args)
    t0 = time.perf_counter()
    rows = []
    for role, idx in (("test", split["test"][0]), ("val", split["val"][0])):
        field = fields[idx]
        for z in args.depths:
            for s in args.scales:
                img = blur_at((field - OFFSET) * s + OFFSET, np.full(field.shape, z, np.float32), seed=3)
                dm = predict_defocus(img, model=model)
                lab = np.asarray(dm.labels)
                fg = lab != BG_LABEL
                row = {"field": names[idx].split("__")[1], "split": role, "z_um": z, "photon_budget": s,
                       "fg_patches": int(fg.sum()), "within_one_level": None, "mean_z_um": None}
                if fg.any():
                    row["within_one_level"] = float(np.mean(np.abs(lab[fg] - z / LEVEL_STEP_UM) <= 1))
                    row["mean_z_um"] = float(np.mean(np.asarray(dm.z_um)[fg]))
                rows.append(row)
                print(row, flush=True)
    result = {"model": args.model or "shipped", "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    write_result(result, args.output)
    return 0


if __name__ == "__main__":
    main()
