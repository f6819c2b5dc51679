"""Defocus estimators side by side: inference and training patches/s, FLOPs per patch, held-out
accuracy, and XLA CPU options (oneDNN) and bfloat16, each measured in the same run.

Variants: the shipped estimator (spectral + CNN), its spectral branch alone, and the paper's
DelpNet (`PAPER_DELPNET`). Accuracy: isolated 84x84 patches of held-out field a02 (paper
protocol, 50 per level) when ../shared/data/real (or $LBDVD_REAL_DATA) is present.

    .venv/bin/python benchmarks/bench_estimator.py [--quick] [--no-xla-options]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import emit, environment, time_call  # noqa: E402

DATA = pathlib.Path(os.environ.get("LBDVD_REAL_DATA", pathlib.Path(__file__).resolve().parents[2]
                                   / "shared" / "data" / "real"))


def _flops(fn, *args):
    import jax
    try:
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # cost analysis is best effort on some backends
        return float("nan")


def _variants():
    import jax
    from flax import nnx

    from lbdvd_jax.checkpoint import PAPER_DELPNET, load_delpnet
    from lbdvd_jax.estimator import DefocusEstimator, EstimatorConfig, estimator_logits
    from lbdvd_jax.estimator_weights import SHIPPED_ESTIMATOR
    from lbdvd_jax.model import delpnet_inference, fold_batchnorm

    out = {}
    if SHIPPED_ESTIMATOR.is_file():
        est = load_delpnet(SHIPPED_ESTIMATOR)
    else:
        est = DefocusEstimator(rngs=nnx.Rngs(0))
    g, p = nnx.split(est)
    out["estimator"] = (est, lambda x, g=g, p=p: jax.nn.softmax(estimator_logits(g, p, x)), "raw")
    spec = DefocusEstimator(EstimatorConfig(conv=()), rngs=nnx.Rngs(0))
    gs, ps = nnx.split(spec)
    out["spectral_only (untrained, speed only)"] = (
        spec, lambda x, g=gs, p=ps: jax.nn.softmax(estimator_logits(g, p, x)), "raw")
    dn = load_delpnet(PAPER_DELPNET)
    w = fold_batchnorm(dn)
    strides = tuple(s for _, _, s in dn.config.features)
    out["paper_delpnet"] = (dn, lambda x, w=w: delpnet_inference(w, x[..., None] / 65535.0, strides=strides),
                            "counts")
    return out


def _accuracy(model, per_level):
    import jax
    import numpy as np

    from lbdvd_jax.data import load_infocus_fields, make_eval_set, split_fields
    from lbdvd_jax.model import classify_patches
    from lbdvd_jax.optics import Optics
    from lbdvd_jax.psf import psf_stack
    folder = DATA / "bbbc006" / "infocus"
    if not folder.is_dir():
        return None
    fields, names = load_infocus_fields(folder)
    test = split_fields(names, seed=0)["test"]
    x, y = make_eval_set(jax.random.key(2), fields[test], psf_stack(Optics(), size=49), per_level=per_level)
    pred, _ = classify_patches(model, x[..., 0] * 65535.0)
    return float(np.mean(pred == y))


def measure(quick):
    import jax
    import jax.numpy as jnp
    import numpy as np

    rows = {}
    batch = 256
    x = jnp.asarray(np.random.default_rng(0).poisson(300, (batch, 84, 84)).astype(np.float32) + 100)
    for name, (model, fn, _) in _variants().items():
        jf = jax.jit(fn)
        t = time_call(lambda: jax.block_until_ready(jf(x)), repeats=3 if quick else 7)
        rows[name] = {"inference_patches_per_s": batch / t["median_s"], "compile_s": t["first_call_s"],
                      "gflop_per_patch": _flops(fn, x) / batch / 1e9}
        if not name.startswith("spectral"):
            rows[name]["heldout_a02_top1"] = _accuracy(model, 20 if quick else 50)
    rows["estimator"]["training"] = _train_rate(quick)
    return rows


def _train_rate(quick):
    """Steady-state training patches/s (data synthesis included), compile timed apart."""
    import jax
    import numpy as np

    from lbdvd_jax.estimator import EstimatorConfig
    from lbdvd_jax.estimator_train import EstimatorTrainConfig, init_train_state, make_train_step, training_psfs
    from lbdvd_jax.io import read_tiff
    from lbdvd_jax.synthesis import bundled_path
    fields = read_tiff(bundled_path("a01_infocus.tif")).data[None].astype(np.float32)
    tc = EstimatorTrainConfig(batch_size=128)
    graphdef, state = init_train_state(EstimatorConfig(), tc)
    step = make_train_step(graphdef, tc)
    psfs = training_psfs()
    box = [state]

    def run():
        box[0] = step(box[0], fields, psfs)[0]
        jax.block_until_ready(box[0].params)

    t = time_call(run, repeats=5 if quick else 20)
    return {"patches_per_s": tc.batch_size / t["median_s"], "compile_s": t["first_call_s"]}


def conv_dtype_rates(quick):
    """The pixel branch's convolutions in float32 vs bfloat16 (AVX2 has no bf16 arithmetic)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lbdvd_jax.estimator import DEFAULT_CONV
    out = {}
    for dt in (jnp.float32, jnp.bfloat16):
        rng = np.random.default_rng(0)
        ws, ch = [], 1
        for o, k, s in DEFAULT_CONV:
            ws.append((jnp.asarray(rng.normal(0, 0.1, (k, k, ch, o)), dt), s))
            ch = o

        def f(x, ws=ws):
            for w, s in ws:
                x = jax.nn.relu(jax.lax.conv_general_dilated(x, w, (s, s), "SAME",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
            return x.max(axis=(1, 2))

        x = jnp.asarray(rng.normal(size=(256, 84, 84, 1)), dt)
        jf = jax.jit(f)
        t = time_call(lambda: jax.block_until_ready(jf(x)), repeats=3 if quick else 7)
        out[jnp.dtype(dt).name] = 256 / t["median_s"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-xla-options", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:  # one XLA configuration, rates only
        import jax  # noqa: F401
        rows = measure(True)
        print(json.dumps({k: v["inference_patches_per_s"] for k, v in rows.items()}))
        return 0
    result = {"benchmark": "bench_estimator", **environment(), "variants": measure(args.quick),
              "pixel_branch_patches_per_s_by_dtype": conv_dtype_rates(args.quick)}
    if not args.no_xla_options:
        opts = {}
        for label, flags in (("default", ""), ("onednn", "--xla_cpu_use_onednn=true"),
                             ("onednn_custom_call", "--xla_cpu_use_onednn=true "
                                                    "--xla_cpu_experimental_onednn_custom_call=true")):
            env = dict(os.environ, XLA_FLAGS=flags)
            proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True,
                                  text=True, timeout=900)
            lines = proc.stdout.strip().splitlines()
            opts[label] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": proc.stderr[-300:]}
        result["inference_patches_per_s_by_xla_flags"] = opts
    result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
