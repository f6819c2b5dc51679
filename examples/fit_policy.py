"""Fit the continuous-depth deconvolution policy by gradient (issue 9, item 3) and measure it.

Samples from the training fields (a03-a07) fit the table; samples from the validation field
(a01) compare it with the level policy it starts from (`policy.LEVEL_POLICY`), with "the PSF
at the estimated depth, 15 iterations", with this fit with the level rule kept at the 0 and 2 µm
knots (`keep_level_rule`: how the shipped table was made) and with the shipped
`policy.CONTINUOUS_POLICY`. PSNR of the restored 84-px patches against the in-focus
truth (pixels pooled, as an image's PSNR), iterations rounded as `restore` rounds them. JSON to -o.

    python examples/fit_policy.py --model lbdvd_jax/weights/estimator.npz -o benchmarks/results/policy_fit.json
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import add_model_and_fields, estimator_and_fields, write_result  # noqa: E402

from lbdvd_jax.policy import CONTINUOUS_POLICY, LEVEL_POLICY, PolicyTable
from lbdvd_jax.policy_fit import KNOTS, evaluate_policy, fit_policy, keep_level_rule, policy_samples, policy_summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_fields(ap)
    ap.add_argument("--groups", type=int, default=128, help="(field, depth) pairs for the fit (8 windows each)")
    ap.add_argument("--val-groups", type=int, default=48)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    model, fields, names, split = estimator_and_fields(args, quiet=False)
    train = policy_samples(jax.random.key(1), fields[split["train"]], model=model, num_groups=args.groups)
    val = policy_samples(jax.random.key(2), fields[split["val"]], model=model, num_groups=args.val_groups)
    print(f"samples: {len(train.windows)} train, {len(val.windows)} val "
          f"({time.perf_counter() - t0:.0f} s); z_est RMS error val "
          f"{np.sqrt(np.mean((val.z_est - val.z_true) ** 2)):.2f} µm", flush=True)
    at_z = PolicyTable(tuple(KNOTS), tuple(KNOTS), (15.0,) * len(KNOTS))
    summary = lambda table: policy_summary(evaluate_policy(val, table), val.z_true)  # noqa: E731
    before = {"level_policy": summary(LEVEL_POLICY), "psf_at_z_15_iterations": summary(at_z)}
    print("val before:", json.dumps(before), flush=True)
    t1 = time.perf_counter()
    def log(step, value):
        if step % 10 == 0:
            print(f"step {step} batch PSNR {value:.2f}", flush=True)

    table, hist = fit_policy(train, init=LEVEL_POLICY, steps=args.steps, log=log)
    fit_s = time.perf_counter() - t1
    hybrid = keep_level_rule(table)
    after = {"fitted": summary(table), "fitted_level_rule_0_2um": summary(hybrid),
             "shipped": summary(CONTINUOUS_POLICY)}
    print("fitted:", table, "\nval after:", json.dumps(after), flush=True)
    result = {"model": args.model or "shipped", "train_fields": [names[i] for i in split["train"]],
              "val_field": [names[i] for i in split["val"]], "samples": {"train": len(train.windows),
                                                                         "val": len(val.windows)},
              "z_est_rms_um_val": float(np.sqrt(np.mean((val.z_est - val.z_true) ** 2))),
              "val_psnr": {**before, **after}, "fitted_policy": table._asdict(),
              "fitted_policy_level_rule_0_2um": hybrid._asdict(), "shipped_policy": CONTINUOUS_POLICY._asdict(),
              "steps": args.steps, "groups": {"train": args.groups, "val": args.val_groups},
              "fit_seconds": round(fit_s, 1), "history": hist[::5]}
    write_result(result, args.output, summary={k: v for k, v in result.items() if k != "history"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
