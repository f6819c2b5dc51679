"""End-to-end restore(): DelpNet levels + depth-variant RL + triangular montage, per stage.

    python benchmarks/bench_restore.py [--quick] [--repeats 5] [--mode dv] [--devices N]
    python benchmarks/bench_restore.py --quick --sizes --defocus continuous   # vs levels, same run

One XLA host device per core by default (what the `lbdvd` command sets up), so restore()
splits patches and classifier batches over the cores.

696x520 (a BBBC006 field defocused with the demo's tilted depth map): compile (first call)
apart, then the median of `repeats` steady runs, split into classification (patch gather +
DelpNet) and deconvolution (chunked RL + montage; the montage/gather share is measured with
0 RL iterations). Larger images (2048^2, and 8192^2 without --quick) run in fresh processes so
that their peak resident memory (ru_maxrss, which sees XLA's buffers; tracemalloc does not) is
their own (VmHWM). Quality attached: PSNR against the in-focus field. Last line: one JSON object with
key `seconds_696x520`. The CPU is shared: os.getloadavg() is recorded before and after.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, environment  # noqa: E402

MODEL = [None]


def _model():
    import warnings

    from lbdvd_jax.checkpoint import PAPER_DELPNET, load_delpnet
    path = PAPER_DELPNET if MODEL[0] == "paper" else MODEL[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_delpnet(path), MODEL[0] or "shipped"


def _image(shape):
    from lbdvd_jax.io import read_tiff
    from lbdvd_jax.synthesis import bundled_path, synthesize_defocus
    focus = read_tiff(bundled_path("a01_infocus.tif")).data.astype(np.float32)
    img, _ = synthesize_defocus(focus, seed=1)
    if tuple(shape) != img.shape:
        reps = (-(-shape[0] // img.shape[0]), -(-shape[1] // img.shape[1]))
        tiles = [[img[:, ::(-1) ** j][::(-1) ** i] for j in range(reps[1])] for i in range(reps[0])]
        img = np.block(tiles)[:shape[0], :shape[1]]
        focus = None
    return np.ascontiguousarray(img), focus


def _peak_mb():
    """This process image's peak resident memory (VmHWM; ru_maxrss would also carry the parent's
    resident size at fork across exec)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_size(side, mode, num_iter=15):
    """Fresh process: compile + run, then a steady run, and peak RSS."""
    from lbdvd_jax.pipeline import restore_timed
    model, source = _model()
    img, _ = _image((side, side))
    rss0 = _peak_mb()
    kw = dict(model=model, mode=mode, num_iter=num_iter)
    res, first = restore_timed(img, **kw)
    # above 4096^2 one call only (minutes; its compile, a few seconds, is counted in)
    steady = restore_timed(img, **kw)[1] if side <= 4096 else first
    return {"side": side, "pixels": side * side, "patches": int(np.asarray(res.levels).size),
            "first_call_s": round(first["total"], 2), "steady_s": round(steady["total"], 2),
            "steady_includes_compile": side > 4096,
            "stages_s": {k: round(v, 2) for k, v in steady.items()},
            "peak_rss_mb": round(_peak_mb(), 1),
            "rss_before_mb": round(rss0, 1), "model": source, "num_iter": num_iter,
            # the memory model (README "Big images"): 4 float32 images + 1 GB for runtime and programs
            "memory_bound_mb": round(4 * 4 * side * side / 2**20 + 1024, 1),
            "within_memory_bound": _peak_mb() <= 4 * 4 * side * side / 2**20 + 1024}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="skip 8192^2 and use 3 repeats")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mode", default="dv", choices=("dv", "di", "oracle", "soft"))
    p.add_argument("--sizes", type=int, nargs="*", default=None)
    p.add_argument("--devices", type=int, default=None,
                   help="XLA host devices (default: one per core, as the lbdvd command); "
                        "restore splits patches and classifier batches over them")
    p.add_argument("--large-num-iter", type=int, default=15,
                   help="RL iterations for the large sizes (fewer: a quick memory probe)")
    p.add_argument("--model", default=None, help="weights .npz, or 'paper' for the paper's DelpNet "
                   "(default: the shipped estimator, timed beside the paper's DelpNet)")
    p.add_argument("--defocus", default="levels", choices=("levels", "continuous"),
                   help="'continuous' (mode dv): per-patch depths and the fitted policy, timed beside "
                        "'levels' in the same run")
    p.add_argument("--_size", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    MODEL[0] = args.model
    from lbdvd_jax.cli import use_host_cores  # before JAX starts; inherited by the subprocesses

    use_host_cores(cpu_count=args.devices)
    if args._size:
        print(json.dumps(one_size(args._size, args.mode, args.large_num_iter)))
        return
    import jax

    from lbdvd_jax.pipeline import restore_timed
    from lbdvd_jax.quality import psnr
    result = environment()
    model, source = _model()
    img, focus = _image((520, 696))
    repeats = 3 if args.quick else args.repeats
    dkw = {"defocus": args.defocus} if args.mode == "dv" else {}
    _, first = restore_timed(img, model=model, mode=args.mode, **dkw)
    runs = [restore_timed(img, model=model, mode=args.mode, **dkw) for _ in range(repeats)]
    res = runs[-1][0]
    steady = {k: float(np.median([r[1][k] for r in runs])) for k in runs[0][1]}
    _, gather = restore_timed(img, model=model, mode=args.mode, num_iter=0)  # compile
    gather = float(np.median([restore_timed(img, model=model, mode=args.mode, num_iter=0)[1]
                              ["deconvolve"] for _ in range(repeats)]))
    levels = np.asarray(res.levels).ravel()
    n_active = int(np.sum((levels != 0) & (levels != 11))) if args.mode != "di" else levels.size
    result.update({
        "mode": args.mode, "model": source, "repeats": repeats, "devices": jax.local_device_count(),
        "seconds_696x520": round(steady["total"], 3),
        "first_call_696x520_s": round(first["total"], 2),
        "compile_696x520_s": round(first["total"] - steady["total"], 2),
        "stages_696x520_s": {"classify": round(steady["classify"], 3),
                             "rl": round(steady["deconvolve"] - gather, 3),
                             "gather_montage": round(gather, 3)},
        "spread_696x520_s": [round(min(r[1]["total"] for r in runs), 3),
                             round(max(r[1]["total"] for r in runs), 3)],
        "patches": int(levels.size), "patches_deconvolved": n_active,
        "psnr_in_db": round(float(psnr(focus, img)), 2),
        "psnr_out_db": round(float(psnr(focus, res.image)), 2),
        "target_s": 1.0,
    })
    if args.defocus == "continuous" and args.mode == "dv":  # the levels baseline in the same run
        restore_timed(img, model=model, mode="dv")  # compile
        lruns = [restore_timed(img, model=model, mode="dv") for _ in range(repeats)]
        result["defocus"] = "continuous"
        result["levels_696x520"] = {
            "seconds": round(float(np.median([r[1]["total"] for r in lruns])), 3),
            "psnr_out_db": round(float(psnr(focus, lruns[-1][0].image)), 2)}
        result["continuous_over_levels_time"] = round(
            result["seconds_696x520"] / result["levels_696x520"]["seconds"], 3)
    if args.mode in ("dv", "soft") and MODEL[0] != "paper":  # the baseline in the same run
        MODEL[0], keep = "paper", MODEL[0]
        paper, _ = _model()
        MODEL[0] = keep
        restore_timed(img, model=paper, mode=args.mode)  # compile
        pruns = [restore_timed(img, model=paper, mode=args.mode) for _ in range(repeats)]
        result["paper_delpnet_696x520"] = {
            "seconds": round(float(np.median([r[1]["total"] for r in pruns])), 3),
            "classify_s": round(float(np.median([r[1]["classify"] for r in pruns])), 3),
            "psnr_out_db": round(float(psnr(focus, pruns[-1][0].image)), 2)}
        result["speed_ratio_vs_paper_delpnet"] = round(
            result["paper_delpnet_696x520"]["seconds"] / result["seconds_696x520"], 3)
    sizes = args.sizes if args.sizes is not None else ([2048] if args.quick else [2048, 8192])
    large = []
    for side in sizes:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--_size", str(side), "--mode", args.mode,
                              "--large-num-iter", str(args.large_num_iter)]
                             + (["--model", args.model] if args.model else [])
                             , capture_output=True, text=True)
        if out.returncode != 0:
            large.append({"side": side, "error": out.stderr.strip().splitlines()[-1:]})
            continue
        entry = json.loads(out.stdout.strip().splitlines()[-1])
        entry["wall_s"] = round(time.perf_counter() - t0, 1)
        large.append(entry)
        print(json.dumps(entry), file=sys.stderr)
    result["large"] = large
    if large and all("steady_s" in e for e in large):
        base = result["seconds_696x520"] / (520 * 696)
        result["steady_s_per_mpx"] = {str(e["side"]): round(e["steady_s"] / e["pixels"] * 1e6, 3)
                                      for e in large}
        result["steady_s_per_mpx"]["696x520"] = round(base * 1e6, 3)
    result["device_kind"] = jax.devices()[0].device_kind
    emit(result)


if __name__ == "__main__":
    main()
