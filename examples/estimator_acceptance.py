"""The defocus estimator's acceptance figures (issue: "A defocus estimator users can trust").

Held out: BBBC006 field a02 (test) and a01 (validation, used for model choice) were never
trained on; the training fields a03-a07 appear only in the real-data rows, marked as such.

    python examples/estimator_acceptance.py --model runs/estimator/best.npz -o out.json
    python examples/estimator_acceptance.py --model paper   # the paper's DelpNet, same figures

Prints one JSON object as its last line.
"""

import argparse
import json
import os
import pathlib
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import tifffile

from lbdvd_jax.checkpoint import PAPER_DELPNET, load_delpnet
from lbdvd_jax.data import load_infocus_fields, make_eval_set, split_fields
from lbdvd_jax.defocus_map import EstimatorDomainWarning
from lbdvd_jax.model import classify_patches
from lbdvd_jax.optics import Optics
from lbdvd_jax.pipeline import predict_levels, restore
from lbdvd_jax.psf import psf_stack
from lbdvd_jax.synthesis import synthesize_defocus

BG = 11


def isolated(model, field, seed, per_level, noise="white"):
    x, y = make_eval_set(jax.random.key(seed), field[None], psf_stack(Optics(), size=49),
                         per_level=per_level, noise_spectrum=noise)
    pred, _ = classify_patches(model, x[..., 0] * 65535.0)
    lv = (y < BG) & (pred < BG)
    recall = [float(np.mean(pred[y == k] == k)) if np.any(y == k) else None for k in range(12)]
    merged = lambda v: np.where(v == 1, 0, v)  # noqa: E731  levels 0 and 1 as one class, "in focus"
    return {"n": int(len(y)), "top1": float(np.mean(pred == y)),
            "top1_levels01_merged": float(np.mean(merged(pred) == merged(y))),
            "within_1": float(np.mean((np.abs(pred - y) <= 1) & lv | (pred == y))),
            "recall": recall, "min_level_recall": min(r for r in recall[:11] if r is not None)}


def uniform(model, field, pool, noise="white"):
    out = []
    for level in range(11):
        img, _ = synthesize_defocus(field, level=level, seed=level, noise=noise)
        lab = np.asarray(predict_levels(img, model=model, pool=pool).labels)
        fg = lab != BG
        out.append(float(np.mean(lab[fg] == level)) if fg.any() else None)
    return out


def restore_gain(model, field, pool, noise="white"):
    """PSNR (dB) of input, default restore and restore with the true level, per uniform level."""
    from lbdvd_jax.quality import psnr
    ref = jnp.asarray(field, jnp.float32)
    rows = []
    for level in range(11):
        img, _ = synthesize_defocus(field, level=level, seed=level, noise=noise)
        dv = restore(img, model=model, pool=pool)
        truth = np.where(np.asarray(dv.levels) == BG, BG, level)  # same bg patches, true level
        oracle = restore(img, mode="oracle", levels=truth)
        rows.append({"level": level, "input": float(psnr(ref, jnp.asarray(img))),
                     "dv": float(psnr(ref, dv.image)), "oracle": float(psnr(ref, oracle.image))})
    return rows


def tilt(model, field, pool, seeds=(0, 1, 2), noise="white"):
    shares, rms = [], []
    for seed in seeds:
        img, depth = synthesize_defocus(field, seed=seed, noise=noise)
        d = predict_levels(img, model=model, pool=pool)
        o = d.origins
        zc = depth[np.minimum(o[:, 0] + 42, depth.shape[0] - 1), np.minimum(o[:, 1] + 42, depth.shape[1] - 1)]
        fg = d.labels != BG
        shares.append(float(np.mean(np.abs(2.0 * d.labels[fg] - zc[fg]) <= 2.0 + 1e-6)))
        rms.append(float(np.sqrt(np.mean((d.z_um[fg] - zc[fg]) ** 2))))
    return {"within_1_level": float(np.mean(shares)), "z_rms_um": float(np.mean(rms))}


