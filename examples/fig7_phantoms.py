"""Fig. 7 of He et al. 2020: beads (O1), a ring (O2) and a real 3-cell crop (O3) restored.

    python examples/fig7_phantoms.py [--level 4] [-o fig7.json]

Each 84x84 object (with 24 px of context) is blurred with one level's Eq. 2 PSF, given camera
noise, then restored by DV (DelpNet's level), DI (in-focus PSF) and blind RL; PSNR (16-bit peak)
and SSIM (reference range) against the in-focus object, as in Fig. 7(f).
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.checkpoint import load_delpnet
from lbdvd_jax.data import add_camera_noise
from lbdvd_jax.deconv import blind_richardson_lucy, richardson_lucy
from lbdvd_jax.io import read_tiff
from lbdvd_jax.model import classify_patches
from lbdvd_jax.optics import Optics
from lbdvd_jax.phantoms import phantom
from lbdvd_jax.quality import psnr, ssim
from lbdvd_jax.synthesis import bundled_path

C = 24  # context px
P = 84


def objects(seed):
    size = P + 2 * C + 48  # room for a 'valid' blur with a 49 px PSF

    def draw(kind, salt):  # the first draw with objects in the central patch
        for i in range(50):
            obj = np.asarray(phantom(jax.random.PRNGKey(1000 * salt + seed + i), size=size,
                                     kind=kind))
            mid = obj[24 + C:24 + C + P, 24 + C:24 + C + P]
            if mid.max() - mid.min() > 300:
                return obj
        return obj

    beads, ring = draw("beads", 1), draw("rings", 2)
    field = read_tiff(bundled_path("a01_infocus.tif")).data.astype(np.float32)
    cells = field[300 - size // 2:300 + size - size // 2, 520 - size // 2:520 + size - size // 2]
    return {"O1_beads": np.asarray(beads), "O2_ring": np.asarray(ring), "O3_cells": cells}


def main(argv=None):
    from lbdvd_jax.psf import psf_stack
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--level", type=int, default=4)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--model", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default="fig7.json")
    args = p.parse_args(argv)
    model, source = load_delpnet(args.model), args.model or "shipped"
    psfs = psf_stack(Optics(), size=49)
    rl = jax.jit(richardson_lucy, static_argnames="num_iter")
    blind = jax.jit(blind_richardson_lucy, static_argnames="num_iter")
    out = {"level": args.level, "model": source, "objects": {}}
    print(f"{'object':10s} {'method':6s} {'PSNR dB':>8s} {'SSIM':>6s}")
    for i, (name, obj) in enumerate(objects(args.seed).items()):
        blurred = jax.scipy.signal.fftconvolve(obj, psfs[args.level], mode="valid")
        key = jax.random.PRNGKey(args.seed + i)
        kept = float(jnp.sum(psfs[args.level] ** 2)) if name == "O3_cells" else 0.0
        noisy = jnp.round(add_camera_noise(key, blurred, present=kept))
        noisy = jnp.clip(noisy, 0, None)
        ref = jnp.asarray(obj[24 + C:24 + C + P, 24 + C:24 + C + P])
        centre = noisy[C:C + P, C:C + P]
        label = int(classify_patches(model, np.asarray(centre)[None])[0][0])
        lev = 0 if label == 11 else label
        bg = float(jnp.percentile(noisy, 0.5))  # camera background, as restore(background='auto')
        sub = jnp.maximum(noisy - bg, 0)
        crop = lambda x: x[C:C + P, C:C + P] + bg
        it = args.iterations
        results = {
            "noisy": centre,
            "dv": centre if lev == 0 else crop(rl(sub, psfs[lev], num_iter=it)),
            "dv_oracle": crop(rl(sub, psfs[args.level], num_iter=it)),
            "di": crop(rl(sub, psfs[0], num_iter=it)),
            "blind": crop(blind(sub, psfs[5], num_iter=it)[0]),
        }
        rng = float(ref.max() - ref.min())
        entry = {"predicted_label": label, "background": bg}
        for m, est in results.items():
            entry[m] = {"psnr_db": round(float(psnr(ref, est)), 2),
                        "ssim": round(float(ssim(ref, est, data_range=rng)), 3)}
            print(f"{name:10s} {m:6s} {entry[m]['psnr_db']:8.2f} {entry[m]['ssim']:6.3f}")
        out["objects"][name] = entry
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
