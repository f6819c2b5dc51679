"""`lbdvd restore` for big images and many files: OME-Zarr / lazy TIFF through dask, schedulers.

    lbdvd restore big.ome.zarr -o out.ome.zarr                     # threads on this machine
    lbdvd restore big.tif -o out.ome.zarr --scheduler distributed --workers 2
    lbdvd restore big.ome.zarr -o out.ome.zarr --resume            # after an interruption
    lbdvd restore folder/ -o out/ --scheduler distributed           # files spread over workers
    lbdvd restore big.ome.zarr -o out.ome.zarr --dry-run           # predicted memory and time
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import time

import numpy as np

from lbdvd_jax.cli_checks import UsageError, pool_option

__all__ = ["cmd_restore_files_distributed", "cmd_restore_zarr", "require_extra", "scheduler_context",
           "wants_scale_out"]

DEFAULT_TIFF_CHUNK = 1024  #: output chunk (px) for a TIFF input (its strips are no chunking to keep)
CONNECT_TIMEOUT_S = 5
#: seconds per megapixel and worker core of a chunked restore at the default settings
#: (bench_scale.py on the 2-core AMD EPYC: README "Big images and clusters"); a dry run's estimate
SECONDS_PER_MPX = 2.0
#: Linux: a local cluster's workers can be pinned to their own cores
_CAN_PIN = hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


def require_extra():
    """UsageError naming the install command when the optional dask/zarr extra is missing."""
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as err:
        raise UsageError(f"OME-Zarr input/output and --scheduler need the optional extra ({err.name} is "
                         "missing): pip install 'lbdvd-jax[zarr]'") from None


def wants_scale_out(args) -> bool:
    from lbdvd_jax.ome_zarr_io import is_ome_zarr

    return bool(args.scheduler or args.resume or args.dry_run or is_ome_zarr(args.output)
                or any(is_ome_zarr(i) for i in args.inputs))


@contextlib.contextmanager
def scheduler_context(args):
    """Yield the dask `scheduler` argument (a name, or a distributed Client)."""
    name = args.scheduler or "threads"
    if name in ("threads", "processes"):
        if args.scheduler_address:
            raise UsageError("--scheduler-address needs --scheduler distributed")
        yield name
        return
    from distributed import Client, LocalCluster

    if args.scheduler_address:
        try:
            client = Client(args.scheduler_address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError) as err:
            raise UsageError(f"--scheduler-address: cannot reach {args.scheduler_address} within "
                             f"{CONNECT_TIMEOUT_S} s ({type(err).__name__}); start a scheduler there or "
                             "drop the option for a local cluster. Nothing was written") from None
        with client:
            yield client
        return
    import dask

    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    # dask's default MALLOC_TRIM_THRESHOLD_=65536 returns freed memory to the OS at once; XLA
    # allocates and frees large buffers at every RL call, and with it one block ran 1.4x slower
    # (10.5 vs 7.6 s alone; 2 workers 27.8 vs 18.4 s at 4096², README "Big images")
    spawn = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
             if k != "MALLOC_TRIM_THRESHOLD_"}
    # dask's statistical profiler wakes every 10 ms in each worker and walks every thread's stack
    # under the GIL: 8.5 % of a classification task's time on this 2-core CPU (4.73 vs 5.17 s per
    # 2048² over four runs each, README "Big images"); our workers run one compiled program each
    with (dask.config.set({"distributed.nanny.pre-spawn-environ": spawn,
                           "distributed.worker.profile.enabled": False}),
          LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                       silence_logs=40, env=env) as cluster, Client(cluster) as client):
        cpus = sorted(os.sched_getaffinity(0)) if _CAN_PIN else []
        shares = core_shares(cpus, args.workers) if cpus else None
        if shares is not None and len(shares[0]) < len(cpus):  # one worker keeps every core
            client.register_plugin(_pin_plugin(shares))
        yield client


def core_shares(cpus, n_workers):
    """Disjoint, near-equal shares of the CPUs `cpus`, one per worker (round robin when there are
    more workers than CPUs): a local cluster's workers each run XLA's thread pools on their own
    cores instead of every worker spreading over all of them."""
    cpus = [int(c) for c in cpus]
    if n_workers >= len(cpus):
        return [{cpus[i % len(cpus)]} for i in range(n_workers)]
    return [{int(c) for c in part} for part in np.array_split(cpus, n_workers)]


def pin_process(cpus):
    """Pin every thread of this process (and the threads it starts later) to `cpus`."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # a thread that ended meanwhile
            pass


def _pin_plugin(shares):
    from distributed import WorkerPlugin

    class PinCores(WorkerPlugin):
        """Each worker of a local cluster on its own share of the cores, before its first task
        (XLA sizes its thread pools by the CPUs a process may use when JAX starts)."""

        name = "lbdvd-pin-cores"

        def __init__(self, shares):
            self.shares = shares

        def setup(self, worker):
            try:
                index = int(worker.name)
            except (TypeError, ValueError):
                index = hash(worker.name)
            pin_process(self.shares[index % len(self.shares)])

    return PinCores(shares)


