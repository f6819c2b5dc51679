"""The estimator's design choices side by side, from the runs' histories (held-out fields).

    python examples/estimator_ablations_table.py runs -o benchmarks/results/estimator_ablations.json

Each pair was trained with the same seed, data stream and schedule, differing in one choice:
spectral bins (24 vs 42), window (Hann vs Tukey 0.3; the Hann run was stopped at step 500, so
the pair is compared there), loss (cross-entropy vs + RPS, spectral
branch alone), branches (spectral alone vs + CNN at equal CPU-minutes), and a 500-step
fine-tune from one checkpoint with and without magnified in-focus patches ("zoom").
"""

import argparse
import json
import pathlib
import sys

PAIRS = {
    "bins (spectral only, 2000 steps)": ("abl_spectral", "abl_spectral42"),
    "window (spectral only, step 500 of 1000)": ("abl_spec_hann", "abl_spec_tukey"),
    "loss (spectral only, 1000 steps)": ("abl_spec_ce", "abl_spec_rps"),
    "zoom fine-tune (full model, steps 2921-3421)": ("ft_plain", "ft_zoom"),
}


def at_step(run, step):
    """The evaluation record of `run` at `step` (the pair's largest common step)."""
    h = json.loads((run / "history.json").read_text())
    return next(r for r in h if r["step"] == step)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", help="folder holding the run folders")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)
    root = pathlib.Path(args.runs)
    rows = {}
    for label, names in PAIRS.items():
        row = {}
        present = [n for n in names if (root / n / "history.json").exists()]
        steps = [{r["step"] for r in json.loads((root / n / "history.json").read_text())} for n in present]
        common = max(set.intersection(*steps)) if steps else None
        for n in present:
            if common is not None:
                r = at_step(root / n, common)
                row[n] = {"step": r["step"], "cpu_minutes": round(r["cpu_minutes"], 2),
                          **{s: {"top1": round(r[s]["accuracy"], 4), "within_1": round(r[s]["within_1"], 4)}
                             for s in ("val", "test")}}
        rows[label] = row
    pathlib.Path(args.output).write_text(json.dumps(rows, indent=1))
    for label, row in rows.items():
        print(label, {n: (v["val"]["top1"], v["test"]["top1"]) for n, v in row.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
