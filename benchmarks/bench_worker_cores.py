"""Two restore processes side by side, each on all cores vs each pinned to its own share.

What a 2-worker `LocalCluster` does on this machine, without dask: each process restores the
same 2048² defocused image (`bench_scale.defocused_tile`, one XLA device per process) twice
after its compile, at the same time as the other. Arms, in one run:

- ``one_process``: the in-memory baseline of `bench_scale.py` (one process, one XLA device per core);
- ``two_processes_all_cores``: two processes, each free to run its XLA thread pools on every core
  (what dask's workers did before lbdvd pinned them);
- ``two_processes_pinned``: two processes, each pinned to its own share of the cores before JAX
  starts (`cli_scale.core_shares`, `cli_scale.pin_process`; lbdvd's LocalCluster does this).

Seconds per image per process, and the throughput of the pair as seconds per megapixel. JSON
last line.

    python benchmarks/bench_worker_cores.py
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

ONE = """
import json, os, sys, time, warnings
import numpy as np
share = json.loads(sys.argv[1])
if share:
    from lbdvd_jax.cli_scale import pin_process
    pin_process(set(share))
warnings.simplefilter("ignore")
from lbdvd_jax import load_delpnet, restore
sys.path.insert(0, "benchmarks")
from bench_scale import defocused_tile
tile = np.clip(np.rint(defocused_tile()), 0, 65535).astype(np.float32)
img = np.tile(tile, (-(-2048 // tile.shape[0]), -(-2048 // tile.shape[1])))[:2048, :2048]
m = load_delpnet()
np.asarray(restore(img, model=m).image)  # compile apart
ts = []
for _ in range(2):
    t = time.perf_counter(); np.asarray(restore(img, model=m).image); ts.append(time.perf_counter() - t)
print(json.dumps({"cores": sorted(os.sched_getaffinity(0)), "seconds": ts}))
"""


def run(n_procs, devices, shares):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    procs = [subprocess.Popen([sys.executable, "-c", ONE, json.dumps(sorted(s) if s else [])], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in (shares or [None] * n_procs)]
    out = []
    for p in procs:
        so, se = p.communicate()
        if p.returncode != 0:
            raise SystemExit(se[-3000:])
        out.append(json.loads(so.strip().splitlines()[-1]))
    per_image = sum(min(o["seconds"]) for o in out) / len(out)  # steady seconds per image per process
    return {"processes": out, "s_per_image_per_process": round(per_image, 3),
            "pair_s_per_mpx": round(per_image / len(out) / (2048 * 2048 / 1e6), 4)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_worker_cores_cpu.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import write_result
    from bench_scale import _cpu

    from lbdvd_jax.cli_scale import core_shares

    cpus = sorted(os.sched_getaffinity(0))
    result = {"bench": "worker_cores", "cpu": _cpu(), "cores": len(cpus),
              "one_process": run(1, len(cpus), None),
              "two_processes_all_cores": run(2, 1, None),
              "two_processes_pinned": run(2, 1, core_shares(cpus, 2))}
    base = result["one_process"]["pair_s_per_mpx"]
    for arm in ("two_processes_all_cores", "two_processes_pinned"):
        result[arm]["over_one_process"] = round(result[arm]["pair_s_per_mpx"] / base, 3)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
