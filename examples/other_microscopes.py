"""In-focus calls on real images: sharp nuclei from other microscopes (stardist, mahotas) and
the in-focus BBBC006 fields, for one or more estimator weights.

    python examples/other_microscopes.py runs/ft_plain/best.npz runs/ft_zoom/best.npz -o out.json
"""

import argparse
import json
import os
import pathlib
import sys
import warnings

import numpy as np
import tifffile

from lbdvd_jax.checkpoint import load_delpnet
from lbdvd_jax.defocus_map import EstimatorDomainWarning
from lbdvd_jax.fields import load_infocus_fields
from lbdvd_jax.pipeline import predict_levels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--data", default=os.environ.get("LBDVD_REAL_DATA", "../shared/data/real"))
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", EstimatorDomainWarning)
    data = pathlib.Path(args.data)
    images = {p.stem: tifffile.imread(p).astype(np.float32) for p in sorted((data / "other").glob("*.tif"))}
    fields, names = load_infocus_fields(data / "bbbc006" / "infocus")
    images.update({n.split("__")[1]: f for n, f in zip(names, fields)})
    out = {}
    for w in args.weights:
        model = load_delpnet(w)
        row = {}
        for name, img in images.items():
            lab = predict_levels(img, model=model).labels
            fg = lab != 11
            row[name] = {"le1": float(np.mean(lab[fg] <= 1)) if fg.any() else None,
                         "level_counts": np.bincount(lab, minlength=12).tolist()}
        out[w] = row
        print(w, {k: round(v["le1"], 2) for k, v in row.items()})
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
