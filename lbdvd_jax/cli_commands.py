"""The `lbdvd` subcommands: each validates with `cli_checks`, then calls the library."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import warnings

import numpy as np

from lbdvd_jax.cli_checks import (
    UsageError,
    _check_outputs,
    _check_ranges,
    _check_values,
    _collect_inputs,
    _output_paths,
    _planes,
    _read_one_plane,
    pool_option,
)

__all__ = ["cmd_bench", "cmd_calibrate", "cmd_demo", "cmd_evaluate", "cmd_predict", "cmd_psf", "cmd_restore",
           "cmd_synth", "cmd_train"]


def progress_bar(total: int, label: str, *, quiet: bool, file=None):
    """A tqdm bar on stderr (rate, ETA; off with --quiet, and by tqdm itself when stderr is not a
    terminal, so logs and pipes stay clean)."""
    from tqdm import tqdm

    return tqdm(total=max(int(total), 1), desc=label, disable=True if quiet else None,
                file=file if file is not None else sys.stderr, dynamic_ncols=True, leave=True)


def _load_model(args):
    from lbdvd_jax.checkpoint import load_delpnet
    return load_delpnet(getattr(args, "model", None))


def _optics(args):
    """Optics from --optics FILE (else the defaults), with --wavelength-um/--na/--n on top."""
    from lbdvd_jax.optics import Optics
    from lbdvd_jax.optics_file import load_optics

    base = Optics()
    if getattr(args, "optics", None):
        try:
            base = load_optics(args.optics)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"--optics: {err}") from None
    kw = {}
    for name in ("wavelength_um", "na", "n"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    try:
        return base.replace(**kw).validate()
    except ValueError as err:
        raise UsageError(f"--wavelength-um/--na/--n: {err}") from None


def _is_folder_job(args) -> bool:
    from lbdvd_jax.ome_zarr_io import is_ome_zarr

    return not is_ome_zarr(args.output) and not any(is_ome_zarr(i) for i in args.inputs) and (
        len(args.inputs) > 1 or pathlib.Path(args.inputs[0]).is_dir())


def cmd_restore(args) -> int:
    from lbdvd_jax import io
    from lbdvd_jax.pipeline import restore

    _check_ranges(args)
    if args.mode == "oracle" and args.levels is None:
        raise UsageError("--mode oracle needs --levels LEVELS.tif (a per-patch or per-pixel "
                         "level map, e.g. from `lbdvd predict`)")
    background = "auto" if args.background == "auto" else float(args.background)
    from lbdvd_jax.cli_scale import cmd_restore_files_distributed, cmd_restore_zarr, wants_scale_out

    if args.workers < 1 or args.block < 84:
        raise UsageError(f"--workers {args.workers} / --block {args.block}: need >= 1 worker and blocks "
                         ">= 84 px")
    if wants_scale_out(args) and not (args.scheduler and _is_folder_job(args)):
        if args.mode == "oracle":
            raise UsageError("--mode oracle is not available for chunked (OME-Zarr) restores; use a TIFF")
        return cmd_restore_zarr(args, lambda: _load_model(args), _optics(args))
    inputs = _collect_inputs(args.inputs)
    outputs = _output_paths(inputs, args.output, "")
    if args.scheduler:  # many files spread over the scheduler's workers (or threads)
        _check_outputs([o for o in outputs if args.overwrite or not o.exists()], inputs, args.overwrite)
        return cmd_restore_files_distributed(args, inputs, outputs, _optics(args))
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
    bar = progress_bar(sum(_planes(i.data).shape[0] for i in images), "images", quiet=args.quiet)
    for src, img, dst in zip(inputs, images, outputs):
        patches = progress_bar(1, f"  {src.name}", quiet=args.quiet)

        def on_patches(done, total, patches=patches):
            if patches.total != total:
                patches.total = total
            patches.update(done - patches.n)
        planes = _planes(img.data).astype(np.float32)
        planes = planes[0] if planes.shape[0] == 1 else planes
        result = restore(planes, model=model, optics=optics, mode=args.mode, levels=oracle,
                         stride=args.stride, weights=args.weights, context=args.context,
                         num_iter=args.iterations, background=background, pool=pool_option(args),
                         defocus=args.defocus,
                         progress=None if args.quiet else on_patches)
        dst.parent.mkdir(parents=True, exist_ok=True)
        io.write_tiff(dst, np.asarray(result.image).reshape(img.data.shape), like=img,
                      overwrite=args.overwrite)
        patches.close()
        bar.update(1 if planes.ndim == 2 else planes.shape[0])
    bar.close()
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
    dmap = predict_levels(plane, model=_load_model(args), stride=args.stride, pool=pool_option(args))
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


def cmd_calibrate(args) -> int:
    """Fit z and the chosen optics fields to a focus pair (or a bead) and write the optics JSON."""
    from lbdvd_jax import io
    from lbdvd_jax.fit import fit_defocus
    from lbdvd_jax.optics_file import save_optics

    out = pathlib.Path(args.output)
    if out.exists() and not args.overwrite:
        raise UsageError(f"-o: {str(out)!r} exists; pass --overwrite or choose another output")
    if args.steps < 1:
        raise UsageError(f"--steps: expected >= 1, got {args.steps}")
    optics = _optics(args)
    obs = io.read_tiff(args.input, default_pixel_um=args.pixel_um)
    _check_values(obs.data, pathlib.Path(args.input).name)
    observed = np.asarray(obs.data, np.float32)
    if observed.ndim != 2:
        raise UsageError(f"OBSERVED: expected one plane, got shape {observed.shape}")
    if args.reference == "bead":
        reference = np.zeros_like(observed)
        reference[observed.shape[0] // 2, observed.shape[1] // 2] = 1.0
    else:
        ref = io.read_tiff(args.reference).data
        reference = np.asarray(ref, np.float32)
        if reference.shape != observed.shape:
            raise UsageError(f"--reference: shape {reference.shape} differs from OBSERVED {observed.shape}; "
                             "give the in-focus plane of the same field")
    if obs.pixel_um is not None and not getattr(args, "optics", None):
        optics = optics.replace(pixel_um=float(obs.pixel_um))
    res = fit_defocus(observed, reference, optics=optics, fit=("z_um",) + tuple(args.fit),
                      num_steps=args.steps)
    fitted = res.optics.replace(**{f: float(getattr(res.optics, f)) for f in ("wavelength_um", "na", "n")})
    calibration = {"observed": str(pathlib.Path(args.input).resolve()), "reference": args.reference,
                   "fitted": ["z_um"] + list(args.fit), "z_um": float(res.z_um),
                   "correlation": float(res.correlation), "loss": float(res.loss)}
    try:
        save_optics(out, fitted, calibration=calibration, overwrite=args.overwrite)
    except ValueError as err:
        raise UsageError(f"calibrate: the fit gave impossible optics ({err}); fit fewer fields (--fit)") from None
    print(f"z = {float(res.z_um):.2f} µm, NA {fitted.na:.4g}, wavelength {fitted.wavelength_um:.4g} µm, "
          f"n {fitted.n:.4g}, pixel {fitted.pixel_um:.4g} µm (Pearson {float(res.correlation):.3f}) -> {out}")
    return 0


def cmd_psf(args) -> int:
    from lbdvd_jax import io
    from lbdvd_jax.psf import DEFOCUS_LEVELS_UM, kernel_size_for, psf_stack

    out = pathlib.Path(args.output)
    if out.exists() and not args.overwrite:
        raise UsageError(f"-o: {str(out)!r} exists; pass --overwrite or choose another output")
    optics = _optics(args).replace(pixel_um=args.pixel_um)
    z = DEFOCUS_LEVELS_UM if args.z_um is None else tuple(args.z_um)
    if args.size < 3 or args.size % 2 == 0:
        raise UsageError(f"--size: got {args.size}, expected an odd number of px >= 3")
    need = kernel_size_for(optics, max(abs(v) for v in z))
    if args.size < need:
        warnings.warn(f"--size {args.size} cuts the {max(abs(v) for v in z):g} µm PSF (99 % of its energy "
                      f"needs {need} px) and the cut kernel is renormalised to sum 1: pass --size {need}",
                      UserWarning, stacklevel=1)
    stack = np.asarray(psf_stack(optics, z, size=args.size), np.float32)
    io.write_tiff(out, stack, pixel_um=args.pixel_um, overwrite=args.overwrite)
    peaks = ", ".join(f"{zz:g}µm:{p:.3f}" for zz, p in zip(z, stack.max(axis=(1, 2))))
    print(f"PSF stack {stack.shape} (peak value per z: {peaks}) written to {out.resolve()}")
    return 0


def cmd_synth(args) -> int:
    from lbdvd_jax import io
    from lbdvd_jax.synthesis import synthesize_defocus

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
                                        seed=args.seed, noise=False if args.no_noise else args.noise)
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
    from lbdvd_jax.evaluation import heldout_fields
    fields, _ = heldout_fields(args.fields)
    result = fig8_evaluation(model=_load_model(args), fields=fields, per_level=args.per_level, seed=args.seed,
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
