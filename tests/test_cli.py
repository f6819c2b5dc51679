"""The `lbdvd` command: thin over the library; user mistakes -> one line, exit 2, no partial file."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from lbdvd_jax import __version__
from lbdvd_jax.cli import main
from lbdvd_jax.estimator_weights import SHIPPED_ESTIMATOR
from lbdvd_jax.io import read_tiff


def _err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("lbdvd: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err)
    return errors[0]


def _cells(rng, shape=(100, 130), dtype=np.uint16):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    img = 100 + sum(600 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 40.0)
                    for cy, cx in rng.uniform(0, 1, (8, 2)) * shape)
    return img.astype(dtype)


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "restore" in capsys.readouterr().out


def test_train_forwards_to_the_training_applications(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: lbdvd train" in out and "--rps-weight" in out and "LBDVD_INFOCUS" in out
    assert main(["train", "--paper-delpnet", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: lbdvd train --paper-delpnet" in out and "--preset" in out
    # a bad option is one line and exit 2, checked before any field is read
    assert main(["train", "--out", "x", "--fields", "nowhere", "--scale-range", "3", "0.1"]) == 2
    assert "--scale-range: got 3 0.1, expected 0 < LO < HI" in capsys.readouterr().err
    assert main(["train", "--out", "x", "--fields", "nowhere", "--object-zoom", "1.25", "0.8"]) == 2
    assert "--object-zoom: got 1.25 0.8, expected 0 < LO <= HI" in capsys.readouterr().err


def test_train_also_train_names_exactly_one_field(tmp_path, capsys, data_dir):
    """--also-train takes a part of one field's name: a part of several (or of none) is one line
    that lists the fields, exit 2, before any training."""
    fields = str(data_dir / "bbbc006" / "infocus")
    for part in ("a0", "zz"):
        assert main(["train", "--out", str(tmp_path / "r"), "--fields", fields, "--also-train", part]) == 2
        assert f"--also-train: {part!r} matches" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "lbdvd_jax", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and __version__ in out.stdout


def test_restore_files_and_folders(tmp_path, rng, capsys):
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", _cells(rng), compression="lzw")
    stack = np.stack([_cells(rng, dtype=np.float32), _cells(rng, dtype=np.float32)])
    tifffile.imwrite(src / "b.tif", stack, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"unit": "um", "axes": "ZYX"})
    out = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(out), "--mode", "di", "--iterations", "3",
                 "--context", "8", "-q"]) == 0
    a, b = read_tiff(out / "a.tif"), read_tiff(out / "b.tif")
    assert a.data.dtype == np.uint16 and a.data.shape == (100, 130)
    assert b.data.dtype == np.float32 and b.data.shape == (2, 100, 130)
    assert b.pixel_um == pytest.approx(0.65) and b.axes == "ZYX"
    assert "restored 2 file(s)" in capsys.readouterr().out
    # existing outputs are refused before any work, and kept intact
    before = (out / "a.tif").read_bytes()
    assert main(["restore", str(src / "a.tif"), "-o", str(out), "--mode", "di", "-q"]) == 2
    assert "--overwrite" in _err_line(capsys)
    assert (out / "a.tif").read_bytes() == before
    # oracle with a per-pixel level map, into a single named file
    levels = np.full((100, 130), 3, np.uint8)
    tifffile.imwrite(tmp_path / "lev.tif", levels)
    assert main(["restore", str(src / "a.tif"), "-o", str(tmp_path / "one.tif"), "--mode",
                 "oracle", "--levels", str(tmp_path / "lev.tif"), "--iterations", "2", "-q",
                 "--background", "0"]) == 0
    assert read_tiff(tmp_path / "one.tif").data.shape == (100, 130)
    assert sorted(os.listdir(out)) == ["a.tif", "b.tif"]  # no temporary files left


def test_predict_and_psf(tmp_path, rng, capsys, monkeypatch):
    def classify(patches):  # any callable patches -> (n, 12) probabilities is a model
        return np.eye(12, dtype=np.float32)[np.full(patches.shape[0], 4)]
    monkeypatch.setattr("lbdvd_jax.checkpoint.load_delpnet", lambda path=None: classify)
    tifffile.imwrite(tmp_path / "a.tif", _cells(rng))
    assert main(["predict", str(tmp_path / "a.tif"), "-o", str(tmp_path / "map.tif")]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.splitlines()[0])
    assert summary["level_counts"] == {"4": 6} and summary["median_defocus_um"] == 8.0
    assert read_tiff(tmp_path / "map.tif").data.max() == 4
    assert main(["predict", str(tmp_path / "a.tif"), "--z-output", str(tmp_path / "z.tif")]) == 0
    z = read_tiff(tmp_path / "z.tif").data
    assert z.dtype == np.float32 and np.nanmax(z) == pytest.approx(8.0, abs=1e-4)
    assert main(["psf", "-o", str(tmp_path / "psf.tif"), "--z-um", "0", "10", "--size", "25"]) == 0
    psf = read_tiff(tmp_path / "psf.tif").data
    assert psf.shape == (2, 25, 25) and abs(psf[1].sum() - 1) < 1e-4


def test_synth(tmp_path, rng):
    tifffile.imwrite(tmp_path / "a.tif", _cells(rng))
    assert main(["synth", str(tmp_path / "a.tif"), "-o", str(tmp_path / "s.tif"),
                 "--level", "5"]) == 0
    s = read_tiff(tmp_path / "s.tif").data
    assert s.dtype == np.uint16 and s.max() < _cells(np.random.default_rng(0)).max() + 50
    # --noise matched: the same blur (means agree), another noise completion (pixels differ)
    assert main(["synth", str(tmp_path / "a.tif"), "-o", str(tmp_path / "m.tif"), "--level", "5",
                 "--noise", "matched"]) == 0
    m = read_tiff(tmp_path / "m.tif").data.astype(np.float64)
    assert abs(m.mean() - s.mean()) < 1.0 and np.any(m != s)


@pytest.mark.parametrize("argv,match", [
    (["restore", "MISSING.tif", "-o", "OUT"], "does not exist"),
    (["restore", "IN.tif", "-o", "OUT", "--mode", "fast"], "invalid choice"),
    (["restore", "IN.tif", "-o", "OUT", "--mode", "oracle"], "needs --levels"),
    (["restore", "BAD.tif", "-o", "OUT", "--mode", "di"], "not a readable TIFF"),
    (["restore", "INT32.tif", "-o", "OUT", "--mode", "di"], "uint8, uint16 or float32"),
    (["restore", "IN.tif", "-o", "IN.tif", "--mode", "di"], "is the input itself"),
    (["restore", "IN.tif", "-o", "AFILE/x.tif", "--mode", "di"], "not a folder"),
    (["restore", "IN.tif", "-o", "AFILE/sub/x.tif", "--mode", "di"], "not a folder"),
    (["restore", "SMALL.tif", "-o", "OUT", "--mode", "di"], "smaller than one"),
    (["restore", "IN.tif", "-o", "OUT", "--stride", "0", "--mode", "di"], "stride"),
    (["synth", "IN.tif", "-o", "S.tif", "--level", "12"], "--level"),
    (["restore", "IN.tif", "-o", "OUT", "--mode", "di", "--background", "x"], "--background"),
    # ranges are checked before any file is read or model loaded, in CLI words
    (["restore", "IN.tif", "-o", "OUT", "--context", "-1"], "--context: got -1, expected 0..84"),
    (["restore", "IN.tif", "-o", "OUT", "--pixel-um", "0"], "--pixel-um: got 0.0, expected a positive"),
    (["restore", "IN.tif", "-o", "OUT", "--pixel-um", "-1"], "--pixel-um"),
    (["restore", "IN.tif", "-o", "OUT", "--background", "-50"], "--background: got '-50'"),
    (["restore", "IN.tif", "-o", "OUT", "--iterations", "100000"], "--iterations: .* at most"),
    (["restore", "IN.tif", "-o", "OUT", "--stride", "0"], "--stride: got 0, expected 1..84"),
    (["restore", "IN.tif", "-o", "OUT", "--na", "1.2"], "--na: got 1.2, expected less than"),
    (["predict", "IN.tif", "--stride", "200"], "--stride"),
    (["predict", "STACK.tif"], "holds 3 planes"),
    (["synth", "STACK.tif", "-o", "S.tif", "--level", "2"], "holds 3 planes"),
    (["predict", "NEG.tif"], "negative pixels"),
    (["restore", "IN.tif", "NAN.tif", "-o", "OUT"], "NAN.tif holds NaN"),
    (["restore", "IN.tif", "-o", "/proc/lbdvd-nope/sub/"], "cannot create or write"),
    (["predict", "IN.tif", "-o", "/proc/lbdvd-nope/lev.tif"], "cannot create or write"),
    (["evaluate", "-o", "F8.json", "--fields", "NOWHERE"], "is not a folder of in-focus TIFFs"),
    (["bogus"], "invalid choice"),
    (["restore", "IN.tif"], "required"),
])
def test_user_mistakes_one_line_and_no_partial_file(tmp_path, rng, capsys, monkeypatch, argv,
                                                    match):
    monkeypatch.chdir(tmp_path)
    tifffile.imwrite("IN.tif", _cells(rng))
    tifffile.imwrite("SMALL.tif", _cells(rng, (40, 50)))
    tifffile.imwrite("INT32.tif", _cells(rng).astype(np.int32))
    (tmp_path / "BAD.tif").write_bytes(b"II*\x00 not really a tiff")
    (tmp_path / "AFILE").write_text("x")
    tifffile.imwrite("STACK.tif", np.stack([_cells(rng)] * 3), photometric="minisblack")
    tifffile.imwrite("NEG.tif", _cells(rng).astype(np.float32) - 1000)
    nan = _cells(rng).astype(np.float32)
    nan[5, 5] = np.nan
    tifffile.imwrite("NAN.tif", nan)
    listing = sorted(os.listdir(tmp_path))
    assert main(argv) == 2
    import re
    assert re.search(match, _err_line(capsys))
    assert sorted(os.listdir(tmp_path)) == listing  # nothing written, not even a folder


def test_demo_refuses_existing_outputs(tmp_path, capsys):
    (tmp_path / "real_z00_dv.tif").write_bytes(b"keep")
    assert main(["demo", "-o", str(tmp_path)]) == 2
    assert "--overwrite" in _err_line(capsys)
    assert (tmp_path / "real_z00_dv.tif").read_bytes() == b"keep"


def test_use_host_cores_respects_the_user_and_caps():
    from lbdvd_jax.cli import use_host_cores

    env = {"XLA_FLAGS": "--xla_cpu_foo=1"}
    assert use_host_cores(env, cpu_count=2) == 2
    assert env["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=2"
    assert use_host_cores(env, cpu_count=4) == 0  # already set: left alone
    env = {}
    assert use_host_cores(env, cpu_count=64) == 8
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"


def test_module_entry_point_uses_one_device_per_core():
    code = ("import runpy, sys, jax; sys.argv = ['lbdvd', '--version']\n"
            "from lbdvd_jax import cli\n"
            "try:\n    cli.entry()\nexcept SystemExit:\n    pass\n"
            "import os; print(jax.local_device_count(), min(os.cpu_count(), 8))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    got, want = out.stdout.split()[-2:]
    assert got == want


def test_compilation_cache_folder_choice(tmp_path):
    from lbdvd_jax.cli import use_compilation_cache

    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert use_compilation_cache(env) == str(tmp_path / "xdg" / "lbdvd-jax" / "xla")
    assert (tmp_path / "xdg" / "lbdvd-jax" / "xla").is_dir()
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "xdg" / "lbdvd-jax" / "xla")
    assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    env = {"JAX_COMPILATION_CACHE_DIR": "/users/own", "LBDVD_CACHE_DIR": str(tmp_path / "x")}
    assert use_compilation_cache(env) == "/users/own" and not (tmp_path / "x").exists()  # the user's: as is
    for off in ("off", "0", ""):
        env = {"LBDVD_CACHE_DIR": off}
        assert use_compilation_cache(env) is None and "JAX_COMPILATION_CACHE_DIR" not in env
    (tmp_path / "file").write_text("not a folder")
    env = {"LBDVD_CACHE_DIR": str(tmp_path / "file" / "xla")}
    assert use_compilation_cache(env) is None and "JAX_COMPILATION_CACHE_DIR" not in env


def test_second_run_loads_compiled_programs_from_the_cache(tmp_path):
    """Two `lbdvd psf` processes: the first writes the cache, the second compiles nothing anew."""
    code = ("import sys, jax\n"
            "from lbdvd_jax import cli\n"
            "n = {'hit': 0, 'miss': 0}\n"
            "jax.monitoring.register_event_listener(lambda e, **k: n.__setitem__('hit', n['hit'] + 1)"
            " if e == '/jax/compilation_cache/cache_hits' else n.__setitem__('miss', n['miss'] + 1)"
            " if e == '/jax/compilation_cache/cache_misses' else None)\n"
            "sys.argv = ['lbdvd', 'psf', '-o', sys.argv[1], '--overwrite']\n"
            "try:\n    cli.entry()\nexcept SystemExit:\n    pass\n"
            "print(n['hit'], n['miss'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["LBDVD_CACHE_DIR"] = str(tmp_path / "cache")
    counts = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "psf.tif")], capture_output=True,
                             text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        counts.append([int(v) for v in out.stdout.split()[-2:]])
    assert counts[0][1] > 0 and counts[1] == [counts[0][0] + counts[0][1], 0]
    assert any((tmp_path / "cache").iterdir())


def test_iterations_option_parses_one_or_eleven_counts():
    import argparse

    from lbdvd_jax.cli import _iterations

    assert _iterations("15") == 15
    assert _iterations("0,1,15,15,15,15,15,15,15,15,15") == (0, 1) + (15,) * 9
    for bad in ("x", "1,2", "-1", "1," * 10 + "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected an int"):
            _iterations(bad)


def test_skip_existing_finishes_a_batch_without_overwriting(tmp_path, rng, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(src / name, _cells(rng))
    out = tmp_path / "out"
    assert main(["restore", str(src / "a.tif"), "-o", str(out), "--mode", "di", "-q"]) == 0
    before = (out / "a.tif").read_bytes()
    assert main(["restore", str(src), "-o", str(out), "--mode", "di", "-q"]) == 2  # a.tif exists
    capsys.readouterr()
    assert main(["restore", str(src), "-o", str(out), "--mode", "di", "-q", "--skip-existing"]) == 0
    assert "skipping 1 input" in capsys.readouterr().out
    assert (out / "a.tif").read_bytes() == before and (out / "b.tif").exists()


def test_help_and_version_do_not_start_jax():
    code = ("import sys, lbdvd_jax.cli as c; c.main(['--version']); c.main(['--help']); "
            "c.main(['restore', '--help']); print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "False"


def test_default_pixel_size_is_announced_once(tmp_path, rng, capsys):
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(tmp_path / name, _cells(rng))  # no resolution tags
    assert main(["restore", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "-o",
                 str(tmp_path / "out"), "--mode", "di", "-q"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "assumed --pixel-um" in line]
    assert len(warned) == 1 and "a.tif, b.tif" in warned[0]


@pytest.mark.parametrize("quiet", [True, False])
def test_ctrl_c_ends_within_two_seconds_and_leaves_only_complete_outputs(tmp_path, rng, quiet):
    import signal
    import time
    tifffile.imwrite(tmp_path / "big.tif", _cells(rng, (600, 700)))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lbdvd_jax", "restore", str(tmp_path / "big.tif"), "-o", str(out),
           "--mode", "di", "--iterations", "2000"] + (["-q"] if quiet else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(12)  # JAX started, compiling or deconvolving
    assert proc.poll() is None
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.perf_counter() - t0 < 2.0
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert not out.exists() or os.listdir(out) == []  # nothing half-written


@pytest.mark.parametrize("exc, one_line", [
    (lambda: __import__("lbdvd_jax").InputError("--size: got 4, expected an odd number >= 5"), True),
    (lambda: __import__("lbdvd_jax").InputTypeError("image: got a str, expected an array"), True),
    (lambda: ValueError("operands could not be broadcast together"), False),  # a bug, not the user
    (lambda: TypeError("unsupported operand type(s)"), False),
])
def test_only_user_errors_become_one_line(monkeypatch, capsys, exc, one_line):
    """The library's InputError is the user's mistake (one line, exit 2); any other ValueError or
    TypeError is a bug and keeps its traceback (it is not hidden behind `lbdvd: error:`)."""
    import lbdvd_jax.cli as cli

    def boom(args):
        raise exc()

    monkeypatch.setattr(cli, "cmd_psf", boom)
    if one_line:
        assert main(["psf", "--z-um", "4", "-o", "x.tif"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lbdvd: error: ") and err.count("\n") == 1
    else:
        with pytest.raises((ValueError, TypeError)) as info:
            main(["psf", "--z-um", "4", "-o", "x.tif"])
        assert type(info.value) in (ValueError, TypeError)


@pytest.mark.parametrize("tty, quiet", [(True, False), (False, False), (True, True)])
def test_progress_is_tqdm_on_terminals_only(tmp_path, rng, monkeypatch, tty, quiet):
    """A terminal sees tqdm's bars (files and patches, rate and ETA); a pipe or --quiet sees none."""
    import io as _io

    class Err(_io.StringIO):
        def isatty(self):
            return tty

    tifffile.imwrite(tmp_path / "a.tif", _cells(rng, (200, 210)))
    err = Err()
    monkeypatch.setattr(sys, "stderr", err)
    argv = ["restore", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out"), "--mode", "di",
            "--iterations", "2", "--pixel-um", "0.65"] + (["-q"] if quiet else [])
    assert main(argv) == 0
    text = err.getvalue()
    if tty and not quiet:
        assert "images: 100%" in text and "a.tif: 100%" in text and "it/s" in text
    else:
        assert "100%" not in text and "it/s" not in text


