"""How evidence is pooled between patches: the choice of the depth-surface prior, replayed.

A held-out field (default: the validation field a01, where the choice was made) is blurred at
uniform depths (on and between the levels), along a tilt 0-20 µm and along a curved surface,
with camera noise as calibrated on BBBC006. Each image is classified once (each patch's own
probabilities) and the level calls are scored for every way of pooling:

- none: each patch's own call; neighbours: the 3x3 certainty-weighted pooling;
- surface σ: 3x3 pooling, then the prior of width σ (µm) around the depth surface fitted to the
  own depths, gated as shipped (`SURFACE_AGREEMENT`); "ungated" applies it regardless.

Score: share of non-bg patches at the right level (at a depth between two levels: either
neighbour; tilted and curved: within one level of the depth at the patch centre). The
`surface_agreement` of every image is reported beside it, and for the sharp nuclei of other
microscopes in ../shared/data/real/other (the gate's reason: a field read at two depths), with
their share of non-bg patches called in focus (<= level 1) by every way of pooling and their
own calls per level.

    python examples/pooling_choice.py -o benchmarks/results/pooling_choice.json
    python examples/pooling_choice.py --split test        # the test field a02 (reports only)
"""

import argparse
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import add_model_and_fields, blur_at, estimator_and_fields, write_result  # noqa: E402

from lbdvd_jax.constants import BG_LABEL, LEVEL_STEP_UM  # noqa: E402
from lbdvd_jax.defocus_map import predict_defocus  # noqa: E402
from lbdvd_jax.pooling import SURFACE_AGREEMENT, pool_neighbours, surface_agreement, surface_prior  # noqa: E402

SIGMAS_UM = (0.5, 1.0, 2.0)
UNIFORM_UM = (0, 1, 5, 9, 13, 17, 19, 20)


def depth_cases(shape):
    """name -> per-pixel depth map (µm) of the scored images."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
    cases = {f"uniform_{z}um": np.full((h, w), float(z), np.float32) for z in UNIFORM_UM}
    cases["tilt_0_20um"] = (20.0 * xx).astype(np.float32)
    cases["curved_0_20um"] = (20.0 * np.clip(0.5 + 0.5 * np.sin(np.pi * (xx - 0.5)) * np.cos(
        np.pi * (yy - 0.5) * 0.8), 0, 1)).astype(np.float32)
    return cases


def pooled_labels(own, origins):
    """way of pooling -> (n,) level calls (bg stays each patch's own decision)."""
    rows = len(np.unique(origins[:, 0]))
    neigh = pool_neighbours(own.reshape(rows, len(own) // rows, -1)).reshape(len(own), -1)
    ways = {"none": own, "neighbours": neigh}
    for sigma in SIGMAS_UM:
        ways[f"surface_{sigma:g}um"] = surface_prior(neigh, own, origins, sigma_um=sigma)
    ways["surface_1um_ungated"] = surface_prior(neigh, own, origins, sigma_um=1.0, agreement=0.0)
    bg = own.argmax(-1) == BG_LABEL
    return {k: np.where(bg, BG_LABEL, p.argmax(-1)) for k, p in ways.items()}


def score(labels, z_centre, name):
    """Share of non-bg patches called right (the module docstring's rule); None without any."""
    fg = labels != BG_LABEL
    if not fg.any():
        return None
    lab, t = labels[fg], z_centre[fg] / LEVEL_STEP_UM
    if name.startswith("uniform"):
        ok = (lab == np.floor(t)) | (lab == np.ceil(t))
    else:
        ok = np.abs(lab - t) <= 1.0
    return float(np.mean(ok))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_fields(ap)
    ap.add_argument("--split", choices=("val", "test"), default="val",
                    help="held-out field: 'val' (where the choice is made, default) or 'test'")
    ap.add_argument("--other", default=str(pathlib.Path(__file__).resolve().parents[1].parent
                                           / "shared" / "data" / "real" / "other"),
                    help="folder of sharp images from other microscopes (their agreement is reported; "
                         "skipped when absent)")
    ap.add_argument("--only", nargs="+", default=None, metavar="CASE",
                    help="score only these images (e.g. uniform_0um tilt_0_20um)")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    known = list(depth_cases((2, 2)))
    unknown = sorted(set(args.only or ()) - set(known))
    if unknown:
        ap.error(f"--only: unknown image(s) {unknown}; choose from {known}")
    model, fields, names, split = estimator_and_fields(args)
    index = split[args.split][0]
    field = fields[index]
    cases = {k: v for k, v in depth_cases(field.shape).items() if not args.only or k in args.only}
    rows, agreement = {}, {}
    for i, (name, depth) in enumerate(cases.items()):
        img = blur_at(field, depth, seed=i)
        d = predict_defocus(img, model=model, pool=False)
        own = np.asarray(d.own_probs, np.float64)
        o = d.origins
        zc = depth[np.minimum(o[:, 0] + 42, depth.shape[0] - 1), np.minimum(o[:, 1] + 42, depth.shape[1] - 1)]
        rows[name] = {k: score(v, zc, name) for k, v in pooled_labels(own, o).items()}
        agreement[name] = surface_agreement(own, o)[0]
        print(name, {k: None if v is None else round(v, 3) for k, v in rows[name].items()},
              f"agreement {agreement[name]:.2f}", flush=True)
    other = pathlib.Path(args.other)
    in_focus, own_calls = {}, {}  # images of other microscopes: share called <= 1, own calls per level
    if other.is_dir():
        import tifffile

        for path in sorted(other.glob("*.tif")):
            img = np.asarray(tifffile.imread(path), np.float32)
            if img.ndim != 2:
                continue
            d = predict_defocus(img, model=model, pool=False)
            own = np.asarray(d.own_probs, np.float64)
            agreement[path.stem] = surface_agreement(own, d.origins)[0]
            ways = pooled_labels(own, d.origins)
            fg = ways["none"] != BG_LABEL
            in_focus[path.stem] = {k: float(np.mean(v[fg] <= 1)) if fg.any() else None for k, v in ways.items()}
            own_calls[path.stem] = np.bincount(ways["none"], minlength=BG_LABEL + 1).tolist()
            print(path.stem, f"agreement {agreement[path.stem]:.2f}", "called <= 1:",
                  {k: None if v is None else round(v, 3) for k, v in in_focus[path.stem].items()}, flush=True)
    ways = list(next(iter(rows.values())))
    mean = {k: float(np.mean([r[k] for r in rows.values() if r[k] is not None])) for k in ways}
    result = {"field": names[index], "split": args.split, "model": args.model or "shipped",
              "gate": SURFACE_AGREEMENT, "rows": rows, "mean": mean, "agreement": agreement,
              "other_called_le1": in_focus, "other_own_calls_per_level": own_calls}
    write_result(result, args.output, summary={"mean": mean, "agreement": agreement})


if __name__ == "__main__":
    main()
