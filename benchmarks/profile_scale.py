"""Where the time of a distributed big-image restore goes: dask's task stream, per kind of task.

Writes a SIZE² uint16 OME-Zarr as `bench_scale.py` does, runs ``lbdvd restore IN -o OUT
--scheduler distributed --workers 2 --block BLOCK`` in this process (its LocalCluster, empty
compilation cache) and records every task's start and stop on the workers: the planning pass
(`_classify_block`, `_block_summary`), the deconvolution (`restore_block` inside the block
tasks), the writing (`_write_task`). Prints the tasks over 0.5 s and a JSON summary last: seconds
per kind summed over the workers, the wall time, and the time before the first and after the last
task (cluster start, model load, planning on the client, final metadata).

    python benchmarks/profile_scale.py --size 8192 --block 4096      # ~2.5 min on 2 cores
"""

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--block", type=int, default=4096)
    ap.add_argument("-o", "--output", default=None, help="JSON file to write")
    args = ap.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    tmp = pathlib.Path(tempfile.mkdtemp(dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None))
    os.environ["LBDVD_CACHE_DIR"] = str(tmp / "xla_cache")  # every program compiled in the run
    from bench_scale import make_input
    from distributed import get_task_stream

    import lbdvd_jax.cli_scale as cli_scale
    from lbdvd_jax import cli

    cli.use_compilation_cache()
    original = cli_scale.scheduler_context
    seen = {}

    @contextlib.contextmanager
    def recorded(a):
        with original(a) as client:
            with get_task_stream(client) as ts:
                yield client
            seen["stream"] = ts.data

    cli_scale.scheduler_context = recorded
    try:
        make_input(tmp / "in.ome.zarr", args.size)
        t = time.perf_counter()
        seen["t0"] = time.time()
        rc = cli.main(["restore", str(tmp / "in.ome.zarr"), "-o", str(tmp / "out.ome.zarr"), "--scheduler",
                       "distributed", "--workers", "2", "--block", str(args.block), "-q"])
        wall = time.perf_counter() - t
    finally:
        cli_scale.scheduler_context = original
        shutil.rmtree(tmp, ignore_errors=True)
    if rc:
        raise SystemExit(f"lbdvd restore failed with {rc}")
    rows = []
    for task in seen["stream"]:
        for s in task["startstops"]:
            if s["action"] == "compute":
                key = task["key"] if isinstance(task["key"], str) else str(task["key"])
                rows.append((key, task["worker"], s["start"] - seen["t0"], s["stop"] - seen["t0"]))
    rows.sort(key=lambda r: r[2])
    kinds = {}
    for key, worker, start, stop in rows:
        kind = "restore_block" if "restore_block" in key else key.strip("('").split("-")[0]
        kinds[kind] = kinds.get(kind, 0.0) + stop - start
        if stop - start > 0.5:
            print(f"{kind:18s} {worker[-6:]} {start:7.1f} {stop:7.1f} {stop - start:6.1f} s")
    result = {"bench": "profile_scale", "size": args.size, "block": args.block, "wall_s": round(wall, 1),
              "first_task_s": round(rows[0][2], 1), "after_last_task_s": round(wall - rows[-1][3], 1),
              "task_seconds": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}}
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
