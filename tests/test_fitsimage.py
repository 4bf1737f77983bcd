"""FITS inspection: what is accepted as a 2-D image, what is refused and why, and the header summary."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits

from appliance import fitsimage
from appliance.errors import InvalidContent, TooLarge, UnsupportedType
from appliance.fitsimage import inspect_fits, prepare_image
from tests.conftest import write_image


def test_summary_of_a_2d_image(image):
    summary = inspect_fits(image)
    assert summary.hdu == 0
    assert summary.naxis == [64, 64] and summary.shape == [64, 64]
    assert summary.bitpix == -32 and summary.bunit == "JY/BEAM"
    assert summary.celestial_wcs and summary.projection == "SIN" and summary.radesys == "ICRS"
    assert summary.pixel_scale_arcsec == pytest.approx([1.5, 1.5])
    assert summary.center_ra_deg == pytest.approx(150.0, abs=1e-3)
    assert summary.center_dec_deg == pytest.approx(-30.0, abs=1e-3)
    assert summary.beam.bmaj_arcsec == pytest.approx(6.5)
    assert summary.beam.bmin_arcsec == pytest.approx(5.0)
    assert summary.beam.bpa_deg == 30.0 and summary.beam.source == "header"
    assert summary.notes == []


def test_four_axis_cube_with_degenerate_axes_is_an_image_with_its_frequency(tmp_path):
    path = write_image(
        tmp_path / "cube.fits",
        shape=(1, 1, 40, 50),
        header=dict(CTYPE3="FREQ", CRVAL3=1.4e9, CDELT3=1e6, CRPIX3=1.0, CTYPE4="STOKES", CRVAL4=1.0),
    )
    summary = inspect_fits(path)
    assert summary.naxis == [50, 40, 1, 1] and summary.shape == [40, 50]
    assert summary.frequency_hz == pytest.approx(1.4e9)
    assert summary.celestial_wcs


def test_missing_bpa_and_beam_from_aips_history_are_noted(tmp_path):
    path = write_image(tmp_path / "aips.fits", beam=False)
    with fits.open(path, mode="update") as hdul:
        hdul[0].header.add_history("AIPS   CLEAN BMAJ=  1.8056E-03 BMIN=  1.5000E-03 BPA=  12.50")
    beam = inspect_fits(path).beam
    assert beam.source == "history" and beam.bmaj_arcsec == pytest.approx(6.5, rel=1e-3) and beam.bpa_deg == 12.5

    no_bpa = write_image(tmp_path / "nobpa.fits", beam=False, header=dict(BMAJ=2e-3, BMIN=2e-3))
    summary = inspect_fits(no_bpa)
    assert summary.beam.bpa_deg is None and "no BPA in the header" in summary.notes

    no_beam = write_image(tmp_path / "nobeam.fits", beam=False)
    summary = inspect_fits(no_beam)
    assert summary.beam is None and any("no restoring beam" in n for n in summary.notes)


def test_image_without_wcs_is_accepted_and_says_so(tmp_path):
    summary = inspect_fits(write_image(tmp_path / "pixels.fits", wcs=False))
    assert not summary.celestial_wcs and summary.pixel_scale_arcsec is None
    assert any("no celestial WCS" in n for n in summary.notes)


def test_image_in_an_extension_after_an_empty_primary(tmp_path):
    path = tmp_path / "ext.fits"
    data = np.zeros((30, 20), dtype=np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI")]).writeto(path)
    summary = inspect_fits(path)
    assert summary.hdu == 1 and summary.shape == [30, 20]


def test_gzipped_image_is_read(tmp_path, image):
    packed = tmp_path / "field.fits.gz"
    packed.write_bytes(gzip.compress(image.read_bytes()))
    assert inspect_fits(packed).shape == [64, 64]


@pytest.mark.parametrize(
    ("make", "error", "code", "words"),
    [
        (lambda p, img: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100)), UnsupportedType, "not_fits", "not FITS"),
        (lambda p, img: p.write_bytes(img.read_bytes()[:-4000]), InvalidContent, "truncated_fits", "truncated"),
        (lambda p, img: p.write_bytes(img.read_bytes()[:2000]), InvalidContent, "corrupt_fits", "corrupt"),
        (
            lambda p, img: p.write_bytes(gzip.compress(img.read_bytes())[:-100]),
            InvalidContent,
            "corrupt_gzip",
            "gzip stream",
        ),
        (lambda p, img: p.write_bytes(gzip.compress(b"hello world")), UnsupportedType, "not_fits", "does not hold"),
        (
            lambda p, img: p.write_bytes(gzip.compress(img.read_bytes()[:-4000])),  # a whole gzip of a cut file
            InvalidContent,
            "truncated_fits",
            "truncated",
        ),
    ],
)
def test_unusable_files_are_refused_with_a_reason(tmp_path, image, make, error, code, words):
    path = tmp_path / "bad.fits"
    make(path, image)
    with pytest.raises(error) as caught:
        inspect_fits(path)
    assert caught.value.code == code and words in caught.value.message


def test_cube_and_table_only_files_are_not_2d_images(tmp_path):
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((8, 16, 16), dtype=np.float32)).writeto(cube)
    with pytest.raises(InvalidContent, match=r"no 2-D image .*HDU 0: 16x16x8") as caught:
        inspect_fits(cube)
    assert caught.value.code == "not_2d_image"

    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]).writeto(
        table
    )
    with pytest.raises(InvalidContent, match="no image data"):
        inspect_fits(table)


def test_real_atca_images(shared_data):
    for name in ("ScorpioExtendedSourceField.fits", "ScorpioS17Field.fits"):
        summary = inspect_fits(shared_data / name)
        assert summary.shape == [1000, 1000]
        assert summary.projection == "NCP" and summary.celestial_wcs
        assert summary.pixel_scale_arcsec == pytest.approx([1.5, 1.5], rel=1e-6)
        assert summary.beam.bmaj_arcsec == pytest.approx(6.5, rel=1e-6) and summary.beam.bpa_deg is None
        assert summary.frequency_hz == pytest.approx(1.4475e9, rel=1e-3)
        assert summary.telescope == "ATCA"


def test_header_cards_are_counted_in_the_raw_bytes_before_astropy_parses_them(tmp_path, monkeypatch):
    path = write_image(tmp_path / "history.fits")
    with fits.open(path, mode="update") as hdul:
        for step in range(300):
            hdul[0].header.add_history(f"AIPS step {step}")
    cards = len(fits.getheader(path)) + 1  # and the END card
    packed = tmp_path / "history.fits.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    for image in (path, packed):
        assert inspect_fits(image, header_max_cards=cards).shape == [64, 64]
        with monkeypatch.context() as patched:
            for name in ("open", "getheader"):
                patched.setattr(fits, name, lambda *a, **k: pytest.fail("astropy opened a file over the limit"))
            patched.setattr(fits.Header, "fromstring", lambda *a, **k: pytest.fail("astropy parsed the header"))
            with pytest.raises(TooLarge) as caught:
                inspect_fits(image, header_max_cards=cards - 1)
        assert caught.value.code == "header_too_large" and "header_max_cards" in caught.value.message


def test_a_gzip_bomb_is_refused_from_its_header_before_its_data_is_read(tmp_path):
    header = fits.PrimaryHDU(np.zeros((1, 1), dtype=np.float32)).header
    header.update(NAXIS1=22360, NAXIS2=22360)  # 2 GB of float32; the data itself is left out
    bomb = tmp_path / "bomb.fits.gz"
    bomb.write_bytes(gzip.compress(header.tostring().encode()))
    with pytest.raises(InvalidContent, match="truncated"):
        inspect_fits(bomb)
    with pytest.raises(TooLarge) as caught:
        inspect_fits(bomb, decompressed_max_bytes=2**30)
    assert caught.value.code == "too_large"
    assert "decompresses to 1999883520 bytes or more" in caught.value.message
    assert "decompressed_max_bytes" in caught.value.message


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_finder_input_is_written_a_band_of_rows_at_a_time_as_astropy_reads_the_whole_image(tmp_path, monkeypatch,
                                                                                           packed):  # fmt: skip
    counts = np.random.default_rng(5).integers(-2000, 2000, (1, 1, 90, 70), dtype=np.int16)
    counts[0, 0, 10, 10:20] = -32768  # BLANK
    hdu = fits.PrimaryHDU(counts, header=fits.Header({"BSCALE": 1e-5, "BZERO": 0.01, "BLANK": -32768}))
    hdu.header.update(BMAJ=2e-3, BMIN=2e-3, BPA=0.0)
    path = tmp_path / "scaled.fits"
    hdu.writeto(path)
    if packed:
        path = tmp_path / "scaled.fits.gz"
        path.write_bytes(gzip.compress((tmp_path / "scaled.fits").read_bytes()))
    expected = fits.getdata(tmp_path / "scaled.fits").astype(np.float32)[0, 0]
    monkeypatch.setattr(fitsimage, "ROW_BLOCK_BYTES", 7 * 70 * 4)  # bands of 7 rows, the last of 6
    notes = prepare_image(path, 0, tmp_path / "input.fits")
    written = fits.getdata(tmp_path / "input.fits")
    np.testing.assert_array_equal(written, expected)
    assert np.isnan(written[10, 10:20]).all() and fits.getheader(tmp_path / "input.fits")["BITPIX"] == -32
    assert "10 blank (NaN or infinite) pixels are masked (0.2% of the image)" in notes
    assert any("degenerate axes dropped: 4-D data of shape (1, 1, 90, 70)" in n for n in notes)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the unpacked copy is gone
