"""Big image on a local dask.distributed cluster vs the in-memory restore, same run.

Writes a SIZE x SIZE uint16 OME-Zarr (the bundled BBBC006 field defocused by the demo's tilted
depth map, tiled; 1024² chunks), restores it
with ``lbdvd restore IN.ome.zarr -o OUT.ome.zarr --scheduler distributed --workers 2`` and
samples the resident memory of every process of that run (the client = the lbdvd command, the
scheduler and nannies in it, the worker processes) every 0.2 s. The baseline is the in-memory
``restore`` of a 2048² crop in a fresh process (steady: its compile apart), seconds per megapixel.
The distributed figure includes everything: cluster start, each worker's compile (the
persistent compilation cache starts empty), planning pass, deconvolution, OME-Zarr writing.
JSON last line.

    python benchmarks/bench_scale.py                 # 16384² (about 10 min on 2 cores)
    python benchmarks/bench_scale.py --size 4096     # quick
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write_result  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def defocused_tile():
    """The bundled in-focus field blurred by the demo's tilted depth map (0-20 µm, camera noise),
    mirrored 2x2: a restore whose time goes into RL, as for real out-of-focus data."""
    from lbdvd_jax.io import read_tiff
    from lbdvd_jax.synthesis import bundled_path, synthesize_defocus

    f, _ = synthesize_defocus(read_tiff(bundled_path("a01_infocus.tif")).data.astype(np.float32), seed=1)
    return np.block([[f, f[:, ::-1]], [f[::-1], f[::-1, ::-1]]])


def make_input(path, size):
    import dask.array as da
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    tile = np.clip(np.rint(defocused_tile()), 0, 65535).astype(np.uint16)
    reps = -(-size // tile.shape[0]), -(-size // tile.shape[1])
    arr = da.tile(da.from_array(tile), reps)[:size, :size].rechunk((1024, 1024))
    store = parse_url(str(path), mode="w", fmt=FormatV05()).store
    root = zarr.group(store=store, zarr_format=3)
    write_image(arr, root, axes="yx", fmt=FormatV05(), scale_factors=(), scale={"y": 0.65, "x": 0.65},
                axes_units={"y": "micrometer", "x": "micrometer"}, storage_options=dict(chunks=(1024, 1024)))


def run_sampled(cmd, env):
    """Run `cmd`; return (seconds, {pid: (peak_rss_bytes, role)}) over its whole process tree."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = {}
    stop = threading.Event()

    def role(p):
        try:
            line = " ".join(p.cmdline())
        except psutil.Error:
            return "?"
        if p.pid == proc.pid:
            return "client (lbdvd restore, scheduler thread)"
        if "spawn_main" in line or "multiprocessing" in line:
            return "worker"
        return line[:60]

    def sample():
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                old = peaks.get(p.pid, (0, None))
                peaks[p.pid] = (max(old[0], rss), old[1] or role(p))
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{err[-3000:]}")
    return time.perf_counter() - t0, peaks, out


BASELINE = """
import json, sys, time, warnings, numpy as np
warnings.simplefilter("ignore")
from lbdvd_jax import load_delpnet, restore
sys.path.insert(0, "benchmarks")
from bench_scale import defocused_tile
tile = np.clip(np.rint(defocused_tile()), 0, 65535).astype(np.float32)
img = np.tile(tile, (-(-2048 // tile.shape[0]), -(-2048 // tile.shape[1])))[:2048, :2048]
m = load_delpnet()
restore(img, model=m)  # compile for this shape apart
t = time.perf_counter(); r = restore(img, model=m); np.asarray(r.image); dt = time.perf_counter() - t
print(json.dumps({"seconds": dt}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block", type=int, default=2048, help="lbdvd restore --block (px)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_scale_cpu.json"))
    args = ap.parse_args(argv)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    base = subprocess.run([sys.executable, "-c", BASELINE], env=env, cwd=ROOT, capture_output=True, text=True)
    if base.returncode != 0:
        raise SystemExit(base.stderr[-3000:])
    base_s = json.loads(base.stdout.strip().splitlines()[-1])["seconds"]
    with tempfile.TemporaryDirectory(dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None) as tmp:
        src, dst = pathlib.Path(tmp) / "in.ome.zarr", pathlib.Path(tmp) / "out.ome.zarr"
        t = time.perf_counter()
        make_input(src, args.size)
        write_s = time.perf_counter() - t
        cmd = [sys.executable, "-m", "lbdvd_jax", "restore", str(src), "-o", str(dst), "--scheduler",
               "distributed", "--workers", str(args.workers), "--block", str(args.block), "-q"]
        # a fresh, empty compilation cache: every program is compiled at least once in the timing
        run_env = {k: v for k, v in env.items() if not k.startswith("JAX_COMPILATION_CACHE")}
        run_env["LBDVD_CACHE_DIR"] = str(pathlib.Path(tmp) / "xla_cache")
        seconds, peaks, out = run_sampled(cmd, run_env)
    mpx = args.size * args.size / 1e6
    procs = sorted(({"pid": pid, "role": r, "peak_rss_gb": round(rss / 1e9, 3)} for pid, (rss, r) in peaks.items()),
                   key=lambda d: -d["peak_rss_gb"])
    result = {
        "bench": "scale", "cpu": _cpu(), "cores": os.cpu_count(), "size": args.size, "workers": args.workers,
        "block": args.block, "compilation_cache": "fresh (empty) folder",
        "input_write_s": round(write_s, 1), "distributed_s": round(seconds, 1),
        "distributed_s_per_mpx": round(seconds / mpx, 4),
        "in_memory_2048_s_per_mpx": round(base_s / (2048 * 2048 / 1e6), 4),
        "ratio_distributed_over_in_memory": round(seconds / mpx / (base_s / (2048 * 2048 / 1e6)), 3),
        "max_process_peak_rss_gb": max(p["peak_rss_gb"] for p in procs), "processes": procs,
        "cli_output": out.strip().splitlines()[-1] if out.strip() else "",
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