def _block_levels(levels, shape, r0, r1, c0, c1, stride):
    from lbdvd_jax.pipeline import level_map_pixels

    return level_map_pixels(levels, shape, stride=stride, region=((r0, r1), (c0, c1))).astype(np.uint8)


def _to_dtype(block, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return block.astype(dtype), 0
    info = np.iinfo(dtype)
    r = np.rint(block)
    clipped = int(np.count_nonzero((r < info.min) | (r > info.max)))
    return np.clip(r, info.min, info.max).astype(dtype), clipped


def _write_task(path, index, region, image, levels, depth, dtype):
    from lbdvd_jax.ome_zarr_io import write_block

    image, clipped = _to_dtype(np.asarray(image), dtype)
    shape = tuple(s.stop - s.start for s in region)
    write_block(path, index, region, image.reshape(shape), np.asarray(levels).reshape(shape),
                None if depth is None else np.asarray(depth).reshape(shape))
    return clipped


def _stored_region(lazy, b, r0, r1, c0, c1):
    sizes = dict(zip(lazy.axes, lazy.data.shape))
    region = []
    for ax in lazy.axes[:-2]:
        region.append(slice(0, 1) if sizes[ax] == 1 else slice(b, b + 1))
    return tuple(region) + (slice(r0, r1), slice(c0, c1))


def cmd_restore_zarr(args, model_loader, optics) -> int:
    """One input (OME-Zarr or TIFF) -> one OME-Zarr output, block by block, resumable."""
    import dask

    from lbdvd_jax import io
    from lbdvd_jax.dask_restore import restore_dask
    from lbdvd_jax.ome_zarr_io import OmeZarrWriter, is_ome_zarr, open_lazy

    require_extra()
    if len(args.inputs) != 1:
        raise UsageError("IN: a zarr output takes one input image; restore several into a folder "
                         "with -o FOLDER/")
    if not is_ome_zarr(args.output):
        raise UsageError(f"-o: {args.output} is not a .zarr path; big images are written as OME-Zarr "
                         "(-o out.ome.zarr)")
    src = pathlib.Path(args.inputs[0])
    try:
        lazy = open_lazy(src)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    h, w = lazy.planes.shape[-2:]
    if min(h, w) < 84:
        raise UsageError(f"IN: {src.name} is {h}x{w}, smaller than one 84x84 patch")
    pixel_um = lazy.pixel_um
    if pixel_um is None:
        print(f"{src.name}: no pixel size in the file; assumed --pixel-um {args.pixel_um:g} µm", file=sys.stderr)
        pixel_um = args.pixel_um
    try:
        io.check_pixel_size(pixel_um, optics.pixel_um, name=src.name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = pathlib.Path(args.output)
    if out.exists() and not (args.overwrite or args.resume):
        raise UsageError(f"-o: {out} exists; pass --overwrite to replace it or --resume to finish an "
                         "interrupted run")
    if src.suffix.lower() in (".tif", ".tiff"):
        lazy = lazy._replace(chunks=(1,) * (lazy.data.ndim - 2) + (DEFAULT_TIFF_CHUNK, DEFAULT_TIFF_CHUNK))
    yc, xc = lazy.chunks[-2:]
    planes = lazy.planes.rechunk((1, yc, xc) if lazy.planes.ndim == 3 else (yc, xc))
    if (yc % args.stride or xc % args.stride) and not args.quiet:
        print(f"note: chunks {yc}x{xc} are not multiples of the {args.stride}-px patch grid; kept (the output keeps "
              "the input's chunking and the result is the same), at the cost of computing the patches on "
              "block borders twice", file=sys.stderr)
    if args.dry_run:
        from lbdvd_jax.blocks import predict_peak_memory

        block = max(args.block, yc)
        mpx = float(np.prod(planes.shape)) / 1e6
        workers = args.workers if args.scheduler in ("distributed", "processes") else 1
        print(f"dry run: {src.name} {tuple(planes.shape)} {planes.dtype}, chunks {yc}x{xc}, blocks >= {block} px")
        print(f"  predicted peak memory per worker: {predict_peak_memory((h, w), block=block) / 2**30:.2f} GiB; "
              f"in-process restore of one plane: {predict_peak_memory((h, w)) / 2**30:.2f} GiB")
        print(f"  predicted time: {SECONDS_PER_MPX * mpx / workers:.0f} s for {mpx:.1f} Mpx on {workers} "
              f"worker(s) at {SECONDS_PER_MPX} s/Mpx per core (measured on a 2-core AMD EPYC, README)")
        return 0
    background = "auto" if args.background == "auto" else float(args.background)
    info = {"input": str(src.resolve()), "shape": list(planes.shape), "dtype": str(planes.dtype),
            "mode": args.mode, "defocus": args.defocus, "stride": args.stride, "weights": args.weights,
            "context": args.context, "iterations": None if args.iterations is None else list(
                np.atleast_1d(args.iterations).tolist()), "background": args.background,
            "pool": pool_option(args), "model": args.model, "optics": [optics.wavelength_um, optics.na, optics.n],
            "block": args.block}
    model = model_loader() if args.mode in ("dv", "soft") else None
    t0 = time.perf_counter()
    with scheduler_context(args) as sched:
        res = restore_dask(planes, model=model, optics=optics, mode=args.mode, stride=args.stride,
                           weights=args.weights, context=args.context, num_iter=args.iterations,
                           background=background, pool=pool_option(args), defocus=args.defocus,
                           scheduler=sched, block=args.block)
        image = res.image if res.image.ndim == 3 else res.image[None]
        depth = None if res.depth_map is None else (res.depth_map if res.depth_map.ndim == 3
                                                    else res.depth_map[None])
        levels = res.levels if res.levels.ndim == 3 else res.levels[None]
        grid = (image.shape[0], len(image.chunks[1]), len(image.chunks[2]))
        writer = OmeZarrWriter(out, lazy, dtype=planes.dtype, blocks=grid, info=info, resume=args.resume,
                               overwrite=args.overwrite)
        done = writer.done()
        if res.depth_map is not None:
            writer.depth_array(lazy.data.shape, writer.group["s0"].chunks)
        img_blocks = image.to_delayed()
        dep_blocks = None if depth is None else depth.to_delayed()
        rows = np.concatenate([[0], np.cumsum(image.chunks[1])])
        cols = np.concatenate([[0], np.cumsum(image.chunks[2])])
        tasks = []
        for b in range(grid[0]):
            for i in range(grid[1]):
                for j in range(grid[2]):
                    if done[b, i, j]:
                        continue
                    r0, r1, c0, c1 = int(rows[i]), int(rows[i + 1]), int(cols[j]), int(cols[j + 1])
                    lv = dask.delayed(_block_levels)(levels[b], (h, w), r0, r1, c0, c1, args.stride)
                    tasks.append(dask.delayed(_write_task)(
                        str(out), (b, i, j), _stored_region(lazy, b, r0, r1, c0, c1), img_blocks[b, i, j],
                        lv, None if dep_blocks is None else dep_blocks[b, i, j], planes.dtype))
        skipped = int(done.sum())
        if skipped:
            print(f"--resume: {skipped} of {done.size} blocks already written, skipped", file=sys.stderr)
        clipped = sum(dask.compute(*tasks, scheduler=sched)) if tasks else 0
    writer.write_maps({"levels": res.levels.astype(np.uint8), "z_um": res.z_um, "certainty": res.certainty,
                       "psf_z_um": res.psf_z_um},
                      {"background": [float(v) for v in res.background], "stride": args.stride,
                       "blocks_written": len(tasks), "blocks_skipped": skipped})
    writer.finish()
    if clipped:
        print(f"{clipped} pixel(s) clipped to the {planes.dtype} range", file=sys.stderr)
    print(f"restored {src.name} -> {out} ({len(tasks)} blocks written, {skipped} skipped, "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0


def _restore_file(src, dst, options, overwrite):
    """One file on a worker: the in-memory restore, written atomically (io.write_tiff)."""
    import warnings

    from lbdvd_jax import io
    from lbdvd_jax.checkpoint import load_delpnet
    from lbdvd_jax.optics import Optics
    from lbdvd_jax.pipeline import restore

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = io.read_tiff(src, default_pixel_um=options["pixel_um"])
            data = np.asarray(img.data, np.float32)
            model = load_delpnet(options["model"]) if options["mode"] in ("dv", "soft") else None
            result = restore(data, model=model, optics=Optics(**options["optics"]), mode=options["mode"],
                             stride=options["stride"], num_iter=options["iterations"],
                             defocus=options["defocus"], pool=options["pool"])
            pathlib.Path(dst).parent.mkdir(parents=True, exist_ok=True)
            io.write_tiff(dst, np.asarray(result.image), like=img, overwrite=overwrite)
        return None
    except Exception as err:  # reported per file; the others go on
        return f"{pathlib.Path(src).name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def cmd_restore_files_distributed(args, inputs, outputs, optics) -> int:
    """Many TIFF files spread over the workers; a failing file is reported and the others go on."""
    import dask

    require_extra()
    options = {"pixel_um": args.pixel_um, "model": args.model, "mode": args.mode, "stride": args.stride,
               "iterations": args.iterations, "defocus": args.defocus, "pool": pool_option(args),
               "optics": {"wavelength_um": optics.wavelength_um, "na": optics.na, "n": optics.n}}
    todo = [(i, o) for i, o in zip(inputs, outputs) if args.overwrite or not o.exists()]
    if len(todo) < len(inputs):
        print(f"skipping {len(inputs) - len(todo)} input(s) whose output exists", file=sys.stderr)
    with scheduler_context(args) as sched:
        tasks = [dask.delayed(_restore_file, pure=False)(str(i), str(o), options, args.overwrite) for i, o in todo]
        errors = [e for e in dask.compute(*tasks, scheduler=sched) if e]
    for e in errors:
        print(f"failed: {e}", file=sys.stderr)
    print(f"restored {len(todo) - len(errors)} file(s), {len(errors)} failed, into "
          f"{pathlib.Path(args.output).resolve()}")
    return 1 if errors else 0