def fg_share(model, image, test):
    lab = np.asarray(predict_levels(image, model=model).labels)
    fg = lab != BG
    return (float(np.mean(test(lab[fg]))) if fg.any() else None), int(fg.sum())


def scale_forms(img):
    return {"uint16": img, "uint8": np.round(img / 16.0), "float01": img / 65535.0,
            "x3": np.minimum(img * 3.0, 65535.0)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="weights .npz, 'paper' for the paper DelpNet, "
                    "default the shipped estimator")
    ap.add_argument("--data", default=os.environ.get("LBDVD_REAL_DATA", "../shared/data/real"))
    ap.add_argument("--per-level", type=int, default=100)
    ap.add_argument("--pool", choices=("surface", "neighbours", "none"), default="surface",
                    help="whole-image rows: the default depth-surface prior, 3x3 pooling only, or none")
    ap.add_argument("--no-pool", action="store_true", help="= --pool none")
    ap.add_argument("--noise", choices=("white", "matched"), default="white",
                    help="synthetic rows (isolated and whole-field): the noise completion (synthesize_defocus, "
                         "synth_batch): 'white' as trained and as the paper, 'matched' with the flat spectrum of "
                         "real camera noise")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", EstimatorDomainWarning)
    model = load_delpnet(PAPER_DELPNET if args.model == "paper" else args.model)
    data = pathlib.Path(args.data)
    fields, names = load_infocus_fields(data / "bbbc006/infocus")
    split = split_fields(names, seed=0)
    short = [n.split("__")[1] for n in names]
    test, val = split["test"][0], split["val"][0]
    pool = False if args.no_pool or args.pool == "none" else args.pool
    t0 = time.perf_counter()
    r = {"model": args.model or "shipped", "pool": pool, "noise": args.noise, "test_field": short[test],
         "val_field": short[val]}
    r["isolated"] = {short[test]: isolated(model, fields[test], 2, args.per_level, args.noise),
                     short[val]: isolated(model, fields[val], 1, args.per_level, args.noise)}
    r["uniform_share_right"] = {short[test]: uniform(model, fields[test], pool, args.noise),
                                short[val]: uniform(model, fields[val], pool, args.noise)}
    r["tilt"] = {short[test]: tilt(model, fields[test], pool, noise=args.noise)}
    r["restore_psnr"] = {short[test]: restore_gain(model, fields[test], pool, args.noise)}
    r["infocus_le1"] = {short[i] + ("" if i in (test, val) else " (train)"):
                        fg_share(model, fields[i], lambda v: v <= 1)[0] for i in range(len(names))}
    z00 = {p.name.split("_")[2]: tifffile.imread(p).astype(np.float32)
           for p in sorted((data / "bbbc006/z00").glob("*.tif"))}
    r["z00_ge9"] = {k: fg_share(model, v, lambda v: v >= 9)[0] for k, v in z00.items()}
    other = {}
    for p in sorted((data / "other").glob("*.tif")):
        img = tifffile.imread(p).astype(np.float32)
        share, n = fg_share(model, img, lambda v: v <= 1)
        res = np.asarray(restore(img, model=model).image)
        other[p.stem] = {"le1": share, "fg_patches": n,
                         "restore_rel_change": float(np.linalg.norm(res - img) / np.linalg.norm(img))}
    r["other_microscopes"] = other
    blurred5, _ = synthesize_defocus(fields[test], level=5, seed=5, noise=args.noise)
    cases = {"infocus_" + short[test]: fields[test], "level5_" + short[test]: blurred5,
             "z00_" + next(iter(z00)): next(iter(z00.values()))}
    scale = {}
    for name, img in cases.items():
        ref = np.asarray(predict_levels(img, model=model).labels)
        row = {}
        for form, x in scale_forms(img).items():
            lab = np.asarray(predict_levels(x, model=model).labels)
            fg = ref != BG
            row[form] = {"keep": float(np.mean(lab[fg] == ref[fg])),
                         "le1": float(np.mean(lab[lab != BG] <= 1)) if np.any(lab != BG) else None}
        scale[name] = row
    r["scale"] = scale
    r["seconds"] = round(time.perf_counter() - t0, 1)
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(r, indent=1))
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