def test_every_option_has_help_and_bench_has_no_overwrite():
    import argparse

    from lbdvd_jax.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, p in sub.choices.items()
               for a in p._actions if not a.help and not isinstance(a, argparse._HelpAction)]
    assert missing == []
    assert "--overwrite" not in sub.choices["bench"].format_help()
    assert "when the TIFF holds none" not in sub.choices["psf"].format_help()  # psf reads no TIFF


def test_psf_warns_when_size_cuts_the_kernel(tmp_path, capsys):
    assert main(["psf", "--z-um", "40", "--size", "65", "-o", str(tmp_path / "p.tif")]) == 0
    err = capsys.readouterr().err
    assert "--size 65 cuts the 40 µm PSF" in err and "pass --size 79" in err
    assert main(["psf", "--z-um", "20", "-o", str(tmp_path / "q.tif")]) == 0  # 49 holds 20 µm
    assert "cuts" not in capsys.readouterr().err
    assert main(["psf", "--size", "48", "-o", str(tmp_path / "r.tif")]) == 2
    assert "--size: got 48, expected an odd number" in _err_line(capsys)


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, rng, capsys, monkeypatch):
    """ENOSPC while the TIFF is written: one error line naming the output, no temporary or
    partial file left, the input untouched."""
    import errno

    import lbdvd_jax.io as lio

    src = tmp_path / "a.tif"
    tifffile.imwrite(src, _cells(rng))
    before = src.read_bytes()

    def full_disk(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"II*\x00partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lio.tifffile, "imwrite", full_disk)
    out = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(out), "--mode", "di", "--iterations", "2", "-q",
                 "--pixel-um", "0.65"]) == 2
    line = _err_line(capsys)
    assert "No space left on device" in line and str(out / "a.tif") in line
    assert sorted(p.name for p in out.iterdir()) == [] and src.read_bytes() == before


def test_train_widen_needs_init_and_a_factor(tmp_path, capsys, data_dir):
    """--widen grows an --init estimator: without --init, or below 1, one line and exit 2."""
    fields = str(data_dir / "bbbc006" / "infocus")
    assert main(["train", "--out", str(tmp_path / "r"), "--fields", fields, "--widen", "2"]) == 2
    assert "--widen: needs --init" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--fields", fields, "--init", str(SHIPPED_ESTIMATOR),
                 "--widen", "0.5"]) == 2
    assert "--widen: got 0.5, expected a factor >= 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
