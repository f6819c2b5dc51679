"""Fig. 9 of He et al. 2020: rectangular vs triangular montage on a real wide-field image.

    python examples/fig9_montage.py [--image lbdvd_jax/data/a01_z00.tif] [-o fig9.json]

Restores a real BBBC006 field (default: the bundled out-of-focus plane z=00 of field a01) with
DelpNet's levels, once with non-overlapping rectangular patches (stride 84) and once with the
paper's overlapping triangular weights (stride 42), and scores the patch seams with
`patches.seam_score` (about 1 = no visible seam). Writes TIFFs next to the JSON when --tiff.
"""

import argparse
import json

import numpy as np

from lbdvd_jax.checkpoint import load_delpnet
from lbdvd_jax.io import read_tiff, write_tiff
from lbdvd_jax.patches import patch_grid, seam_score
from lbdvd_jax.pipeline import restore
from lbdvd_jax.synthesis import bundled_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default=str(bundled_path("a01_z00.tif")))
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--model", default=None)
    p.add_argument("--crop", type=int, default=0, help="restore only the top-left N x N")
    p.add_argument("--synthetic-tilt", action="store_true",
                   help="use the in-focus a01 field defocused with the demo's tilted depth map")
    p.add_argument("--oracle", action="store_true",
                   help="with --synthetic-tilt: the true levels instead of DelpNet's")
    p.add_argument("--tiff", action="store_true", help="also write the two montages")
    p.add_argument("-o", "--output", default="fig9.json")
    args = p.parse_args(argv)
    model, source = load_delpnet(args.model), args.model or "shipped"
    src = read_tiff(args.image)
    img = src.data.astype(np.float32)
    if args.synthetic_tilt:
        from lbdvd_jax.synthesis import synthesize_defocus
        focus = read_tiff(bundled_path("a01_infocus.tif")).data.astype(np.float32)
        img, depth = synthesize_defocus(focus, seed=0)
        out_name = "synthetic tilt of a01"
    else:
        out_name = args.image
    if args.crop:
        img = img[:args.crop, :args.crop]
    out = {"image": out_name, "model": source, "shape": list(img.shape)}
    for name, stride, weights in (("rectangular", 84, "rectangular"),
                                  ("triangular", 42, "triangular")):
        kw = {}
        if args.synthetic_tilt and args.oracle:
            from lbdvd_jax.synthesis import true_patch_levels
            kw = dict(mode="oracle", levels=true_patch_levels(
                depth, patch_grid(img.shape, stride=stride)))
        res = restore(img, model=model, stride=stride, weights=weights,
                      num_iter=args.iterations, **kw)
        grid = patch_grid(img.shape, stride=84)  # score the same borders for both
        out[name] = {"seam_score": round(seam_score(res.image, grid), 3),
                     "levels": np.bincount(np.asarray(res.levels).ravel(), minlength=12).tolist()}
        if args.tiff:
            write_tiff(f"fig9_{name}.tif", np.asarray(res.image, np.float32), overwrite=True)
        print(f"{name:12s} stride {stride}: seam score {out[name]['seam_score']}")
    out["input_seam_score"] = round(seam_score(img, patch_grid(img.shape, stride=84)), 3)
    print(f"input        seam score {out['input_seam_score']} (no montage)")
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
