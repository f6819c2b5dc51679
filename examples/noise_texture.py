"""Do the estimators' level-0 / level-1 calls follow the synthetic noise texture? A causal probe.

The synthetic levels carry a noise texture that real images do not (`focus_ambiguity.py`,
`synthetic_noise_power_ratio`): the in-focus field's own camera noise, blurred, stays at low
frequencies at 2 µm. This script adds that texture to a true in-focus image and nothing else:
level 0 of a held-out field plus its own camera noise (variance from its counts, as calibrated)
blurred by the 2 µm PSF. The mean image is unchanged, so a reading of the specimen's blur would
not move; a call that moves follows the noise. For each model, the share of foreground patches
called level 0 and level 1 on level 0, on level 0 with the texture, and on level 1, each patch's
own call and the default pooling.

    python examples/noise_texture.py --model shipped paper runs/spec_field/last.npz -o texture.json

Prints one JSON summary as its last line.
"""

import argparse
import os
import sys

import jax.numpy as jnp
import numpy as np
from scipy import signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import DEFAULT_FIELDS, write_result  # noqa: E402

from lbdvd_jax.camera import camera_variance  # noqa: E402
from lbdvd_jax.constants import BG_LABEL  # noqa: E402
from lbdvd_jax.optics import Optics  # noqa: E402
from lbdvd_jax.psf import psf_stack  # noqa: E402


def lowpass_camera_noise(image, depth_um, seed, optics=Optics()):
    """Camera noise at `image`'s counts (variance `camera.camera_variance`), blurred
    by the Eq. 2 PSF at `depth_um` (unit sum): the texture the synthetic blur leaves behind."""
    psf = np.asarray(psf_stack(optics, jnp.asarray([depth_um]), size=49), np.float64)[0]
    variance = camera_variance(np.asarray(image, np.float64))
    white = np.sqrt(variance) * np.random.default_rng(seed).standard_normal(np.shape(image))
    return signal.fftconvolve(white, psf / psf.sum(), mode="same")


def level_shares(labels):
    """(share called level 0, share called level 1) of the foreground (non-bg) patches."""
    labels = np.asarray(labels)
    fg = labels != BG_LABEL
    if not fg.any():
        return [None, None]
    return [float(np.mean(labels[fg] == 0)), float(np.mean(labels[fg] == 1))]


def main(argv=None):
    import warnings

    from lbdvd_jax.checkpoint import PAPER_DELPNET, load_delpnet
    from lbdvd_jax.defocus_map import EstimatorDomainWarning, defocus_map, predict_defocus
    from lbdvd_jax.fields import load_infocus_fields
    from lbdvd_jax.synthesis import synthesize_defocus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=["shipped"],
                    help="'shipped', 'paper' (the paper's DelpNet) or estimator weights (.npz); several allowed")
    ap.add_argument("--fields", default=DEFAULT_FIELDS, help="folder of in-focus BBBC006 fields")
    ap.add_argument("--field", nargs="+", default=["a01", "a02"], help="held-out fields (parts of their names)")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", EstimatorDomainWarning)
    fields, names = load_infocus_fields(args.fields)
    chosen = {}
    for part in args.field:
        hits = [i for i, n in enumerate(names) if part in n]
        if len(hits) != 1:
            ap.error(f"--field: {part!r} matches {len(hits)} of {names}; give a part of exactly one name")
        chosen[part] = fields[hits[0]]
    result = {"what": __doc__.splitlines()[0], "models": {}}
    for spec in args.model:
        path = None if spec == "shipped" else PAPER_DELPNET if spec == "paper" else spec
        if path not in (None, PAPER_DELPNET) and not os.path.isfile(path):
            ap.error(f"--model: {spec} is not a file; give 'shipped', 'paper' or an estimator .npz")
        model = load_delpnet(path)
        rows = {}
        for part, field in chosen.items():
            level0, _ = synthesize_defocus(field, level=0, seed=0)
            level1, _ = synthesize_defocus(field, level=1, seed=1)
            textured = np.round(level0 + lowpass_camera_noise(level0, 2.0, seed=2)).astype(np.float32)
            row = {}
            for tag, img in (("level0", level0), ("level0_texture", textured), ("level1", level1)):
                own = predict_defocus(img, model=model, pool=False)  # the estimator runs once per image
                row[f"{tag} own"] = level_shares(own.labels)
                row[f"{tag} pooled"] = level_shares(defocus_map(own.own_probs, own.origins, warn=False).labels)
            rows[part] = row
        result["models"][spec] = rows
    summary = {m: {f: {k: [None if v is None else round(v, 3) for v in s] for k, s in r.items() if "own" in k}
                   for f, r in rows.items()} for m, rows in result["models"].items()}
    write_result(result, args.output, summary=summary)


if __name__ == "__main__":
    main()
