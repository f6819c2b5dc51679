"""`lbdvd train`: the defocus estimator on synthetic defocus of real in-focus fields, resumably.

Fields come from --fields or $LBDVD_INFOCUS and are split by `data.split_fields` (BBBC006:
train a03-a07; val a01 chooses the model; test a02 is only recorded). Rerunning the same
command resumes from the last checkpoint in --out (change --total-steps to move the cool-down).

    lbdvd train --out runs/estimator --fields ../shared/data/real/bbbc006/infocus --minutes 120
    lbdvd train --out runs/spectral_only --conv none --minutes 20
    lbdvd train --out runs/estimator --export lbdvd_jax/weights/estimator.npz   # best.npz -> file
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys

import jax
import numpy as np

from lbdvd_jax.camera import bg_mask
from lbdvd_jax.constants import BG_LABEL, PATCH_SIZE
from lbdvd_jax.data import load_infocus_fields, make_eval_set, split_fields
from lbdvd_jax.estimator import DEFAULT_CONV, EstimatorConfig
from lbdvd_jax.estimator_grow import widen_estimator, widened_config
from lbdvd_jax.estimator_train import EstimatorTrainConfig, fit_estimator, paper_data
from lbdvd_jax.estimator_weights import load_estimator
from lbdvd_jax.optics import Optics
from lbdvd_jax.psf import psf_stack


def eval_set(fields, seed, per_level, window=PATCH_SIZE):
    """(counts (n, window, window), labels): level-balanced held-out windows; the bg label comes
    from the centre 84 px by the paper's rule (for 84 px the paper's set itself)."""
    if window == PATCH_SIZE:
        x, y = make_eval_set(jax.random.key(seed), fields, psf_stack(Optics(), size=49), per_level=per_level)
        return x[..., 0] * 65535.0, y
    x, y = make_eval_set(jax.random.key(seed), fields, psf_stack(Optics(), size=49), per_level=per_level,
                         patch=window, with_bg=False)
    x = x[..., 0] * 65535.0
    c = (window - PATCH_SIZE) // 2
    bg = np.asarray(bg_mask(x[:, c:c + PATCH_SIZE, c:c + PATCH_SIZE]))
    return x, np.where(bg, BG_LABEL, y).astype(np.int32)


def centre(xy):
    """The centre 84 px of an eval set's windows (the isolated-patch view of the same data)."""
    x, y = xy
    c = (x.shape[-1] - PATCH_SIZE) // 2
    return np.ascontiguousarray(x[:, c:c + PATCH_SIZE, c:c + PATCH_SIZE]), y


