"""The demo figure: scores, scale bar, depth in µm beside the truth, a stretch that shows dim nuclei."""

import numpy as np
import pytest

from lbdvd_jax.demo import SCALE_BAR_UM, demo_figure, display_stretch

pytest.importorskip("matplotlib")


def _row(name, truth, rng):
    ref = rng.uniform(100, 5000, (120, 160)).astype(np.float32)
    depth = np.full((3, 4), 8.0, np.float32)
    depth[0, 0] = np.nan  # a bg patch
    return {"name": name, "input": ref * 0.9, "input_psnr": 41.234, "depth_um": depth,
            "true_depth_um": np.full((120, 160), 7.5, np.float32) if truth else None,
            "restored": ref, "restored_psnr": 47.5, "reference": ref}


def test_demo_figure_panels(rng):
    fig = demo_figure([_row("real z=00", False, rng), _row("synthetic tilt", True, rng)], pixel_um=0.65)
    axes = fig.axes
    titles = [a.get_title() for a in axes]
    assert "real z=00: input — PSNR 41.23 dB" in titles and "restored (DV) — PSNR 47.50 dB" in titles
    labels = [a.get_ylabel() for a in axes]
    assert labels.count("defocus (µm); blank = bg") == 3  # estimated x2, true for the synthetic row
    texts = [t.get_text() for a in axes for t in a.texts]
    assert texts.count(f"{SCALE_BAR_UM:g} µm") == 6  # input, restored, reference in each row
    assert "not known\n(real data)" in texts  # no ground-truth depth for the real plane
    # the scale bar is 50 µm long at the given pixel size
    bars = [p for a in axes for p in a.patches]
    assert len(bars) == 6 and all(abs(b.get_width() - SCALE_BAR_UM / 0.65) < 1e-9 for b in bars)


def test_stretch_lifts_dim_nuclei():
    # a nucleus at 5 % of the reference range shows at 22 % grey instead of 5 %
    assert display_stretch(np.array([5.0]), 0.0, 100.0)[0] == pytest.approx(np.sqrt(0.05))
    assert display_stretch(np.array([-1.0, 200.0]), 0.0, 100.0).tolist() == [0.0, 1.0]
