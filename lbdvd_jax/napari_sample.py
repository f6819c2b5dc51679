"""napari sample data: the bundled BBBC006 field a01 in focus and its z = 00 plane (out of focus).

File > Open Sample > lbdvd-jax. Both at 0.65 µm per pixel (the estimator's optics), offline.
"""

from __future__ import annotations

__all__ = ["bbbc006_a01_pair"]


def bbbc006_a01_pair():
    """[(data, kwargs, 'image')] for the out-of-focus z00 plane and the in-focus plane of a01."""
    from lbdvd_jax.io import read_tiff
    from lbdvd_jax.synthesis import bundled_path

    out = []
    for name, file in (("a01 z00 (out of focus)", "a01_z00.tif"), ("a01 in focus", "a01_infocus.tif")):
        img = read_tiff(bundled_path(file)).data
        out.append((img, {"name": name, "scale": (0.65, 0.65), "colormap": "gray",
                          "metadata": {"source": f"BBBC006 {file}"}}, "image"))
    return out
