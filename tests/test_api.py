"""The public API holds to its conventions (dm-pix style): every public name documented,
optional arguments keyword-only, no hidden **kwargs pass-throughs, except the listed ones."""

import inspect

import lbdvd_jax

# name -> why it may break a rule (reviewed; keep short and honest)
POSITIONAL_OPTIONAL_OK = {
    "load_delpnet": "the weights path is the call's one subject: load_delpnet('w.npz')",
    "load_estimator": "the weights path is the call's one subject",
    "psf_stack": "the depths are the subject beside the optics: psf_stack(optics, z)",
}
KWARGS_OK = {
    "defocus_crops": "forwards synth_batch's documented noise/bg keywords",
    "make_eval_set": "forwards synth_batch's documented keywords",
    "depth_invariant_deconvolve": "forwards depth_variant_deconvolve's documented keywords",
}


def _public_callables():
    for name in lbdvd_jax.__all__:
        obj = getattr(lbdvd_jax, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield name, obj


def test_every_public_name_is_documented():
    missing = [n for n, o in _public_callables() if not (o.__doc__ or "").strip()]
    assert not missing, f"undocumented public names: {missing}"


def test_optional_arguments_are_keyword_only():
    bad = []
    for name, obj in _public_callables():
        if not inspect.isfunction(obj) or name in POSITIONAL_OPTIONAL_OK:
            continue
        params = inspect.signature(obj).parameters.values()
        if any(p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty for p in params):
            bad.append(name)
    assert not bad, f"optional arguments that are positional: {bad}"


def test_no_hidden_kwargs():
    bad = [n for n, o in _public_callables() if inspect.isfunction(o) and n not in KWARGS_OK
           and any(p.kind == p.VAR_KEYWORD for p in inspect.signature(o).parameters.values())]
    assert not bad, f"**kwargs pass-throughs: {bad}"


def test_all_is_sorted_and_resolves():
    assert list(lbdvd_jax.__all__) == sorted(lbdvd_jax.__all__)
    for name in lbdvd_jax.__all__:
        getattr(lbdvd_jax, name)
