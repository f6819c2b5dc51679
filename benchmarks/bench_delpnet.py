"""DelpNet throughput on this machine: inference patches/s over batch sizes, training patches/s.

Compile time is measured apart (first call), then the median over repeats of steady-state calls
with ``block_until_ready``. The machine may be shared: ``os.getloadavg()`` is recorded before and
after. A quality number comes with it: the accuracy of the shipped weights on a small synthetic
eval set of a held-out field (when the data and weights are present), so that a fast wrong model
cannot pass. Paper anchor: 500 patches/s on a GTX 1060.

    .venv/bin/python benchmarks/bench_delpnet.py [--quick]

The last line of the output is one JSON object; ``patches_per_s`` is the best inference rate of
the deployed path (``classify_patches``: BatchNorm folded into the convolutions, batches split
over one XLA host device per core); ``module_patches_per_s`` is the NNX module as trained.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lbdvd_jax import checkpoint as ckpt_lib
from lbdvd_jax import train as T
from lbdvd_jax.model import DelpNet, DelpNetConfig, _predict_fn, classify_patches, conv_macs, count_params

DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "bbbc006" / "infocus"
PAPER_PATCHES_PER_S = 500.0  # GTX 1060, He et al. 2020


def _time(fn, repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return compile_s, statistics.median(times), (min(times), max(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats (< 1 min on an idle machine)")
    p.add_argument("--devices", type=int, default=None,
                   help="XLA host devices (default: one per core, as the lbdvd command)")
    args = p.parse_args(argv)
    from lbdvd_jax.cli import use_host_cores  # before JAX starts its CPU client (first array)

    use_host_cores(cpu_count=args.devices)
    load_before = os.getloadavg()
    if ckpt_lib.SHIPPED_WEIGHTS.exists():
        model = ckpt_lib.load_delpnet(ckpt_lib.PAPER_DELPNET)
        weights = "shipped"
    else:
        model = DelpNet(DelpNetConfig(), rngs=nnx.Rngs(0))
        model.eval()
        weights = "random init (no shipped weights)"
    cfg = model.config
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    predict = jax.jit(functools.partial(T.predict_logits, graphdef))  # the NNX module as trained
    deployed, folded = _predict_fn(model)  # what classify_patches runs
    sizes = (1, 64, 256) if args.quick else (1, 16, 64, 128, 256, 512)
    repeats = 2 if args.quick else 5
    rng = np.random.default_rng(0)
    infer = {}
    for b in sizes:
        x = jnp.asarray(rng.random((b, cfg.patch_size, cfg.patch_size, 1)) * 0.01, jnp.float32)
        c, med, spread = _time(lambda: predict(params, batch_stats, x), repeats)
        c2, med2, spread2 = _time(lambda: deployed(folded, x), repeats)
        infer[b] = {"compile_s": round(c2, 2), "median_s": med2, "patches_per_s": round(b / med2, 1),
                    "spread_s": [round(s, 4) for s in spread2],
                    "module_patches_per_s": round(b / med, 1)}
        print(f"inference batch {b:4d}: {b / med2:8.1f} patches/s deployed (BN folded, split over "
              f"{jax.local_device_count()} devices), module {b / med:8.1f} (compile {c2:.1f} s)",
              file=sys.stderr, flush=True)
    # training step (fast preset, batch 64 as in the shipped run; data generation excluded)
    tb = 32 if args.quick else 64
    tcfg = T.TrainConfig(batch_size=tb)
    g, opt, state = T.init_state(cfg, tcfg)
    step = jax.jit(functools.partial(T.train_step, g, opt))
    x = jnp.asarray(rng.random((tb, cfg.patch_size, cfg.patch_size, 1)) * 0.01, jnp.float32)
    y = jnp.asarray(rng.integers(0, cfg.num_classes, tb), jnp.int32)
    key = jax.random.PRNGKey(0)
    holder = {"s": state}

    def one():
        holder["s"], m = step(holder["s"], x, y, key)
        return m

    c, med, spread = _time(one, max(repeats - 1, 2))
    train = {"batch_size": tb, "compile_s": round(c, 2), "median_s": med, "patches_per_s": round(tb / med, 1)}
    print(f"training batch {tb}: {tb / med:.1f} patches/s (compile {c:.1f} s)", file=sys.stderr, flush=True)
    # quality: accuracy of these weights on a small held-out synthetic set (when the data exist)
    quality = None
    if weights == "shipped" and DATA.is_dir():
        from lbdvd_jax import data
        from lbdvd_jax.optics import Optics
        from lbdvd_jax.psf import psf_stack

        fields, names = data.load_infocus_fields(DATA)
        test_idx = data.split_fields(names, seed=0)["test"]
        xe, ye = data.make_eval_set(jax.random.PRNGKey(10_002), fields[test_idx], psf_stack(Optics(), size=49),
                                    per_level=4 if args.quick else 20, with_bg=cfg.num_classes == 12)
        labels, _ = classify_patches(model, xe[..., 0] * 65535.0)
        quality = {"test_field_accuracy": float((labels == ye).mean()), "n": int(len(ye))}
    best = max(v["patches_per_s"] for v in infer.values())
    result = {
        "benchmark": "delpnet",
        "patches_per_s": best,
        "best_batch": max(infer, key=lambda b: infer[b]["patches_per_s"]),
        "inference": infer,
        "training": train,
        "paper_patches_per_s": PAPER_PATCHES_PER_S,
        "ratio_vs_paper": round(best / PAPER_PATCHES_PER_S, 3),
        "params": count_params(model),
        "macs_per_patch": conv_macs(cfg),
        "weights": weights,
        "quality": quality,
        "jax": jax.__version__,
        "device_kind": jax.devices()[0].device_kind,
        "devices": jax.local_device_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "quick": args.quick,
    }
    # every estimator variant beside DelpNet, same run (inference, training, FLOPs, accuracy)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from bench_estimator import measure as measure_variants
    result["variants"] = measure_variants(args.quick)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
