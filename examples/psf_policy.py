"""The PSF depth for level-1 calls: RL gain (dB over the input) on the TRAINING fields.

Each training field is defocused uniformly at level 0 and at level 1 (calibrated camera noise,
`demo.synthesize_defocus`) and restored patch-wise with the PSF of each candidate depth and 1 or
2 iterations (every patch active). Level-1 calls meet both kinds of patches (in-focus patches are
often read as level 1), so the policy keeps the depth with the best mean over the two.

    python examples/psf_policy.py --fields ../shared/data/real/bbbc006/infocus -o out.json
"""

import argparse
import os
import sys

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import add_model_and_fields, write_result  # noqa: E402

from lbdvd_jax.data import load_infocus_fields, split_fields  # noqa: E402
from lbdvd_jax.optics import Optics  # noqa: E402
from lbdvd_jax.pipeline import restore  # noqa: E402
from lbdvd_jax.quality import psnr  # noqa: E402
from lbdvd_jax.synthesis import synthesize_defocus  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_fields(ap, model=False)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    fields, names = load_infocus_fields(args.fields)
    train = split_fields(names, seed=0)["train"]
    depths, iters = (0.0, 0.5, 1.0, 1.5, 2.0), (1, 2)
    gains = {}
    for i in train:
        ref = jnp.asarray(fields[i])
        for level in (0, 1):
            img, _ = synthesize_defocus(fields[i], level=level, seed=10 + level)
            base = float(psnr(ref, jnp.asarray(img)))
            for z in depths:
                for it in iters:
                    out = restore(img, mode="oracle", levels=np.full((12, 16), 1), num_iter=it,
                                  psf_depth_um=(0.0, z) + (0.0,) * 9, optics=Optics())
                    gains.setdefault(f"{z}um_{it}it", {}).setdefault(level, []).append(
                        float(psnr(ref, out.image)) - base)
    table = {k: {"level0_db": float(np.mean(v[0])), "level1_db": float(np.mean(v[1])),
                 "mean_db": float(np.mean(v[0] + v[1]))} for k, v in gains.items()}
    best = max(table, key=lambda k: table[k]["mean_db"])
    result = {"fields": [names[i] for i in train], "table": table, "best": best}
    for k, v in table.items():
        print(f"{k:10s} level 0 {v['level0_db']:+.2f} dB  level 1 {v['level1_db']:+.2f} dB  mean {v['mean_db']:+.2f}")
    print(f"best: {best}")
    write_result(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