def main(argv=None):
    ap = argparse.ArgumentParser(prog="lbdvd train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run folder (resumed when it holds a checkpoint)")
    default = os.environ.get("LBDVD_INFOCUS")
    ap.add_argument("--fields", default=default, required=default is None and "--export" not in (argv or sys.argv),
                    help="folder of in-focus TIFF fields, >= 3 for a train/val/test split "
                         "(default: $LBDVD_INFOCUS)")
    ap.add_argument("--export", default=None, help="copy the run's best.npz (parameters only) here and stop")
    ap.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    ap.add_argument("--total-steps", type=int, default=20000)
    ap.add_argument("--cooldown-steps", type=int, default=3000)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--rps-weight", type=float, default=1.0, help="0 = cross-entropy only")
    ap.add_argument("--zoom-fraction", type=float, default=0.0,
                    help="share of level-0 patches magnified 1-4x (finer-pixel microscopes)")
    ap.add_argument("--num-bins", type=int, default=42, help="radial spectrum bins up to Nyquist")
    ap.add_argument("--taper", type=float, default=1.0, help="Tukey taper of the spectral window (1 = Hann)")
    ap.add_argument("--conv", default="default", help="'default' or 'none' (spectral branch only)")
    ap.add_argument("--window", type=int, default=PATCH_SIZE,
                    help="training window side (>= 84): wider windows give the spectral branch "
                         "context; evaluated on windows and on their centre 84 px")
    ap.add_argument("--patch-fraction", type=float, default=0.0,
                    help="with --window > 84: share of steps on isolated 84-px patches (e.g. 0.5)")
    ap.add_argument("--continuous-fraction", type=float, default=0.0,
                    help="share of level patches at a continuous depth with soft targets (e.g. 0.5)")
    ap.add_argument("--continuous-draw", choices=("uniform", "jitter"), default="uniform",
                    help="continuous depths uniform on 0-20 µm, or each level's depth +-1 µm (level 0 exact)")
    ap.add_argument("--mix-sources", action="store_true",
                    help="half of the windows from sums of two training fields (more object variety)")
    ap.add_argument("--scale-range", type=float, nargs=2, default=(0.3, 3.0), metavar=("LO", "HI"),
                    help="photon budget (signal above the offset) relative to the training fields, "
                         "log-uniform; e.g. 0.03 3 to cover dim, low-SNR images")
    ap.add_argument("--object-zoom", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="magnify each training field s x (log-uniform in LO..HI, e.g. 0.8 1.25) before "
                         "the blur: objects of other sizes at every level")
    ap.add_argument("--init", default=None,
                    help="estimator weights (.npz) to fine-tune from (same architecture)")
    ap.add_argument("--noise-spectrum", choices=("white", "matched"), default="white",
                    help="fresh camera noise: 'white' (the paper's way; leaves the field's own noise as a "
                         "texture) or 'matched' (total noise as flat as real camera noise)")
    ap.add_argument("--widen", type=float, default=None, metavar="FACTOR",
                    help="with --init: grow its layers FACTOR x (e.g. 2) before fine-tuning; the grown model "
                         "starts as the same function (estimator_grow.widen_estimator)")
    ap.add_argument("--paper-data", action="store_true",
                    help="train on the paper's data only (estimator_train.paper_data: 16-bit counts at the "
                         "calibrated camera, photon budgets 0.5-2x, exact levels; overrides the augmentation "
                         "options): a specialist for the paper's protocol, measured, not shipped")
    ap.add_argument("--paper-fraction", type=float, default=0.0,
                    help="share of steps on the paper's data (as --paper-data), the rest as set (default 0)")
    ap.add_argument("--also-train", nargs="+", default=(), metavar="FIELD",
                    help="also train on these held-out fields (a name or part of one, e.g. a02); they stay "
                         "in their val/test set, so that set then measures seen objects: the paper's random "
                         "image split, not a held-out field")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--per-level", type=int, default=100, help="eval patches per level")
    args = ap.parse_args(argv)
    if not 0 < args.scale_range[0] < args.scale_range[1]:
        ap.error(f"--scale-range: got {args.scale_range[0]:g} {args.scale_range[1]:g}, expected 0 < LO < HI "
                 "(e.g. 0.03 3)")
    if not 0 <= args.paper_fraction <= 1:
        ap.error(f"--paper-fraction: got {args.paper_fraction:g}, expected a share in [0, 1] (e.g. 0.5)")
    if args.object_zoom is not None and not 0 < args.object_zoom[0] <= args.object_zoom[1]:
        ap.error(f"--object-zoom: got {args.object_zoom[0]:g} {args.object_zoom[1]:g}, expected 0 < LO <= HI "
                 "(e.g. 0.8 1.25)")
    if args.widen is not None and not args.init:
        ap.error("--widen: needs --init, the trained estimator to grow")
    if args.widen is not None and not args.widen >= 1:
        ap.error(f"--widen: got {args.widen:g}, expected a factor >= 1 (e.g. 2)")
    if args.export:
        src = os.path.join(args.out, "best.npz")
        if not os.path.isfile(src):
            ap.error(f"--export: {src} does not exist; train first")
        shutil.copyfile(src, args.export)
        print(f"exported {src} -> {args.export}")
        return 0
    fields, names = load_infocus_fields(args.fields)
    split = split_fields(names, seed=0)
    tr = split["train"]
    for part in args.also_train:
        hits = [i for i, n in enumerate(names) if part in n]
        if len(hits) != 1:
            ap.error(f"--also-train: {part!r} matches {len(hits)} of the fields {names}; give a part of "
                     "exactly one name (e.g. a02)")
        tr = np.union1d(tr, hits)
    print("train", [names[i] for i in tr], "val", [names[i] for i in split["val"]],
          "test", [names[i] for i in split["test"]], file=sys.stderr)
    if args.window < PATCH_SIZE or (args.window - PATCH_SIZE) % 2:
        ap.error(f"--window: got {args.window}, expected 84 or more, 84 + an even number")
    sets = {"val": eval_set(fields[split["val"]], 1, args.per_level, args.window),
            "test": eval_set(fields[split["test"]], 2, args.per_level, args.window)}
    if args.window != PATCH_SIZE:
        sets.update(val84=centre(sets["val"]), test84=centre(sets["test"]))
    init = load_estimator(args.init) if args.init else None
    if args.widen is not None:
        init = widen_estimator(init, widened_config(init.config, args.widen), seed=0)
    mc = init.config if init is not None else EstimatorConfig(
        conv=() if args.conv == "none" else DEFAULT_CONV, num_bins=args.num_bins, taper=args.taper)
    mc = dataclasses.replace(mc, window=args.window)  # whole images are judged as trained
    tc = EstimatorTrainConfig(batch_size=args.batch_size, learning_rate=args.lr,
                              warmup_steps=min(200, args.total_steps // 10),
                              total_steps=args.total_steps, cooldown_steps=args.cooldown_steps,
                              rps_weight=args.rps_weight, zoom_fraction=args.zoom_fraction,
                              window=args.window, patch_fraction=args.patch_fraction,
                              mix_sources=args.mix_sources, continuous_fraction=args.continuous_fraction,
                              continuous_draw=args.continuous_draw, scale_range=tuple(args.scale_range),
                              object_zoom_range=None if args.object_zoom is None else tuple(args.object_zoom),
                              paper_fraction=args.paper_fraction, noise_spectrum=args.noise_spectrum)
    if args.paper_data:
        tc = paper_data(tc)
    hist = fit_estimator(mc, tc, fields[tr], out_dir=args.out, eval_sets=sets,
                         eval_every=args.eval_every, max_steps=args.max_steps, init=init,
                         max_seconds=None if args.minutes is None else 60 * args.minutes)
    if hist:
        print(json.dumps(hist[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
