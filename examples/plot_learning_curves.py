"""Learning curves of estimator runs: held-out accuracy per CPU-minute, one line per run.

    python examples/plot_learning_curves.py runs/estimator runs/abl_ce ... \
        -o benchmarks/results/estimator_learning_curves.png --json benchmarks/results/estimator_runs.json

Each run folder holds history.json (written by `lbdvd train`): evaluations with wall and
process-CPU minutes and the accuracy on the validation field (model choice) and the test field.
"""

import argparse
import json
import pathlib
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders holding history.json")
    ap.add_argument("-o", "--output", required=True, help="PNG to write")
    ap.add_argument("--json", default=None, help="also write the curves as JSON here")
    args = ap.parse_args(argv)
    curves = {}
    for run in args.runs:
        h = json.loads((pathlib.Path(run) / "history.json").read_text())
        cfg = json.loads((pathlib.Path(run) / "config.json").read_text())
        curves[pathlib.Path(run).name] = {
            "config": cfg,
            "points": [{k: (v if not isinstance(v, dict) else {kk: v[kk] for kk in ("accuracy", "within_1", "recall")})
                        for k, v in rec.items()} for rec in h]}
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, split in zip(axes, ("val", "test")):
        for name, c in curves.items():
            pts = c["points"]
            ax.plot([p["cpu_minutes"] for p in pts], [100 * p[split]["accuracy"] for p in pts],
                    marker="o", ms=3, label=name)
        ax.set_xlabel("training CPU-minutes (process time, 2-core AMD EPYC)")
        ax.set_title(f"{split} field, isolated 84x84 patches")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(curves, indent=1))
    print(f"wrote {args.output} ({matplotlib.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
