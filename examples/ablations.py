"""The paper's DelpNet ablations (Table 1, Fig. 5) and the data-source study, at one equal budget.

Each variant is a fresh `train_delpnet.py` run from scratch with the same seed, schedule and
number of steps, then finalised (BatchNorm statistics re-estimated over 50 batches) and scored
on the held-out validation field and test field; every variant with BatchNorm is also scored
with the running statistics exactly as trained (``*_raw_bn``: what BN momentum changes, since
training itself normalises with batch statistics). Variants:

    base          12 classes (bg), BN momentum 0.6, Dropout, fast preset, 25 % phantoms
    no_bg         11 classes: bg patches get a defocus label        (paper Table 1: 96.8 vs 98.2 %)
    no_bn         no BatchNormalization                            (paper Fig. 5)
    no_dropout    no Dropout                                       (paper Fig. 5)
    bn_0.99       BN momentum 0.99 (the Keras default) vs 0.6       (paper Fig. 5)
    paper_preset  Adam 6e-5, Keras decay 5e-6 (the paper's optimiser) vs the fast preset
    real_only     0 % phantoms: what the phantoms contribute
    phantom_only  100 % phantoms: what the real fields contribute

    python examples/ablations.py [--steps 250] [--only base,no_bg] [--out runs/ablations]

Each run is a child process (its log in `<out>/<variant>.log`); `--in-process` runs them in this
process instead (compiled programs shared between a variant's training, finalising and scoring:
quicker for short runs such as `--smoke`, no isolation for long ones).

Runs resume (re-running skips finished variants). Writes `<out>/ablations.json` (one row per
variant: val/test accuracy, ±1 accuracy, macro F1, minutes) and prints a table. Absolute numbers
at a CPU budget of a few hundred steps are far below the paper's 1000 epochs; read the
differences, and their size against the seed-to-seed spread, not the levels.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent
INFOCUS = ROOT.parents[1] / "shared" / "data" / "real" / "bbbc006" / "infocus"
VARIANTS = {
    "base": [],
    "no_bg": ["--no-bg"],
    "no_bn": ["--no-bn"],
    "no_dropout": ["--no-dropout"],
    "bn_0.99": ["--bn-momentum", "0.99"],
    "paper_preset": ["--preset", "paper"],
    "real_only": ["--phantom-fraction", "0"],
    "phantom_only": ["--phantom-fraction", "1"],
}
PAPER = {  # He et al. 2020: Table 1 (test accuracy) and Fig. 5 (qualitative)
    "base": "98.2 % (1000 epochs, Titan Xp)",
    "no_bg": "96.8 %",
    "no_bn": "Fig. 5: slower, lower",
    "no_dropout": "Fig. 5: overfits",
    "bn_0.99": "Fig. 5: 0.6 better",
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ablations")
    p.add_argument("--steps", type=int, default=250, help="training steps per variant (batch 64)")
    p.add_argument("--only", default=None, help="comma-separated variant names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-level", type=int, default=60, help="val/test patches per class")
    p.add_argument("--smoke", action="store_true", help="tiny model and runs (a plumbing test)")
    p.add_argument("--in-process", action="store_true",
                   help="run the training script in this process, not in child processes")
    p.add_argument("--data", default=os.environ.get("LBDVD_INFOCUS", str(INFOCUS)),
                   help="folder of in-focus fields (default: $LBDVD_INFOCUS or ../shared/...)")
    return p.parse_args(argv)


def _train(argv, log, args):
    """One `train_delpnet.py` call (argv without the interpreter): a child process, or with
    --in-process a call of its main() with stdout and stderr into the same log."""
    if not args.in_process:
        subprocess.run([sys.executable, str(ROOT / "train_delpnet.py"), *argv], check=True, stdout=log,
                       stderr=subprocess.STDOUT)
        return
    from lbdvd_jax.train_delpnet_app import main as train_main

    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        status = train_main(argv)
    if status:
        raise RuntimeError(f"train_delpnet.py {' '.join(argv)} exited with {status}; see {log.name}")


def cmd_base(run, common, extra, args):
    return [*common, *extra,
            "--total-steps", str(args.steps), "--warmup-steps", str(max(1, args.steps // 10)),
            "--cooldown-steps", str(args.steps // 3), "--eval-every", str(max(1, args.steps // 3)),
            "--bn-batches", "20"]


def run_variant(name, extra, args, out):
    run = out / name
    common = ["--out", str(run), "--seed", str(args.seed), "--per-level", str(args.per_level),
              "--data", args.data]
    common += ["--smoke"] if args.smoke else []
    done = run / "report_test.json"
    t0 = time.perf_counter()
    if not done.exists():
        cmd = cmd_base(run, common, extra, args)
        with open(out / f"{name}.log", "a") as log:
            _train(cmd, log, args)
            _train(cmd + ["--finalize"], log, args)
    if "--no-bn" not in extra and not (run / "report_test_raw_bn.json").exists():
        with open(out / f"{name}.log", "a") as log:
            _train(cmd_base(run, common, extra, args) + ["--raw-bn"], log, args)
    minutes = (time.perf_counter() - t0) / 60
    row = {"variant": name, "flags": " ".join(extra), "steps": args.steps}
    for which in ("val", "test", "val_raw_bn", "test_raw_bn"):
        path = run / f"report_{which}.json"
        if path.exists():
            rep = json.loads(path.read_text())
            row[which] = {k: round(rep[k], 4) for k in ("accuracy", "within_1", "f1")}
    row["minutes_this_call"] = round(minutes, 1)
    row["paper"] = PAPER.get(name, "")
    return row


def main(argv=None):
    args = parse(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--only: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    rows = []
    for name in names:
        rows.append(run_variant(name, VARIANTS[name], args, out))
        print(f"{name:13s} val {rows[-1]['val']['accuracy']:.3f} test {rows[-1]['test']['accuracy']:.3f} "
              f"(±1 {rows[-1]['test']['within_1']:.3f}, F1 {rows[-1]['test']['f1']:.3f})", flush=True)
        (out / "ablations.json").write_text(json.dumps({"steps": args.steps, "batch_size": 64,
                                                        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
