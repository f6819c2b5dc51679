"""Fig. 8 of He et al. 2020: PSNR improvement and SSIM per defocus level, five methods.

    python examples/fig8_per_level.py [--per-level 45] [-o fig8.json] [--png fig8.png]

Same as `lbdvd evaluate`. Held-out in-focus BBBC006 fields (the 'test' split of
`data.split_fields`), blurred per level with the Eq. 2 PSF + camera noise; ~45 foreground
patches per level; DV (predicted level), DV-oracle (true level), DI (in-focus PSF), blind RL and
the noisy input; mean and 25-75 % band. Writes JSON (and a PNG when matplotlib is installed).
"""

import argparse
import json
import os
import pathlib

from lbdvd_jax.checkpoint import load_delpnet
from lbdvd_jax.evaluation import fig8_evaluation, format_fig8


def plot(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    lev = [e["level"] for e in result["levels"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for m in result["methods"]:
        for ax, key in ((a, "psnr_gain"), (b, "ssim")):
            if m == "input" and key == "psnr_gain":
                continue
            mean = [e[m][key]["mean"] for e in result["levels"]]
            lo = [max(0.0, e[m][key]["mean"] - e[m][key]["p25"]) for e in result["levels"]]
            hi = [max(0.0, e[m][key]["p75"] - e[m][key]["mean"]) for e in result["levels"]]
            ax.errorbar(lev, mean, yerr=[lo, hi], marker="o", capsize=3, label=m)
    a.set(xlabel="defocus level (x 2 µm)", ylabel="PSNR improvement (dB)")
    b.set(xlabel="defocus level (x 2 µm)", ylabel="SSIM vs in-focus")
    a.legend(), b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-level", type=int, default=45)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--model", default=None, help="estimator or DelpNet weights (default: the shipped estimator)")
    p.add_argument("--no-blind", action="store_true")
    p.add_argument("--tune", action="store_true",
                   help="tune a per-level RL iteration table on the TRAINING fields first and add "
                        "dv_tuned / dv_oracle_tuned (that table, predicted / true level)")
    p.add_argument("--fields", default=os.environ.get("LBDVD_INFOCUS", "../shared/data/real/bbbc006/infocus"),
                   help="folder of in-focus BBBC006 fields (split a03-a07 / a01 / a02)")
    p.add_argument("-o", "--output", default="fig8.json")
    p.add_argument("--png", default=None)
    args = p.parse_args(argv)
    if not os.path.isdir(args.fields):  # no BBBC006 folder here: the bundled field (smoke runs)
        args.fields = None
    model, source = load_delpnet(args.model), args.model or "shipped"
    tuning = None
    if args.tune:
        from lbdvd_jax.evaluation import training_fields, tune_iterations
        fields, names = training_fields(args.fields)
        tuning = tune_iterations(fields, per_level=args.per_level, seed=1)
        tuning["fields"] = names
        print("tuned iterations per level (training fields):", tuning["table"])
    from lbdvd_jax.evaluation import heldout_fields
    result = fig8_evaluation(model=model, fields=heldout_fields(args.fields)[0], per_level=args.per_level,
                             num_iter=args.iterations,
                             blind=not args.no_blind,
                             iterations=None if tuning is None else tuning["table"])
    result["model"] = source
    result["tuning"] = tuning
    pathlib.Path(args.output).write_text(json.dumps(result, indent=1))
    print(format_fig8(result))
    if args.png:
        plot(result, args.png)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
