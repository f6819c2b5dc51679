"""Chunked restore on dask, OME-Zarr in and out, resume, schedulers (issue: big images and clusters).

The reference is always the in-memory `restore` of the whole image (itself checked against
float64 oracles elsewhere); these tests check that chunking changes nothing.
"""

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")

from lbdvd_jax import load_delpnet, restore  # noqa: E402
from lbdvd_jax.dask_restore import restore_dask  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
LBDVD = [sys.executable, "-m", "lbdvd_jax"]


@pytest.fixture(scope="session")  # session: kept across pytest-xdist's interleaved modules
def model():
    return load_delpnet()


@pytest.fixture(scope="session")  # session: kept across pytest-xdist's interleaved modules
def big_image(real_fields):
    """(4096, 6144) uint16: the bundled field, tiled with mirror images, a little brighter below."""
    f = real_fields[0]
    tile = np.block([[f, f[:, ::-1]], [f[::-1], f[::-1, ::-1]]])
    reps = (-(-4096 // tile.shape[0]), -(-6144 // tile.shape[1]))
    img = np.tile(tile, reps)[:4096, :6144]
    ramp = np.linspace(1.0, 1.6, 4096, dtype=np.float32)[:, None]
    return np.clip(img * ramp, 0, 65535).astype(np.uint16)


def _assert_same(res, ref):
    np.testing.assert_array_equal(np.asarray(res.levels), np.asarray(ref.levels))
    out = np.asarray(res.image.compute() if hasattr(res.image, "compute") else res.image)
    want = np.asarray(ref.image)
    assert out.shape == want.shape
    assert np.max(np.abs(out - want)) <= 1e-5 * want.max()


@pytest.mark.slow
def test_restore_dask_equals_restore_threads_and_local_cluster(big_image, model):
    """The issue's acceptance: 4096 x 6144 uint16 in 1024² chunks, the threaded scheduler and a
    2-worker LocalCluster, each equal to `restore` of the whole image. One test, so that the
    in-memory reference is computed once under pytest-xdist as well."""
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = restore(big_image, model=model)
    arr = da.from_array(big_image, chunks=(1024, 1024))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = restore_dask(arr, model=model, scheduler="threads", block=1024)
    assert res.image.chunks == ((1024,) * 4, (1024,) * 6)  # one block per chunk
    np.testing.assert_allclose(res.z_um, np.asarray(ref.z_um), equal_nan=True)
    _assert_same(res, ref)

    # the cluster `lbdvd restore --scheduler distributed --workers 2` starts
    from lbdvd_jax.cli_scale import scheduler_context

    args = argparse.Namespace(scheduler="distributed", scheduler_address=None, workers=2)
    with scheduler_context(args) as client:
        assert isinstance(client, distributed.Client)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = restore_dask(arr, model=model, scheduler=client)
        out = client.compute(res.image).result()
        assert len(client.scheduler_info()["workers"]) == 2
        import dask

        settings = client.run(lambda: (dask.config.get("distributed.worker.profile.enabled"),
                                       os.environ.get("XLA_FLAGS"), os.environ.get("MALLOC_TRIM_THRESHOLD_")))
        cores = client.run(lambda: sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else {}
    # workers: no statistical profiler, one XLA device each, glibc's default malloc trimming
    assert set(settings.values()) == {(False, "--xla_force_host_platform_device_count=1", None)}
    if cores and len(os.sched_getaffinity(0)) >= 2:  # each worker on its own cores, all used
        shares = [set(c) for c in cores.values()]
        assert not shares[0] & shares[1] and shares[0] | shares[1] == os.sched_getaffinity(0)
    _assert_same(res._replace(image=out), ref)


@pytest.mark.parametrize("defocus", ["levels", "continuous"])
def test_unaligned_chunks_and_stacks_equal_restore(real_fields, model, defocus):
    """Chunks that are not multiples of the grid step, small blocks, a (B, H, W) stack, float input."""
    f = real_fields[0]
    stack = np.stack([np.tile(f, (2, 1))[:700, :500], np.tile(f, (2, 1))[::-1][:700, :500] * 1.3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = restore(stack, model=model, defocus=defocus)
        res = restore_dask(da.from_array(stack, chunks=(1, 250, 190)), model=model, block=190,
                           scheduler="sync", defocus=defocus)
    assert len(res.image.chunks[1]) > 1 and len(res.image.chunks[2]) > 1
    _assert_same(res, ref)
    if defocus == "continuous":
        np.testing.assert_allclose(res.depth_map.compute(), ref.depth_map, atol=1e-4)


def test_exact_background_percentile_float_and_int(rng):
    """The histogram order statistics give numpy's percentile exactly (the restore's background)."""
    from lbdvd_jax.dask_restore import _background, _block_summary
    from lbdvd_jax.restore_plan import image_background

    for data, integer in ((rng.gamma(2.0, 50.0, (300, 400)).astype(np.float32), False),
                          (rng.integers(90, 4000, (300, 400)).astype(np.uint16), True)):
        arr = da.from_array(data, chunks=(128, 150))
        summaries = [_block_summary(b, integer) for b in [arr.blocks[i, j].compute()
                                                          for i in range(arr.numblocks[0])
                                                          for j in range(arr.numblocks[1])]]
        got = _background(arr, summaries, integer, "sync")
        assert got == pytest.approx(image_background(data.astype(np.float32)), rel=1e-7)
    # above 4 Mpx the in-process background comes from chunked histograms: still numpy's value
    big = rng.gamma(2.0, 50.0, (2100, 2100)).astype(np.float32)
    assert image_background(big) == float(np.percentile(big, 0.5))


def _write_ngff(path, data, *, version, axes, chunks, scale):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    fmt = FormatV04() if version == "0.4" else FormatV05()
    store = parse_url(str(path), mode="w", fmt=fmt).store
    root = zarr.group(store=store, zarr_format=fmt.zarr_format)
    write_image(data, root, axes=list(axes), fmt=fmt, storage_options=dict(chunks=chunks), scale_factors=(2,),
                scale=dict(zip(axes, scale)), axes_units={a: "micrometer" for a in "yx"})


def _main(*args, capsys=None):
    """The lbdvd command in this process (no interpreter start-up, shared compile caches)."""
    from lbdvd_jax.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in args])
    out = capsys.readouterr() if capsys is not None else None
    return code, out


def _run(*args, check=True, **kw):
    """The lbdvd command in a fresh process (for signals and clusters)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.run(LBDVD + list(map(str, args)), capture_output=True, text=True, env=env, cwd=ROOT, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="session")  # session: kept across pytest-xdist's interleaved modules
def field_700(real_fields):
    f = real_fields[0]
    return np.tile(f, (2, 2))[:700, :900].astype(np.uint16)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_cli_ome_zarr_round_trip(tmp_path, field_700, model, version, capsys):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    src = tmp_path / f"in{version}.ome.zarr"
    _write_ngff(src, field_700[None], version=version, axes="cyx", chunks=(1, 256, 256), scale=(1.0, 0.65, 0.65))
    out = tmp_path / "out.ome.zarr"
    code, io = _main("restore", src, "-o", out, "--block", "256", "-q", capsys=capsys)
    assert code == 0 and "blocks written" in io.out
    nodes = list(Reader(parse_url(str(out)))())
    image = nodes[0]
    assert image.metadata["axes"][0]["name"] == "c" and [a["name"] for a in image.metadata["axes"]][-2:] == ["y", "x"]
    assert image.metadata["coordinateTransformations"][0][0]["scale"] == [1.0, 0.65, 0.65]
    restored = np.asarray(image.data[0])
    assert restored.shape == (1, 700, 900) and restored.dtype == np.uint16
    group = zarr.open_group(str(out), mode="r")
    assert group["s0"].chunks == (1, 256, 256)
    assert group.attrs["lbdvd"]["complete"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = restore(field_700, model=model)
    want = np.clip(np.rint(np.asarray(ref.image)), 0, 65535)
    assert np.max(np.abs(restored[0].astype(np.float64) - want)) <= 1.0
    np.testing.assert_array_equal(group["lbdvd/levels"][...], np.asarray(ref.levels))
    labels = group["labels/defocus_levels/s0"][...]
    assert labels.shape == (1, 700, 900) and set(np.unique(labels)) <= set(range(12))


def test_cli_lazy_tiff_to_zarr(tmp_path, field_700, capsys):
    import tifffile

    src = tmp_path / "big.tif"
    tifffile.imwrite(src, field_700, tile=(256, 256), resolution=(1e4 / 0.65, 1e4 / 0.65),
                     resolutionunit="CENTIMETER")
    out = tmp_path / "out.ome.zarr"
    assert _main("restore", src, "-o", out, "--block", "256", "-q")[0] == 0
    group = zarr.open_group(str(out), mode="r")
    assert group["s0"].shape == (700, 900)
    assert group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == \
        pytest.approx([0.65, 0.65], rel=1e-3)


def test_resume_after_sigint_is_bit_identical(tmp_path, field_700, capsys):
    src = tmp_path / "in.ome.zarr"
    _write_ngff(src, field_700, version="0.5", axes="yx", chunks=(256, 256), scale=(0.65, 0.65))
    whole = tmp_path / "whole.ome.zarr"
    assert _main("restore", src, "-o", whole, "--block", "256", "-q")[0] == 0
    part = tmp_path / "part.ome.zarr"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.Popen(LBDVD + ["restore", str(src), "-o", str(part), "--block", "256", "-q"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done_dir = part / "lbdvd" / "done" / "c"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if done_dir.exists() and sum(1 for _ in done_dir.rglob("*") if _.is_file()) >= 2:
            break
            time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    group = zarr.open_group(str(part), mode="r")
    assert group.attrs["lbdvd"]["complete"] is False
    written = int(np.asarray(group["lbdvd/done"][...]).sum())
    total = group["lbdvd/done"].size
    assert 0 < written < total
    code, again = _main("restore", src, "-o", part, "--block", "256", "-q", "--resume", capsys=capsys)
    assert code == 0
    assert f"{written} of {total} blocks already written, skipped" in again.err
    assert f"({total - written} blocks written, {written} skipped" in again.out
    a, b = zarr.open_group(str(whole), mode="r"), zarr.open_group(str(part), mode="r")
    np.testing.assert_array_equal(a["s0"][...], b["s0"][...])
    np.testing.assert_array_equal(a["labels/defocus_levels/s0"][...], b["labels/defocus_levels/s0"][...])
    assert b.attrs["lbdvd"]["complete"] is True


def test_bad_inputs_each_one_clear_line(tmp_path, field_700, capsys):
    rgb = tmp_path / "rgb.ome.zarr"
    _write_ngff(rgb, np.stack([field_700] * 3), version="0.5", axes="cyx", chunks=(1, 256, 256),
                scale=(1.0, 0.65, 0.65))
    tz = tmp_path / "tz.ome.zarr"
    _write_ngff(tz, np.stack([np.stack([field_700[:200, :200]] * 2)] * 2), version="0.5", axes="tzyx",
                chunks=(1, 1, 200, 200), scale=(1.0, 1.0, 0.65, 0.65))
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w").create_array("x", shape=(200, 200), dtype="uint16")
    good = tmp_path / "good.ome.zarr"
    _write_ngff(good, field_700[:300, :300], version="0.5", axes="yx", chunks=(256, 256), scale=(0.65, 0.65))
    existing = tmp_path / "exists.ome.zarr"
    existing.mkdir()
    cases = [
        ((rgb, "-o", tmp_path / "o1.ome.zarr"), "3 channels"),
        ((tz, "-o", tmp_path / "o2.ome.zarr"), "both 't' (2) and 'z' (2)"),
        ((plain, "-o", tmp_path / "o3.ome.zarr"), "without OME-NGFF multiscales"),
        ((good, "-o", existing), "exists; pass --overwrite"),
        ((good, "-o", tmp_path / "o5.ome.zarr", "--scheduler", "distributed", "--scheduler-address",
          "tcp://127.0.0.1:9"), "cannot reach tcp://127.0.0.1:9"),
    ]
    for args, needle in cases:
        t0 = time.time()
        code, io = _main("restore", *args, "-q", capsys=capsys)
        assert code == 2, args
        err = io.err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (needle, io.err[-800:])
        assert time.time() - t0 < 30
    assert not (tmp_path / "o5.ome.zarr").exists()  # nothing written for the unreachable scheduler
    # a resume with other options is refused
    out = tmp_path / "o6.ome.zarr"
    assert _main("restore", good, "-o", out, "-q")[0] == 0
    code, io = _main("restore", good, "-o", out, "-q", "--resume", "--iterations", "5", capsys=capsys)
    assert code == 2 and "written by another run" in io.err


def test_folder_on_local_cluster_reports_failures_and_skips_done(tmp_path, field_700):
    import tifffile

    pytest.importorskip("distributed")
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", field_700[:300, :400])
    tifffile.imwrite(folder / "b.tif", field_700[300:, 400:])
    (folder / "broken.tif").write_bytes(b"II*\x00not a tiff")
    out = tmp_path / "out"
    proc = _run("restore", folder, "-o", out, "--scheduler", "distributed", "--workers", "2", "-q",
                check=False, timeout=600)
    assert proc.returncode == 1
    assert "failed: broken.tif" in proc.stderr and "restored 2 file(s), 1 failed" in proc.stdout
    assert (out / "a.tif").exists() and (out / "b.tif").exists()
    again = _run("restore", folder, "-o", out, "--scheduler", "distributed", "--workers", "1", "-q",
                 check=False, timeout=600)
    assert "skipping 2 input(s) whose output exists" in again.stderr


def test_dry_run_prints_prediction(tmp_path, field_700, capsys):
    src = tmp_path / "in.ome.zarr"
    _write_ngff(src, field_700, version="0.5", axes="yx", chunks=(256, 256), scale=(0.65, 0.65))
    code, io = _main("restore", src, "-o", tmp_path / "o.ome.zarr", "--dry-run", capsys=capsys)
    assert code == 0 and "predicted peak memory per worker" in io.out and "predicted time" in io.out
    assert not (tmp_path / "o.ome.zarr").exists()


def test_writer_metadata_is_valid_json(tmp_path, field_700):
    src = tmp_path / "in.ome.zarr"
    _write_ngff(src, field_700[:300, :300], version="0.5", axes="yx", chunks=(256, 256), scale=(0.65, 0.65))
    out = tmp_path / "o.ome.zarr"
    assert _main("restore", src, "-o", out, "-q", "--defocus", "continuous")[0] == 0
    meta = json.loads((out / "zarr.json").read_text())
    assert meta["attributes"]["ome"]["version"] == "0.5"
    group = zarr.open_group(str(out), mode="r")
    depth = group["lbdvd/depth_um"][...]
    assert depth.shape == (300, 300) and np.all(np.isfinite(depth))


@pytest.mark.parametrize("defocus", ["levels", "continuous"])
def test_in_process_blockwise_equals_whole_image(field_700, model, defocus):
    """`restore` of a large image runs block by block (bounded memory): same pixels, same levels."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = restore(field_700, model=model, defocus=defocus)
        calls = []
        res = restore(field_700, model=model, defocus=defocus, block=256,
                      progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] == 3 * 4  # 700 -> 256, 256, 188; 900 -> 256, 256, 256, 132
    _assert_same(res, ref)


MEASURE = """
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from lbdvd_jax import load_delpnet, restore
from lbdvd_jax.synthesis import bundled_path
from lbdvd_jax.io import read_tiff
side = int(sys.argv[1])
f = read_tiff(bundled_path("a01_infocus.tif")).data.astype(np.float32)
tile = np.block([[f, f[:, ::-1]], [f[::-1], f[::-1, ::-1]]])
img = np.tile(tile, (-(-side // tile.shape[0]), -(-side // tile.shape[1])))[:side, :side].copy()
out = np.asarray(restore(img, model=load_delpnet()).image)
# VmHWM: this process image's own peak (ru_maxrss would carry the forking parent's RSS across exec)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(json.dumps({"peak": int(hwm.split()[1]) * 1024}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_memory_prediction_matches_a_measurement():
    """The dry run's in-process memory model against the peak RSS of a fresh process (3200² px:
    the blockwise path, image terms ~0.65 GB beside the runtime)."""
    from lbdvd_jax.blocks import predict_peak_memory

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", MEASURE, "3200"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak"]
    predicted = predict_peak_memory((3200, 3200))
    assert 0.6 * predicted <= peak <= 1.1 * predicted, (peak / 2**30, predicted / 2**30)


def test_core_shares_split_the_cpus():
    """Workers of a local cluster get disjoint, near-equal core shares (round robin beyond one each)."""
    from lbdvd_jax.cli_scale import core_shares

    assert core_shares([0, 1], 2) == [{0}, {1}]
    assert core_shares([0, 1, 2, 3, 4], 2) == [{0, 1, 2}, {3, 4}]
    assert core_shares([4, 6], 3) == [{4}, {6}, {4}]
    assert core_shares(range(8), 1) == [set(range(8))]
