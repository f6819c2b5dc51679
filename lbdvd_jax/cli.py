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
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import warnings

import numpy as np

from lbdvd_jax.constants import MODES

TIFF_SUFFIXES = (".tif", ".tiff")


class UsageError(Exception):
    """A mistake in the command line or its files, reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class Progress:
    """A minimal stderr progress bar (silent when `enabled` is False or stderr is not a TTY)."""

    def __init__(self, total: int, label: str, *, enabled: bool = True):
        self.total, self.label, self.done = max(int(total), 1), label, 0
        self.enabled = enabled
        self.start = time.perf_counter()

    def update(self, n: int = 1, note: str = ""):
        self.done += n
        if not self.enabled:
            return
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total} "
                         f"{time.perf_counter() - self.start:5.1f}s {note}"[:110].ljust(110))
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _collect_inputs(paths: list[str]) -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in TIFF_SUFFIXES)
            if not found:
                raise UsageError(f"IN: folder {str(p)!r} holds no .tif/.tiff files")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise UsageError(f"IN: {str(p)!r} does not exist; check the path")
    return files


def _output_paths(inputs, out: str, suffix: str) -> list[pathlib.Path]:
    out_path = pathlib.Path(out)
    if len(inputs) == 1 and out_path.suffix.lower() in TIFF_SUFFIXES:
        return [out_path]
    if out_path.exists() and not out_path.is_dir():
        raise UsageError(f"-o: {out!r} is a file; give a folder for several inputs")
    names = [p.stem + suffix + p.suffix for p in inputs]
    if len(set(names)) != len(names):
        raise UsageError("IN: two inputs have the same file name; restore them into separate "
                         "output folders")
    return [out_path / n for n in names]


def _probe_writable(folder):
    """Create and remove a temporary folder in `folder`: the only test that holds for root, read-only
    mounts and pseudo file systems alike. Nothing is left behind."""
    import tempfile
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lbdvd-probe-", dir=folder))
    except OSError as err:
        raise UsageError(f"-o: cannot create or write files in {str(folder)!r} ({err.strerror}); "
                         "choose another output folder") from None


def _check_outputs(paths, inputs, overwrite: bool):
    for p, src in zip(paths, inputs):
        anc = p.parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            raise UsageError(f"-o: {str(anc)!r} is a file, not a folder; choose another output")
        if p.resolve() == src.resolve():
            raise UsageError(f"-o: output {str(p)!r} is the input itself; choose another folder")
        if p.exists() and not overwrite:
            raise UsageError(f"-o: {str(p)!r} exists; pass --overwrite (or --skip-existing for "
                             "restore) or choose another output")
        if p.exists() and overwrite and not os.access(p, os.W_OK):
            raise UsageError(f"-o: {str(p)!r} exists and is not writable")
        _probe_writable(anc)


MAX_ITERATIONS = 2000  #: more RL iterations than this only amplify noise (and take minutes per image)


def _check_ranges(args):
    """Every numeric option's range, in CLI words, before any file is read or model loaded."""
    def bad(opt, got, want):
        raise UsageError(f"{opt}: got {got!r}, expected {want}")

    stride = getattr(args, "stride", None)
    if stride is not None and not 1 <= stride <= 84:
        bad("--stride", stride, "1..84 px (42: triangular montage, the paper's; 84: rectangular)")
    context = getattr(args, "context", None)
    if context is not None and not 0 <= context <= 84:
        bad("--context", context, "0..84 px of neighbours around each patch (default 24)")
    for opt, name in (("--pixel-um", "pixel_um"), ("--wavelength-um", "wavelength_um"),
                      ("--na", "na"), ("--n", "n")):
        v = getattr(args, name, None)
        if v is not None and not (np.isfinite(v) and v > 0):
            bad(opt, v, "a positive number")
    na, n = getattr(args, "na", None), getattr(args, "n", None)
    if na is not None and na >= (n if n is not None else 1.0):
        bad("--na", na, f"less than the refractive index --n ({n if n is not None else 1.0})")
    it = getattr(args, "iterations", None)
    if it is not None and max(np.atleast_1d(it)) > MAX_ITERATIONS:
        bad("--iterations", it, f"at most {MAX_ITERATIONS} per level (the paper uses 15)")
    bg = getattr(args, "background", None)
    if bg is not None and bg != "auto":
        try:
            value = float(bg)
        except ValueError:
            bad("--background", bg, "'auto' or a number of counts")
        if not (np.isfinite(value) and value >= 0):
            bad("--background", bg, "'auto' or counts >= 0")


