"""Optics calibration files: save/load, bad files, `lbdvd calibrate`, `--optics`, the estimator's warning."""

import json
import warnings

import pytest

from lbdvd_jax import Optics, load_delpnet, restore
from lbdvd_jax.cli import main
from lbdvd_jax.defocus_map import EstimatorDomainWarning
from lbdvd_jax.optics_file import load_optics, optics_mismatch, save_optics


def test_round_trip_and_no_overwrite(tmp_path):
    path = save_optics(tmp_path / "o.json", Optics(na=0.45, n=1.33, wavelength_um=0.52, pixel_um=0.325),
                       calibration={"z_um": 12.0})
    back = load_optics(path)
    assert (back.na, back.n, back.wavelength_um, back.pixel_um) == (0.45, 1.33, 0.52, 0.325)
    assert json.loads(path.read_text())["calibration"] == {"z_um": 12.0}
    with pytest.raises(FileExistsError, match="overwrite"):
        save_optics(path, Optics())
    assert optics_mismatch(back) == ["wavelength_um 0.52 vs 0.451", "na 0.45 vs 0.5", "n 1.33 vs 1",
                                     "pixel_um 0.325 vs 0.65"]
    assert optics_mismatch(Optics()) == []


@pytest.mark.parametrize("text, needle", [
    ("{not json", "is not JSON"),
    ('{"kind": "something else"}', "not an lbdvd optics file"),
    ('{"wavelength_um": 0.45, "na": 0.5, "n": 1.0}'.replace(', "n": 1.0', ""), "n must be a finite number"),
    ('{"wavelength_um": 0.45, "na": 1.2, "n": 1.0}', "smaller than Optics.n"),
    ('{"wavelength_um": -0.45, "na": 0.5, "n": 1.0}', "wavelength_um"),
    ('{"wavelength_um": "blue", "na": 0.5, "n": 1.0}', "wavelength_um must be a finite number"),
])
def test_bad_files_name_the_problem(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=needle) as err:
        load_optics(path)
    assert "bad.json" in str(err.value)


def test_cli_optics_option(tmp_path, capsys):
    good = save_optics(tmp_path / "o.json", Optics(na=0.3))
    assert main(["psf", "-o", str(tmp_path / "a.tif"), "--z-um", "4", "--size", "25", "--optics", str(good)]) == 0
    assert main(["psf", "-o", str(tmp_path / "b.tif"), "--z-um", "4", "--size", "25"]) == 0
    import tifffile

    a, b = tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif")
    assert a.max() > b.max()  # NA 0.3 blurs less at 4 µm than NA 0.5
    (tmp_path / "bad.json").write_text('{"wavelength_um": 0.45, "na": 1.2, "n": 1.0}')
    capsys.readouterr()
    assert main(["psf", "-o", str(tmp_path / "c.tif"), "--optics", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--optics" in err[0] and "bad.json" in err[0]
    assert not (tmp_path / "c.tif").exists()


def test_calibrate_from_a_focus_pair(tmp_path, real_fields, capsys):
    import tifffile

    from lbdvd_jax.synthesis import synthesize_defocus

    focus = real_fields[0]
    blurred, _ = synthesize_defocus(focus, level=5, seed=0)  # 10 µm at NA 0.5
    tifffile.imwrite(tmp_path / "focus.tif", focus)
    tifffile.imwrite(tmp_path / "blurred.tif", blurred)
    out = tmp_path / "optics.json"
    assert main(["calibrate", str(tmp_path / "blurred.tif"), "--reference", str(tmp_path / "focus.tif"),
                 "-o", str(out), "--fit", "--steps", "60"]) == 0
    doc = json.loads(out.read_text())
    assert abs(doc["calibration"]["z_um"] - 10.0) < 1.0
    assert load_optics(out).na == pytest.approx(0.5)
    assert "z = " in capsys.readouterr().out


def test_estimator_warns_for_other_optics(real_fields):
    img = real_fields[0][:200, :200]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restore(img, model=load_delpnet(), optics=Optics(na=0.8, n=1.33))
    msgs = [str(w.message) for w in caught if issubclass(w.category, EstimatorDomainWarning)]
    assert any("trained for other optics" in m and "na 0.8 vs 0.5" in m for m in msgs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restore(img, model=load_delpnet())
    assert not any("trained for other optics" in str(w.message) for w in caught)
