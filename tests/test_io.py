"""TIFF reading and writing: dtypes, stacks, compression, pixel size, metadata, atomic writes."""

import os
import warnings

import numpy as np
import pytest
import tifffile

from lbdvd_jax.io import check_pixel_size, read_tiff, to_dtype, write_tiff

Z00_A01 = "bbbc006/z00/00_mcf-z-stacks-03212011_a01_s1_w1a571d43d-5554-47fd-bb54-5db68290e5a7.tif"
INFOCUS_A01 = "bbbc006/infocus/BBBC006_z_aligned__a01__s1__w1_10.tif"


def test_reads_real_lzw_and_zlib(data_dir):
    z00 = read_tiff(data_dir / Z00_A01)
    assert z00.data.shape == (520, 696) and z00.data.dtype == np.uint16
    assert (z00.data.min(), z00.data.max()) == (105, 578)
    assert z00.compression == "lzw"
    assert z00.pixel_um is None  # its 72-dpi resolution tag is a placeholder, not a scale
    foc = read_tiff(data_dir / INFOCUS_A01, default_pixel_um=0.65)
    assert foc.compression == "zlib" and foc.pixel_um == 0.65 and foc.pixel_source == "default"
    assert abs(foc.data.mean() - 132.1) < 0.05


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(37, 51), (3, 20, 30), (2, 3, 16, 17)])
def test_roundtrip_lossless(tmp_path, rng, dtype, shape):
    hi = 255 if dtype == np.uint8 else 4095
    data = (rng.random(shape) * hi).astype(dtype)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, data, compression="lzw", photometric="minisblack")
    img = read_tiff(src)
    assert img.data.dtype == dtype and img.data.shape == shape
    out = write_tiff(tmp_path / "out.tif", img.data.astype(np.float64), like=img)
    back = read_tiff(out)
    assert back.data.dtype == dtype and back.data.shape == shape
    np.testing.assert_array_equal(back.data, data)
    assert back.compression == "lzw"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]  # no temp left
    assert (out.stat().st_mode & 0o777) == (src.stat().st_mode & 0o777)  # not mkstemp's 0600


def test_pixel_size_from_metadata_and_carried_over(tmp_path):
    data = np.arange(2 * 20 * 30, dtype=np.uint16).reshape(2, 20, 30)
    cases = {
        "imagej": dict(imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                       metadata={"unit": "micron", "axes": "ZYX", "spacing": 2.0}),
        "ome": dict(ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.3,
                                        "PhysicalSizeXUnit": "µm"}),
        "resolution": dict(resolution=(1e4 / 0.7, 1e4 / 0.7), resolutionunit="CENTIMETER",
                           photometric="minisblack"),
    }
    want = {"imagej": 0.5, "ome": 0.3, "resolution": 0.7}
    for kind, kwargs in cases.items():
        src = tmp_path / f"{kind}.tif"
        tifffile.imwrite(src, data, **kwargs)
        img = read_tiff(src, default_pixel_um=0.65)
        assert img.pixel_source == kind and img.pixel_um == pytest.approx(want[kind])
        out = write_tiff(tmp_path / f"{kind}_out.tif", img.data, like=img)
        back = read_tiff(out)
        assert back.pixel_source == kind and back.pixel_um == pytest.approx(want[kind], rel=1e-6)
        np.testing.assert_array_equal(back.data, data)
    ij = read_tiff(tmp_path / "imagej_out.tif")
    assert ij.axes == "ZYX"
    with tifffile.TiffFile(tmp_path / "imagej_out.tif") as tif:
        assert tif.imagej_metadata["spacing"] == 2.0


def test_description_carried_for_plain_tiff(tmp_path):
    src = tmp_path / "d.tif"
    tifffile.imwrite(src, np.ones((8, 8), np.uint16), description="acquired by scope 7",
                     metadata=None)
    img = read_tiff(src)
    write_tiff(tmp_path / "o.tif", img.data, like=img)
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.pages[0].description == "acquired by scope 7"


def test_rounding_and_clipping_warns(tmp_path):
    src = tmp_path / "u8.tif"
    tifffile.imwrite(src, np.zeros((4, 4), np.uint8))
    img = read_tiff(src)
    vals = np.full((4, 4), 10.4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no clipping: no warning
        write_tiff(tmp_path / "a.tif", vals, like=img)
    assert read_tiff(tmp_path / "a.tif").data.max() == 10
    vals[0, 0], vals[0, 1] = 300.0, -2.0
    with pytest.warns(UserWarning, match="2 pixel"):
        write_tiff(tmp_path / "b.tif", vals, like=img)
    got = read_tiff(tmp_path / "b.tif").data
    assert got[0, 0] == 255 and got[0, 1] == 0
    np.testing.assert_array_equal(to_dtype(np.array([1.5, 2.5]), np.float32), [1.5, 2.5])


def test_never_overwrites_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "x.tif"
    write_tiff(path, np.ones((5, 5), np.float32))
    with pytest.raises(FileExistsError, match="overwrite"):
        write_tiff(path, np.zeros((5, 5), np.float32))
    assert read_tiff(path).data.max() == 1
    write_tiff(path, np.zeros((5, 5), np.float32), overwrite=True)
    assert read_tiff(path).data.max() == 0
    with pytest.raises(ValueError, match="NaN"):
        write_tiff(tmp_path / "nan.tif", np.full((5, 5), np.nan),
                   like=read_tiff(path))
    assert sorted(os.listdir(tmp_path)) == ["x.tif"]


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: .*does not exist"):
        read_tiff(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage" * 3)
    with pytest.raises(ValueError, match="not a readable TIFF"):
        read_tiff(tmp_path / "junk.tif")
    for dtype in (np.int16, np.float64, np.uint32):
        tifffile.imwrite(tmp_path / "t.tif", np.zeros((4, 4), dtype))
        with pytest.raises(TypeError, match="uint8, uint16 or float32"):
            read_tiff(tmp_path / "t.tif")
        os.unlink(tmp_path / "t.tif")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match="colour"):
        read_tiff(tmp_path / "rgb.tif")
    with pytest.raises(ValueError, match="is a folder"):
        read_tiff(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        write_tiff(tmp_path / "afile" / "o.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        write_tiff(tmp_path / "o.tif", np.zeros((4, 4), np.int64))
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="shape"):
        write_tiff(tmp_path / "o.tif", np.zeros((4, 5)), like=read_tiff(tmp_path / "s.tif"))


def test_pixel_size_check():
    assert check_pixel_size(None, 0.65)
    assert check_pixel_size(0.651, 0.65)
    with pytest.warns(UserWarning, match="differs from the model's optics"):
        assert not check_pixel_size(0.325, 0.65, name="cells.tif")


def test_planar_16bit_stack_saved_the_obvious_way_reads_as_planes(tmp_path, rng):
    import warnings

    import tifffile
    stack = rng.integers(100, 4000, (3, 90, 100)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack)  # tifffile tags (3, H, W) as planar RGB
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        img = read_tiff(tmp_path / "s.tif")
    assert any("read as grey planes" in str(w.message) for w in got)
    np.testing.assert_array_equal(img.data, stack)
    write_tiff(tmp_path / "o.tif", img.data.astype(np.float32), like=img)
    np.testing.assert_array_equal(read_tiff(tmp_path / "o.tif").data, stack)
    rgb = rng.integers(0, 255, (90, 100, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(ValueError, match="photometric='minisblack'"):
        read_tiff(tmp_path / "rgb.tif")
