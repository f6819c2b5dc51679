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
    # runs trained on wider windows log the windows as val/test and their centre 84 px as
    # val84/test84: the isolated panels show the 84-px view of every run, the right panels the
    # windows (what whole images are judged from)
    windowed = {n: c for n, c in curves.items() if "val84" in c["points"][0]}
    panels = [("val", "val field, isolated 84x84 patches", False),
              ("test", "test field, isolated 84x84 patches", False)]
    if windowed:
        panels += [("val", "val field, judging windows", True), ("test", "test field, judging windows", True)]
    fig = Figure(figsize=(5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), sharey=True)
    for ax, (split, title, wide) in zip(axes, panels):
        for name, c in (windowed if wide else curves).items():
            pts = c["points"]
            key = split if wide or name not in windowed else split + "84"
            w = c["config"]["train"].get("window", 84)
            label = name + (f" ({w}-px windows, fine-tuned; README says from which)" if name in windowed else "")
            color = f"C{list(curves).index(name) % 10}"
            style = "-" if list(curves).index(name) < 10 else ("--" if list(curves).index(name) < 20 else ":")
            ax.plot([p["cpu_minutes"] for p in pts], [100 * p[key]["accuracy"] for p in pts],
                    marker="o", ms=3, label=label, color=color, linestyle=style)
        ax.set_xlabel("training CPU-minutes (process time, 2-core AMD EPYC)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()  # every run is in the isolated panels
    rows = -(-len(labels) // 4)
    fig.set_size_inches(5 * len(panels), 4 + 0.22 * rows)
    fig.tight_layout(rect=(0, 0.22 * rows / (4 + 0.22 * rows) + 0.02, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.savefig(args.output, dpi=100)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(curves, indent=1))
    print(f"wrote {args.output} ({matplotlib.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
