"""The `lbdvd` command: a thin layer over the library.

    lbdvd restore IN... -o OUT [--mode dv|di|oracle|soft]   restore TIFF files or folders
    lbdvd predict IN [-o MAP.tif]                           per-patch defocus levels
    lbdvd psf [-o PSF.tif]                                  the 11 Eq. 2 level PSFs
    lbdvd synth IN -o OUT --level L | --depth tilt          synthetic defocus + camera noise
    lbdvd train ...                                         estimator training (--paper-delpnet: DelpNet)
    lbdvd evaluate [-o fig8.json]                           the paper's Fig. 8 evaluation
    lbdvd bench                                             end-to-end timing of a 696x520 image
    lbdvd demo [-o ./lbdvd_output]                          the bundled real-data demo
    lbdvd --version

User mistakes (missing file, unsupported dtype, bad option, unwritable or existing output) print
one line `lbdvd: error: ...` on stderr and exit with status 2; nothing partial is written (all
TIFFs are written atomically). Set LBDVD_DEBUG=1 to see tracebacks.

Compiled XLA programs are kept on disk (JAX's persistent compilation cache) in
$LBDVD_CACHE_DIR, default ~/.cache/lbdvd-jax/xla (or $XDG_CACHE_HOME/lbdvd-jax/xla), so a second
`lbdvd restore` skips most compilation; LBDVD_CACHE_DIR=off turns this off, and a
JAX_COMPILATION_CACHE_DIR the user set is used as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from lbdvd_jax.cli_checks import UsageError, _iterations
from lbdvd_jax.cli_commands import (
    cmd_bench,
    cmd_calibrate,
    cmd_demo,
    cmd_evaluate,
    cmd_predict,
    cmd_psf,
    cmd_restore,
    cmd_synth,
    cmd_train,
)
from lbdvd_jax.constants import MODES
from lbdvd_jax.errors import InputError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _add_pool(p):
    p.add_argument("--pool", choices=("surface", "neighbours", "none"), default="surface",
                   help="evidence pooled between patches: 3x3 neighbours then a depth-surface prior "
                        "(default), 3x3 neighbours only (depth not smooth over the field), or none")
    p.add_argument("--no-pool", action="store_true", help="= --pool none: each patch alone (the paper)")


def _add_optics(p, pixel_help="pixel size when the TIFF holds none (default 0.65 µm)"):
    p.add_argument("--optics", metavar="FILE", help="the microscope's optics as JSON (`lbdvd calibrate`); "
                   "--wavelength-um/--na/--n override its fields")
    p.add_argument("--wavelength-um", dest="wavelength_um", type=float, help="default 0.451")
    p.add_argument("--na", type=float, help="numerical aperture, default 0.5")
    p.add_argument("--n", type=float, help="immersion refractive index, default 1.0")
    p.add_argument("--pixel-um", dest="pixel_um", type=float, default=0.65,
                   help=pixel_help)


def build_parser() -> argparse.ArgumentParser:
    from lbdvd_jax import __version__

    parser = _Parser(prog="lbdvd", description="Learning-based depth-variant deconvolution "
                     "(He et al. 2020) of out-of-focus fluorescence microscopy images.")
    parser.add_argument("--version", action="version", version=f"lbdvd-jax {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    def common(p, model=True, outputs=True):
        if model:
            p.add_argument("--model", help="estimator or DelpNet weights .npz (default: the shipped "
                           "defocus estimator)")
        if outputs:
            p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        return p

    p = common(sub.add_parser("restore", help="restore TIFF files or folders"))
    p.add_argument("inputs", nargs="+", metavar="IN", help="TIFF files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder (or .tif for one input)")
    p.add_argument("--mode", choices=MODES, default="dv",
                   help="dv: each patch with the PSF of its estimated defocus (default); di: one PSF "
                        "everywhere; oracle: levels from --levels; soft: probability-weighted PSFs")
    p.add_argument("--levels", help="level map TIFF for --mode oracle (per patch or per pixel)")
    p.add_argument("--stride", type=int, default=42,
                   help="patch grid step in px, 1..84 (default 42: overlapping patches, triangular montage)")
    p.add_argument("--weights", choices=("triangular", "rectangular"), default="triangular",
                   help="montage weights of overlapping patches (default triangular, the paper's)")
    p.add_argument("--context", type=int, default=None,
                   help="px of real neighbours around each patch for RL, 0..84 (default 24)")
    p.add_argument("--iterations", type=_iterations, default=None,
                   help="RL iterations: one count (paper: 15) or 11 comma-separated counts, one "
                        "per defocus level (default: 1 at levels 0-1, 15 above; --mode di: 15)")
    _add_pool(p)
    p.add_argument("--defocus", choices=("levels", "continuous"), default="levels",
                   help="levels: the paper's 11 PSFs; continuous: each patch's own depth from a "
                        "smooth depth surface fitted over the field (--mode dv)")
    p.add_argument("--background", default="auto",
                   help="counts subtracted before RL and added back: 'auto' (0.5th percentile, "
                        "default) or a number, e.g. 0 for the paper's RL on raw counts")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip inputs whose output exists (finish an interrupted batch)")
    g = p.add_argument_group("big images and clusters (OME-Zarr in or out, dask; README 'Big images')")
    g.add_argument("--scheduler", choices=("threads", "processes", "distributed"), default=None,
                   help="run on dask: threads (default for zarr), processes, or distributed (a local "
                        "cluster of --workers, or --scheduler-address)")
    g.add_argument("--scheduler-address", default=None, metavar="tcp://HOST:PORT",
                   help="an existing dask.distributed scheduler (with --scheduler distributed)")
    g.add_argument("--workers", type=int, default=2, help="local cluster workers (default 2)")
    g.add_argument("--block", type=int, default=2048,
                   help="minimum block side in px for chunked restores (whole chunks merged; default 2048)")
    g.add_argument("--resume", action="store_true",
                   help="finish an interrupted OME-Zarr output: written blocks are skipped")
    g.add_argument("--dry-run", action="store_true",
                   help="print the predicted peak memory and time, restore nothing")
    _add_optics(p)
    p.set_defaults(func=cmd_restore)

    p = common(sub.add_parser("predict", help="per-patch defocus levels of one image"))
    p.add_argument("input", metavar="IN", help="TIFF image (one plane)")
    p.add_argument("-o", "--output", help="write the level map TIFF here (uint8, 11 = bg)")
    p.add_argument("--stride", type=int, default=42, help="patch grid step in px, 1..84 (default 42)")
    p.add_argument("--z-output", help="write the expected defocus per pixel (µm, float32 TIFF) here")
    _add_pool(p)
    _add_optics(p)
    p.set_defaults(func=cmd_predict)

    p = common(sub.add_parser("psf", help="write the Eq. 2 PSF stack"), model=False)
    p.add_argument("-o", "--output", default="psf_stack.tif", help="TIFF stack to write (default psf_stack.tif)")
    p.add_argument("--z-um", dest="z_um", type=float, nargs="+",
                   help="defocus values in µm (default the 11 levels 0 2 ... 20)")
    p.add_argument("--size", type=int, default=49,
                   help="odd kernel side in px (default 49: 99 %% of the 20 µm PSF's energy; a cut "
                        "kernel is renormalised, with a warning)")
    _add_optics(p, pixel_help="pixel size of the PSF's grid in µm (default 0.65)")
    p.set_defaults(func=cmd_psf)

    p = common(sub.add_parser("calibrate", help="fit the defocus PSF's optics to a focus pair or a bead; "
                                                 "write them as JSON for --optics"), model=False)
    p.add_argument("input", metavar="OBSERVED", help="out-of-focus TIFF (a plane, or a bead image)")
    p.add_argument("--reference", required=True,
                   help="in-focus TIFF of the same field (or 'bead' for a point source at the centre)")
    p.add_argument("-o", "--output", required=True, help="optics JSON to write")
    p.add_argument("--fit", nargs="*", choices=("na", "wavelength_um"), default=["na"],
                   help="optics fields refined beside the defocus (default: na)")
    p.add_argument("--steps", type=int, default=200, help="gradient steps (default 200)")
    _add_optics(p)
    p.set_defaults(func=cmd_calibrate)

    p = common(sub.add_parser("synth", help="synthetic defocus of an in-focus image"),
               model=False)
    p.add_argument("input", metavar="IN", help="in-focus TIFF (one plane)")
    p.add_argument("-o", "--output", required=True, help="TIFF to write (the defocused image)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--level", type=int, help="one defocus level 0..10 everywhere")
    g.add_argument("--depth", choices=("tilt",), help="tilted + undulating depth map")
    p.add_argument("--seed", type=int, default=0, help="seed of the camera noise and depth map (default 0)")
    p.add_argument("--no-noise", action="store_true", help="blur only: no camera noise")
    p.add_argument("--noise", choices=("white", "matched"), default="white",
                   help="how the camera noise is completed: 'white' (default; as the training data and the "
                        "paper: the input's own noise stays as a low-frequency texture) or 'matched' (the total "
                        "as flat as real camera noise, synthesis.matched_noise)")
    _add_optics(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train the defocus estimator (--paper-delpnet: the paper's "
                       "DelpNet); `lbdvd train --help` lists the options",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the training options (`lbdvd train --help`)")
    p.set_defaults(func=cmd_train)

    p = common(sub.add_parser("evaluate", help="Fig. 8: PSNR/SSIM per defocus level"))
    p.add_argument("-o", "--output", default="fig8.json",
                   help="JSON report of PSNR/SSIM per level and method (default fig8.json)")
    p.add_argument("--per-level", type=int, default=45,
                   help="synthetic test crops per defocus level (default 45, as the paper's Fig. 8)")
    p.add_argument("--iterations", type=int, default=15, help="RL iterations per patch (default 15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and the camera noise (default 0)")
    p.add_argument("--no-blind", action="store_true", help="skip blind RL (slow)")
    p.add_argument("--fields", default=None,
                   help="folder of in-focus TIFFs whose test split is scored (default: $LBDVD_INFOCUS, "
                        "else the bundled field a01)")
    p.set_defaults(func=cmd_evaluate)

    p = common(sub.add_parser("bench", help="time restore() on a 696x520 image"), outputs=False)
    p.add_argument("--repeats", type=int, default=5, help="timed runs after the compile (default 5)")
    p.set_defaults(func=cmd_bench)

    p = common(sub.add_parser("demo", help="restore the bundled real images"))
    p.add_argument("-o", "--output", default="lbdvd_output",
                   help="output folder for the restored TIFFs, summary and figure (default lbdvd_output)")
    p.add_argument("--no-figure", action="store_true", help="skip the PNG figure")
    p.set_defaults(func=cmd_demo)
    return parser


def use_host_cores(environ=os.environ, cpu_count=None) -> int:
    """Ask XLA for one CPU device per core (at most 8) unless the user chose a count.

    XLA's CPU FFT keeps about one core busy per device, so `restore` splits its patches over
    host devices (`shard`); the count must be in XLA_FLAGS before JAX creates its CPU client,
    i.e. before the first array. Called by the console script and `python -m lbdvd_jax`
    only, never on import. Returns the count requested (0: left as the user set it).
    """
    flags = environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return 0
    count = max(1, min(int(cpu_count or os.cpu_count() or 1), 8))
    environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    return count


def use_compilation_cache(environ=os.environ) -> str | None:
    """Keep compiled XLA programs on disk between `lbdvd` runs (JAX's persistent cache).

    A restore compiles the estimator and the RL loops anew in every process (seconds); with the
    cache a later run of the same shapes loads them. Directory: $JAX_COMPILATION_CACHE_DIR if the
    user set it (left as is), else $LBDVD_CACHE_DIR, else $XDG_CACHE_HOME/lbdvd-jax/xla (default
    ~/.cache/lbdvd-jax/xla); LBDVD_CACHE_DIR=off (or 0, none, empty) disables it. A folder that
    cannot be created disables it too, silently (the run is only slower). Set in `environ`, so
    processes started from here (dask workers) share it, and in JAX's config if already imported.
    Called by the console script only, never on import. Returns the directory or None.
    """
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return environ["JAX_COMPILATION_CACHE_DIR"]
    chosen = environ.get("LBDVD_CACHE_DIR")
    if chosen is not None and chosen.strip().lower() in ("", "0", "off", "none", "false", "no"):
        return None
    if chosen is None:
        base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        chosen = os.path.join(base, "lbdvd-jax", "xla")
    try:
        os.makedirs(chosen, exist_ok=True)
        if not os.access(chosen, os.W_OK):
            return None
    except OSError:
        return None
    environ["JAX_COMPILATION_CACHE_DIR"] = chosen
    # every program: the many small ones (patch extraction, montage) add up to seconds per run
    environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax = sys.modules.get("jax")
    if jax is not None and environ is os.environ:
        jax.config.update("jax_compilation_cache_dir", chosen)
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    return chosen


def _interrupted(signum, frame):
    """Ctrl-C in the `lbdvd` command: end now. A KeyboardInterrupt would wait for the running XLA
    computation (minutes for long RL runs) and could crash in interpreter teardown while XLA
    threads still run; exiting at once after removing the temporary file of any write in
    progress leaves only complete outputs and never crashes."""
    io = sys.modules.get("lbdvd_jax.io")
    if io is not None:
        io.remove_pending_temporaries()
    try:
        sys.stderr.write("\nlbdvd: interrupted\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


def entry() -> int:
    """Console-script entry point: one XLA host device per core, compiled programs cached on
    disk, Ctrl-C ends at once, then :func:`main`."""
    import signal
    use_host_cores()
    use_compilation_cache()
    signal.signal(signal.SIGINT, _interrupted)
    return main()


def main(argv: list[str] | None = None) -> int:
    """Runs the `lbdvd` command; returns the exit status (0 ok, 2 user error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = bool(os.environ.get("LBDVD_DEBUG"))

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(f"lbdvd: warning: {message}\n")

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            parser = build_parser()
            if argv[:1] == ["train"]:  # everything after `train` goes to the training script
                return int(cmd_train(argparse.Namespace(rest=argv[1:])) or 0)
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help()
                return 2
            return int(args.func(args) or 0)
    except SystemExit as stop:  # --help, --version
        return int(stop.code or 0) if isinstance(stop.code, int) else 0
    except KeyboardInterrupt:
        sys.stderr.write("lbdvd: interrupted\n")
        return 130
    except (UsageError, InputError, FileNotFoundError, FileExistsError, PermissionError,
            IsADirectoryError, NotADirectoryError) as err:  # anything else is a bug: traceback
        if debug:
            raise
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        sys.stderr.write(f"lbdvd: error: {msg}\n")
        return 2