def _load_model(args):
    from lbdvd_jax.demo import _load_model as load
    return load(getattr(args, "model", None))[0]


def _optics(args):
    from lbdvd_jax.optics import Optics
    kw = {}
    for name in ("wavelength_um", "na", "n"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    return Optics(**kw)


def _add_optics(p):
    p.add_argument("--wavelength-um", dest="wavelength_um", type=float, help="default 0.451")
    p.add_argument("--na", type=float, help="numerical aperture, default 0.5")
    p.add_argument("--n", type=float, help="immersion refractive index, default 1.0")
    p.add_argument("--pixel-um", dest="pixel_um", type=float, default=0.65,
                   help="pixel size when the TIFF holds none (default 0.65 µm)")


def _check_values(data, name):
    """NaN/Inf and negative pixels are refused up front, naming the file."""
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise UsageError(f"IN: {name} holds NaN or Inf pixels; replace them (e.g. with 0) "
                             "and save it again")
        if data.size and data.min() < 0:
            raise UsageError(f"IN: {name} has negative pixels (min {float(data.min()):g}); "
                             "restore needs non-negative intensities: clip at 0")


def _read_one_plane(args, why):
    """The single-plane TIFF of `args.input`, its values checked; stacks refused with `why`."""
    from lbdvd_jax import io
    img = io.read_tiff(args.input, default_pixel_um=args.pixel_um)
    name = pathlib.Path(args.input).name
    if _planes(img.data).shape[0] > 1:
        raise UsageError(f"IN: {name} holds {_planes(img.data).shape[0]} planes; {why}")
    _check_values(img.data, name)
    return img, name


def _planes(data):
    return data.reshape((-1,) + data.shape[-2:])


def cmd_restore(args) -> int:
    from lbdvd_jax import io
    from lbdvd_jax.pipeline import restore

    _check_ranges(args)
    if args.mode == "oracle" and args.levels is None:
        raise UsageError("--mode oracle needs --levels LEVELS.tif (a per-patch or per-pixel "
                         "level map, e.g. from `lbdvd predict`)")
    background = "auto" if args.background == "auto" else float(args.background)
    inputs = _collect_inputs(args.inputs)
    outputs = _output_paths(inputs, args.output, "")
    if args.skip_existing:
        done = [o.exists() for o in outputs]
        if any(done):
            print(f"skipping {sum(done)} input(s) whose output exists (--skip-existing)")
        inputs = [i for i, d in zip(inputs, done) if not d]
        outputs = [o for o, d in zip(outputs, done) if not d]
        if not inputs:
            print("nothing to do: every output exists")
            return 0
    _check_outputs(outputs, inputs, args.overwrite)
    optics = _optics(args)
    images, defaulted = [], []
    for p in inputs:  # every input is read and checked before the first restore
        try:
            img = io.read_tiff(p, default_pixel_um=args.pixel_um)
        except (ValueError, TypeError) as err:
            raise UsageError(f"IN: {p.name}: {str(err).splitlines()[0]}") from None
        _check_values(img.data, p.name)
        io.check_pixel_size(img.pixel_um, optics.pixel_um, name=p.name)
        if img.pixel_source == "default":
            defaulted.append(p.name)
        if min(img.data.shape[-2:]) < 84:
            raise UsageError(f"IN: {p.name} is {img.data.shape[-2:]}, smaller than one 84x84 "
                             "patch; pad it or restore a larger field")
        images.append(img)
    if defaulted:
        listing = ", ".join(defaulted[:3]) + (f" and {len(defaulted) - 3} more" if len(defaulted) > 3 else "")
        warnings.warn(f"{listing}: no pixel size in the file; assumed --pixel-um {args.pixel_um:g} µm "
                      "(also written into the output)", UserWarning, stacklevel=1)
    oracle = None
    if args.levels is not None:
        oracle = io.read_tiff(args.levels).data
    model = _load_model(args) if args.mode in ("dv", "soft") else None
    bar = Progress(sum(_planes(i.data).shape[0] for i in images), "images ",
                   enabled=not args.quiet and sys.stderr.isatty())
    for src, img, dst in zip(inputs, images, outputs):
        patches = Progress(1, "  patches", enabled=not args.quiet and sys.stderr.isatty())

        def on_patches(done, total, patches=patches):
            patches.total = total
            patches.update(done - patches.done, note=src.name)
        planes = _planes(img.data).astype(np.float32)
        planes = planes[0] if planes.shape[0] == 1 else planes
        result = restore(planes, model=model, optics=optics, mode=args.mode, levels=oracle,
                         stride=args.stride, weights=args.weights, context=args.context,
                         num_iter=args.iterations, background=background, pool=not args.no_pool,
                         defocus=args.defocus,
                         progress=None if args.quiet else on_patches)
        dst.parent.mkdir(parents=True, exist_ok=True)
        io.write_tiff(dst, np.asarray(result.image).reshape(img.data.shape), like=img,
                      overwrite=args.overwrite)
        bar.update(1 if planes.ndim == 2 else planes.shape[0], note=src.name)
    print(f"restored {len(inputs)} file(s) into {outputs[0].parent.resolve()}")
    return 0


def cmd_predict(args) -> int:
    from lbdvd_jax import io
    from lbdvd_jax.pipeline import level_map_pixels, predict_levels

    _check_ranges(args)
    out = pathlib.Path(args.output) if args.output else None
    if out is not None:
        _check_outputs([out], [pathlib.Path(args.input)], args.overwrite)
    img, name = _read_one_plane(args, "predict reads one plane: save the plane you want as its "
                                      "own TIFF (restore treats stacks)")
    optics = _optics(args)
    io.check_pixel_size(img.pixel_um, optics.pixel_um, name=name)
    plane = _planes(img.data)[0].astype(np.float32)
    zout = pathlib.Path(args.z_output) if args.z_output else None
    if zout is not None:
        _check_outputs([zout], [pathlib.Path(args.input)], args.overwrite)
    dmap = predict_levels(plane, model=_load_model(args), stride=args.stride, pool=not args.no_pool)
    labels, origins = dmap.labels, dmap.origins
    rows = len(np.unique(origins[:, 0]))
    levels = np.asarray(labels).reshape(rows, -1)
    counts = np.bincount(levels.ravel(), minlength=12)
    fg = levels[levels < 11]
    summary = {"file": str(args.input), "grid": list(levels.shape),
               "patches": int(levels.size), "bg": int(counts[11]),
               "level_counts": {str(k): int(c) for k, c in enumerate(counts[:11]) if c},
               "median_level": float(np.median(fg)) if fg.size else None,
               "median_defocus_um": float(2 * np.median(fg)) if fg.size else None,
               "median_expected_z_um": (round(float(np.nanmedian(dmap.z_um)), 2)
                                        if np.any(np.isfinite(dmap.z_um)) else None),
               "mean_certainty": (round(float(np.mean(dmap.certainty[labels != 11])), 3)
                                  if fg.size else None)}
    print(json.dumps(summary))
    if out is not None:
        pix = level_map_pixels(levels, plane.shape, stride=args.stride)
        io.write_tiff(out, pix.astype(np.uint8), overwrite=args.overwrite)
        print(f"level map (0..10, 11 = bg) written to {out.resolve()}")
    if zout is not None:
        zpix = level_map_pixels(np.asarray(dmap.z_um).reshape(rows, -1), plane.shape, stride=args.stride)
        io.write_tiff(zout, zpix.astype(np.float32), overwrite=args.overwrite)
        print(f"expected defocus map (µm, float32, NaN = bg) written to {zout.resolve()}")
    return 0


def cmd_psf(args) -> int:
    from lbdvd_jax import io
    from lbdvd_jax.psf import DEFOCUS_LEVELS_UM, psf_stack

    out = pathlib.Path(args.output)
    if out.exists() and not args.overwrite:
        raise UsageError(f"-o: {str(out)!r} exists; pass --overwrite or choose another output")
    optics = _optics(args).replace(pixel_um=args.pixel_um)
    z = DEFOCUS_LEVELS_UM if args.z_um is None else tuple(args.z_um)
    stack = np.asarray(psf_stack(optics, z, size=args.size), np.float32)
    io.write_tiff(out, stack, pixel_um=args.pixel_um, overwrite=args.overwrite)
    peaks = ", ".join(f"{zz:g}µm:{p:.3f}" for zz, p in zip(z, stack.max(axis=(1, 2))))
    print(f"PSF stack {stack.shape} (peak value per z: {peaks}) written to {out.resolve()}")
    return 0


def cmd_synth(args) -> int:
    from lbdvd_jax import io
    from lbdvd_jax.demo import synthesize_defocus

    _check_ranges(args)
    if args.level is None and args.depth is None:
        raise UsageError("synth: give --level L (0..10) or --depth tilt")
    if args.level is not None and not 0 <= args.level <= 10:
        raise UsageError(f"--level: expected 0..10, got {args.level}")
    out = pathlib.Path(args.output)
    _check_outputs([out], [pathlib.Path(args.input)], args.overwrite)
    img, name = _read_one_plane(args, "synth blurs one in-focus plane: save it as its own TIFF")
    plane = _planes(img.data)[0].astype(np.float32)
    blurred, depth = synthesize_defocus(plane, optics=_optics(args), level=args.level,
                                        seed=args.seed, noise=not args.no_noise)
    like = img if img.data.ndim == 2 else img._replace(data=_planes(img.data)[0], axes="YX",
                                                       metadata={})
    io.write_tiff(out, blurred, like=like, overwrite=args.overwrite)
    print(f"synthetic defocus (depth {float(depth.min()):.1f}-{float(depth.max()):.1f} µm) "
          f"written to {out.resolve()}")
    return 0


def cmd_train(args) -> int:
    """`lbdvd train ...` trains the defocus estimator; `--paper-delpnet` the paper's DelpNet."""
    rest = list(args.rest)
    if "--paper-delpnet" in rest:
        rest.remove("--paper-delpnet")
        from lbdvd_jax.train_delpnet_app import main as entry
    else:
        from lbdvd_jax.train_estimator_app import main as entry
    return int(entry(rest) or 0)


def cmd_evaluate(args) -> int:
    from lbdvd_jax.evaluation import fig8_evaluation, format_fig8
    out = pathlib.Path(args.output)
    if out.exists() and not args.overwrite:
        raise UsageError(f"-o: {str(out)!r} exists; pass --overwrite or choose another output")
    result = fig8_evaluation(model=_load_model(args), per_level=args.per_level, seed=args.seed,
                             num_iter=args.iterations, blind=not args.no_blind)
    text = json.dumps(result, indent=1)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    print(format_fig8(result))
    print(f"per-level results written to {out.resolve()}")
    return 0


def cmd_bench(args) -> int:
    from lbdvd_jax.evaluation import time_restore
    print(json.dumps(time_restore(model=_load_model(args), repeats=args.repeats)))
    return 0


def cmd_demo(args) -> int:
    from lbdvd_jax.demo import run_demo
    return run_demo(args.output, overwrite=args.overwrite, model_path=args.model,
                    figure=not args.no_figure)


def build_parser() -> argparse.ArgumentParser:
    from lbdvd_jax import __version__

    parser = _Parser(prog="lbdvd", description="Learning-based depth-variant deconvolution "
                     "(He et al. 2020) of out-of-focus fluorescence microscopy images.")
    parser.add_argument("--version", action="version", version=f"lbdvd-jax {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    def common(p, model=True):
        if model:
            p.add_argument("--model", help="estimator or DelpNet weights .npz (default: the shipped "
                           "defocus estimator)")
        p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        return p

    p = common(sub.add_parser("restore", help="restore TIFF files or folders"))
    p.add_argument("inputs", nargs="+", metavar="IN", help="TIFF files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder (or .tif for one input)")
    p.add_argument("--mode", choices=MODES, default="dv")
    p.add_argument("--levels", help="level map TIFF for --mode oracle (per patch or per pixel)")
    p.add_argument("--stride", type=int, default=42,
                   help="patch grid step in px, 1..84 (default 42: overlapping patches, triangular montage)")
    p.add_argument("--weights", choices=("triangular", "rectangular"), default="triangular")
    p.add_argument("--context", type=int, default=None,
                   help="px of real neighbours around each patch for RL, 0..84 (default 24)")
    p.add_argument("--iterations", type=_iterations, default=None,
                   help="RL iterations: one count (paper: 15) or 11 comma-separated counts, one "
                        "per defocus level (default: 1 at levels 0-1, 15 above; --mode di: 15)")
    p.add_argument("--no-pool", action="store_true",
                   help="classify each patch alone (the paper) instead of pooling neighbours' evidence")
    p.add_argument("--defocus", choices=("levels", "continuous"), default="levels",
                   help="levels: the paper's 11 PSFs; continuous: each patch's own depth from a "
                        "smooth depth surface fitted over the field (--mode dv)")
    p.add_argument("--background", default="auto",
                   help="counts subtracted before RL and added back: 'auto' (0.5th percentile, "
                        "default) or a number, e.g. 0 for the paper's RL on raw counts")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip inputs whose output exists (finish an interrupted batch)")
    _add_optics(p)
    p.set_defaults(func=cmd_restore)

    p = common(sub.add_parser("predict", help="per-patch defocus levels of one image"))
    p.add_argument("input", metavar="IN")
    p.add_argument("-o", "--output", help="write the level map TIFF here (uint8, 11 = bg)")
    p.add_argument("--stride", type=int, default=42, help="patch grid step in px, 1..84 (default 42)")
    p.add_argument("--z-output", help="write the expected defocus per pixel (µm, float32 TIFF) here")
    p.add_argument("--no-pool", action="store_true", help="each patch's own call (no neighbour pooling)")
    _add_optics(p)
    p.set_defaults(func=cmd_predict)

    p = common(sub.add_parser("psf", help="write the Eq. 2 PSF stack"), model=False)
    p.add_argument("-o", "--output", default="psf_stack.tif")
    p.add_argument("--z-um", dest="z_um", type=float, nargs="+", help="default 0 2 ... 20")
    p.add_argument("--size", type=int, default=49)
    _add_optics(p)
    p.set_defaults(func=cmd_psf)

    p = common(sub.add_parser("synth", help="synthetic defocus of an in-focus image"),
               model=False)
    p.add_argument("input", metavar="IN")
    p.add_argument("-o", "--output", required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--level", type=int, help="one defocus level 0..10 everywhere")
    g.add_argument("--depth", choices=("tilt",), help="tilted + undulating depth map")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-noise", action="store_true")
    _add_optics(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train the defocus estimator (--paper-delpnet: the paper's "
                       "DelpNet); `lbdvd train --help` lists the options",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train)

    p = common(sub.add_parser("evaluate", help="Fig. 8: PSNR/SSIM per defocus level"))
    p.add_argument("-o", "--output", default="fig8.json")
    p.add_argument("--per-level", type=int, default=45)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-blind", action="store_true", help="skip blind RL (slow)")
    p.set_defaults(func=cmd_evaluate)

    p = common(sub.add_parser("bench", help="time restore() on a 696x520 image"))
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=cmd_bench)

    p = common(sub.add_parser("demo", help="restore the bundled real images"))
    p.add_argument("-o", "--output", default="lbdvd_output")
    p.add_argument("--no-figure", action="store_true", help="skip the PNG figure")
    p.set_defaults(func=cmd_demo)
    return parser


def _iterations(text):
    """`--iterations`: an int, or 11 comma-separated ints (one per defocus level)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 11 comma-separated ints, got {text!r}")
    if any(v < 0 for v in values) or len(values) not in (1, 11):
        raise argparse.ArgumentTypeError(f"expected an int >= 0 or 11 comma-separated ints >= 0 "
                                         f"(one per level 0..10), got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


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
    """Console-script entry point: one XLA host device per core, Ctrl-C ends at once, then
    :func:`main`."""
    import signal
    use_host_cores()
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
    except (UsageError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
            NotADirectoryError, ValueError, TypeError) as err:
        if debug:
            raise
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        sys.stderr.write(f"lbdvd: error: {msg}\n")
        return 2
