"""`lbdvd train --paper-delpnet`: the paper's DelpNet on synthetic defocus of real fields, resumably.

The in-focus fields come from --data or the environment variable LBDVD_INFOCUS (a folder of
in-focus TIFFs, e.g. BBBC006's). The command of lbdvd_jax/weights/delpnet.npz (defaults = that run):

    nohup lbdvd train --paper-delpnet --out runs/main > runs/main.log 2>&1 &

i.e. fast preset (AdamW, lr 1e-3, 100 warmup steps, constant, linear cooldown over the last 900 of
2200 steps), batch 64, 25 % phantoms, field split 5/1/1 of the 7 BBBC006 fields, seed 0. The
shipped run was resumed 3 times from its orbax checkpoints to re-plan the cooldown as the shared
CPU's speed changed (--total-steps 6000 -> 1350 -> 1900 -> 2200), so its steps 1300-1400 ran
with a slightly steeper cooldown (lr 1e-3 -> 8.3e-4 instead of -> 8.9e-4); all other steps
match the single command above exactly.

Re-running the same command resumes from the last checkpoint in --out. Change --total-steps on a
resume to move the cooldown of the warmup-stable-decay schedule earlier or later. Then finalise
(BN re-estimation over 50 training batches, val/test/train-field reports, export):

    lbdvd train --paper-delpnet --out runs/main --finalize --export lbdvd_jax/weights/delpnet.npz

Smoke test (seconds): --smoke.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax import checkpoint as ckpt_lib
from lbdvd_jax import data, metrics_cls
from lbdvd_jax import train as T
from lbdvd_jax.model import DelpNetConfig, conv_macs, count_params
from lbdvd_jax.optics import Optics
from lbdvd_jax.psf import psf_stack

DATA = os.environ.get("LBDVD_INFOCUS")  #: default folder of in-focus training fields


def parse(argv=None):
    p = argparse.ArgumentParser(prog="lbdvd train --paper-delpnet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/main", help="run directory (checkpoints, history, best.npz)")
    p.add_argument("--data", default=DATA, required=DATA is None,
                   help="folder of in-focus TIFF fields (default: $LBDVD_INFOCUS)")
    p.add_argument("--preset", default="fast", choices=T.PRESETS)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--total-steps", type=int, default=2200)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--cooldown-steps", type=int, default=900)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--ckpt-minutes", type=float, default=4.0)
    p.add_argument("--bn-batches", type=int, default=20, help="BN re-estimation batches per evaluation")
    p.add_argument("--per-level", type=int, default=100, help="val/test patches per level")
    p.add_argument("--phantom-fraction", type=float, default=0.25)
    p.add_argument("--protocol", default="field", choices=("field", "paper"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-bg", action="store_true")
    p.add_argument("--no-bn", action="store_true")
    p.add_argument("--no-dropout", action="store_true")
    p.add_argument("--bn-momentum", type=float, default=0.6)
    p.add_argument("--finalize", action="store_true", help="evaluate best.npz on the test split and export")
    p.add_argument("--export", default=None, help="with --finalize: write the exported weights here")
    p.add_argument("--raw-bn", action="store_true",
                   help="score the LAST checkpoint with its running BN statistics as trained (no "
                        "re-estimation): what BN momentum changes (paper Fig. 5)")
    p.add_argument("--smoke", action="store_true", help="tiny model and run (seconds)")
    return p.parse_args(argv)


def setup(args):
    fields, names = data.load_infocus_fields(args.data)
    psfs = psf_stack(Optics(), size=49)
    with_bg = not args.no_bg
    if args.protocol == "field":
        split = data.split_fields(names, seed=args.seed)
        src = {k: fields[v] for k, v in split.items()}
        masks = {k: None for k in split}
        split_desc = {k: [names[i] for i in v] for k, v in split.items()}
    else:
        split = data.split_fields(names, seed=args.seed, protocol="paper")
        src = {k: fields for k in split}
        masks = {k: jnp.asarray(v) for k, v in split.items()}
        split_desc = {k: np.argwhere(v).tolist() for k, v in split.items()}
    model_config = DelpNetConfig(
        num_classes=12 if with_bg else 11,
        use_batchnorm=not args.no_bn,
        bn_momentum=args.bn_momentum,
        dropout_rate=0.0 if args.no_dropout else 0.1,
        head_dropout_rate=0.0 if args.no_dropout else 0.2,
        **({"features": ((8, 5, 2), (8, 3, 2), (16, 3, 1), (16, 3, 2), (16, 3, 1), (16, 3, 2), (16, 3, 1))}
           if args.smoke else {}),
    )
    batch_kw = dict(batch_size=args.batch_size, augment=True, phantom_fraction=args.phantom_fraction,
                    with_bg=with_bg)
    train_mask = masks["train"]

    def batch_fn(key, fields, psfs):
        return data.synth_batch(key, fields, psfs, level_mask=train_mask, **batch_kw)

    src["train_fields"], masks["train_fields"] = src["train"], masks["train"]

    def eval_set(which, seed_offset):
        kw = dict(with_bg=with_bg)
        if masks[which] is not None:
            kw["level_mask"] = masks[which]
        return data.make_eval_set(jax.random.PRNGKey(10_000 + seed_offset), src[which], psfs,
                                  per_level=args.per_level, **kw)

    return model_config, batch_fn, (jnp.asarray(src["train"]), psfs), eval_set, split_desc


def main(argv=None):
    args = parse(argv)
    if args.smoke:
        args.batch_size, args.total_steps, args.warmup_steps, args.cooldown_steps = 8, 6, 2, 2
        args.eval_every, args.bn_batches, args.per_level = 3, 2, 4
    out = pathlib.Path(args.out)
    model_config, batch_fn, batch_args, eval_set, split_desc = setup(args)
    if args.finalize:
        return finalize(args, out, model_config, batch_fn, batch_args, eval_set, split_desc)
    if args.raw_bn:
        return raw_bn_reports(out, eval_set)
    config = T.TrainConfig(
        preset=args.preset, learning_rate=args.lr, total_steps=args.total_steps, warmup_steps=args.warmup_steps,
        cooldown_steps=args.cooldown_steps, batch_size=args.batch_size, seed=args.seed,
    )
    print(f"DelpNet {model_config}\n  {conv_macs(model_config) / 1e6:.1f} M MAC/patch | split {split_desc}",
          file=sys.stderr, flush=True)
    t = time.perf_counter()
    val = eval_set("val", 1)
    print(f"val set {val[0].shape}, class counts {np.bincount(val[1]).tolist()} [{time.perf_counter() - t:.0f} s]",
          file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text(" ".join([sys.executable, *sys.argv]) + "\n")
    graphdef, state, history = T.fit(
        model_config, config, batch_fn, batch_args, out_dir=out, eval_set=val, eval_every=args.eval_every,
        ckpt_every_s=args.ckpt_minutes * 60, max_steps=args.max_steps,
        max_seconds=None if args.max_minutes is None else args.max_minutes * 60,
        bn_batches=args.bn_batches, log_every=10 if not args.smoke else 1,
    )
    print(f"done at step {int(state.step)}; params {count_params(T.model_from_state(graphdef, state))}",
          file=sys.stderr)
    return 0


def raw_bn_reports(out, eval_set):
    """The last checkpoint with its running BatchNorm statistics as trained -> report_*_raw_bn.json.

    Training forward passes use batch statistics, so BN momentum changes only the running
    averages that inference uses; re-estimating them (what --finalize does) hides its effect.
    """
    cfg = json.loads((out / "config.json").read_text())
    model_config = DelpNetConfig.from_dict(cfg["model"])
    graphdef, _, like = T.init_state(model_config, T.TrainConfig(**cfg["train"]))
    with ckpt_lib.checkpoint_manager(out / "ckpt") as mgr:
        state = ckpt_lib.restore_train_state(mgr, like)
    for i, which in enumerate(("val", "test")):
        x, y = eval_set(which, i + 1)
        rep = T.evaluate(graphdef, state.params, state.batch_stats, x, y)
        rep["step"] = int(state.step)
        metrics_cls.write_report(rep, out / f"report_{which}_raw_bn.json")
        print(f"{which} (running BN stats as trained, step {rep['step']}): acc {rep['accuracy']:.4f} "
              f"±1 {rep['within_1']:.4f} F1 {rep['f1']:.4f}")
    return 0


def finalize(args, out, model_config, batch_fn, batch_args, eval_set, split_desc):
    """Best checkpoint -> BN re-estimation (50 batches) -> val + test reports -> exported weights."""
    stored, arrays, meta = ckpt_lib.read_weights(out / "best.npz")
    model = ckpt_lib.load_delpnet(out / "best.npz")
    from flax import nnx

    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    keys = jax.random.split(jax.random.PRNGKey(777), 50)
    bfn = jax.jit(batch_fn)
    batch_stats = T.reestimate_batch_stats(graphdef, params, batch_stats,
                                           (bfn(k, *batch_args)[0] for k in keys))
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").exists() else []
    reports = {}
    # val / test: held-out fields; train_fields: fresh crops and noise of the training fields (what
    # the paper's image-level split measures, since its test images share fields with training)
    for i, which in enumerate(("val", "test", "train_fields")):
        x, y = eval_set(which, i + 1)
        rep = T.evaluate(graphdef, params, batch_stats, x, y)
        reports[which] = rep
        metrics_cls.write_report(rep, out / f"report_{which}.json", history=history)
        print(f"{which}: n {rep['n']} acc {rep['accuracy']:.4f} P {rep['precision']:.4f} R {rep['recall']:.4f} "
              f"F1 {rep['f1']:.4f} ±1 {rep['within_1']:.4f} top-k {[round(v, 4) for v in rep['top_k'][:4]]}")
        print(metrics_cls.format_confusion(rep["confusion"], rep["class_names"]))
    if args.export:
        cmd = (out / "command.txt").read_text().strip() if (out / "command.txt").exists() else ""
        keep = ("n", "accuracy", "loss", "precision", "recall", "f1", "within_1", "top_k", "confusion")
        metadata = {
            "best_step": meta.get("step"), "command": cmd, "split": split_desc, "protocol": args.protocol,
            **{w: {k: reports[w][k] for k in keep} for w in reports},
            "history": history, "bn_reestimation_batches": 50,
        }
        path = ckpt_lib.export_weights(args.export, stored, params, batch_stats, metadata=metadata)
        pathlib.Path(args.export).with_suffix(".json").write_text(json.dumps(metadata, indent=1))
        print(f"exported {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
