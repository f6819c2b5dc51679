"""Does refining each patch's depth by gradient pay? (issue 9, item 4) Measured against the truth.

Windows of the validation field (a01) blurred at uniform random depths (`policy_samples`), the
estimator's depth per window (certainty-weighted over its group, as the depth surface gives),
then `depth_refine.refine_depths` (Poisson likelihood of the re-blurred RL estimate, by Adam).
Reports the depth RMS error before and after, and the PSNR of the patches restored with the
continuous policy at the estimated, refined and true depths (pixels pooled). JSON to -o.

    python examples/refine_depth.py -o benchmarks/results/depth_refinement.json
"""

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import numpy as np

from lbdvd_jax.checkpoint import load_delpnet
from lbdvd_jax.depth_refine import refine_depths
from lbdvd_jax.fields import load_infocus_fields, split_fields
from lbdvd_jax.policy import CONTINUOUS_POLICY
from lbdvd_jax.policy_fit import evaluate_policy, policy_samples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--fields", default=os.environ.get("LBDVD_INFOCUS", "../shared/data/real/bbbc006/infocus"))
    ap.add_argument("--groups", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    model = load_delpnet(args.model)
    fields, names = load_infocus_fields(args.fields)
    val = split_fields(names, seed=0)["val"]
    s = policy_samples(jax.random.key(3), fields[val], model=model, num_groups=args.groups, per_group=4)
    t0 = time.perf_counter()
    z_ref = refine_depths(s.windows, s.z_est, steps=args.steps)
    secs = time.perf_counter() - t0
    rms = lambda z: float(np.sqrt(np.mean((z - s.z_true) ** 2)))  # noqa: E731
    bias = lambda z: float(np.mean(z - s.z_true))  # noqa: E731
    db = lambda mse: float(10 * np.log10(65535.0 ** 2 / np.mean(mse)))  # noqa: E731
    psnr = {name: db(evaluate_policy(s._replace(z_est=z.astype(np.float32)), CONTINUOUS_POLICY))
            for name, z in (("estimated", s.z_est), ("refined", z_ref), ("true", s.z_true))}
    result = {"field": [names[i] for i in val], "windows": len(s.windows), "steps": args.steps,
              "seconds_per_window": secs / len(s.windows),
              "rms_um": {"estimated": rms(s.z_est), "refined": rms(z_ref)},
              "bias_um": {"estimated": bias(s.z_est), "refined": bias(z_ref)},
              "policy_psnr_db": psnr}
    text = json.dumps(result)
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(result, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
