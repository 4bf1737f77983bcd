"""What a browser is shown of an image: the viewer's copy and the quicklook, for sky and pixel-only images."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import block_reduce
from astropy.wcs import WCS

from appliance.catalogs import normalized_table
from appliance.fitsimage import celestial_wcs
from appliance.quicklook import view_fits
from appliance.testing import make_grid_sky
from tests.conftest import API, REPO, api_client, make_settings, upload_file, write_image


def test_viewer_copy_of_a_large_image_is_block_averaged_with_its_wcs_at_the_block_centres(appliance, tmp_path):
    path = write_image(tmp_path / "wide.fits", shape=(31, 8195))  # 3x3 blocks; a row and two columns left over
    record = appliance.files.add("anonymous", path)
    view = view_fits(record, appliance.files.path(record), appliance.settings.cache_dir)
    with fits.open(view) as copy, fits.open(path) as original:
        assert copy[0].data.shape == (10, 2731)
        np.testing.assert_allclose(copy[0].data, block_reduce(original[0].data, 3, func=np.nanmean), rtol=1e-6)
        shown, sky = celestial_wcs(copy[0].header), celestial_wcs(original[0].header)
        for x, y in ((0, 0), (1000, 4), (2730, 9)):
            centre = sky.pixel_to_world(3 * x + 1, 3 * y + 1)  # the middle pixel of the block
            assert shown.pixel_to_world(x, y).separation(centre).arcsec < 1e-3


@pytest.mark.parametrize(
    ("shape", "header", "block"),
    [
        ((64, 64), {}, 1),  # no WCS keywords at all
        ((64, 64), {"CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CDELT1": 2.0, "CDELT2": 2.0}, 1),
        ((64, 64), {"CTYPE1": "RA---XYZ", "CTYPE2": "DEC--XYZ"}, 1),  # a projection wcslib does not know
        ((20, 8195), {}, 3),  # large enough to be averaged for the viewer
    ],
    ids=["no_wcs", "linear_axes", "unknown_projection", "averaged"],
)
def test_image_without_celestial_wcs_is_shown_on_its_pixel_axes(client, tmp_path, shape, header, block):
    file_uuid = upload_file(client, write_image(tmp_path / "pixels.fits", shape=shape, header=header, wcs=False))
    assert client.get(f"/files/{file_uuid}").status_code == 200
    quicklook = client.get(f"/files/{file_uuid}/quicklook.png")
    assert quicklook.status_code == 200 and quicklook.content.startswith(b"\x89PNG")
    view = client.get(f"/files/{file_uuid}/view.fits")
    assert view.status_code == 200
    with fits.open(io.BytesIO(view.content)) as copy:
        assert copy[0].header["BITPIX"] == -32 and copy[0].data.shape == (shape[0] // block, shape[1] // block)
        wcs = WCS(copy[0].header)
        assert not wcs.has_celestial and copy[0].header["WCSNAME"] == "image pixels, 0-based"
        # each pixel of the copy says which pixel of the upload it shows (the middle of its block)
        x, y = wcs.pixel_to_world_values(5, 7)
        assert (x, y) == pytest.approx((5 * block + (block - 1) / 2, 7 * block + (block - 1) / 2))


# Run in a child process, so that its peak memory is the product's alone: the peak above the peak after making the
# same product of two small images first (imports, first-use allocations, and matplotlib's memory for a picture of
# its largest size). The peak is the kernel's VmHWM of the process: ru_maxrss would start at the parent's size
# (Linux carries it over at exec).
MEASURE = """
import json, re, sys, uuid
from pathlib import Path
from appliance.fitsimage import inspect_fits, prepare_image
from appliance.models import StoredFile
from appliance.quicklook import quicklook_png

def make(product, path, cache):
    summary = inspect_fits(path).to_dict()
    if product == "finder input":
        prepare_image(path, summary["hdu"], cache / f"{path.name}.input.fits")
    else:
        quicklook_png(StoredFile(uuid=uuid.uuid4().hex, filename_orig=path.name, summary=summary), path, cache)

def peak():
    return int(re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

product, image, cache, *small = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), *map(Path, sys.argv[4:])
cache.mkdir()
for path in small:
    make(product, path, cache)
baseline = peak()
make(product, image, cache)
print(json.dumps({"baseline": baseline, "peak": peak()}))
"""


def peak_memory(product: str, image: Path, tmp_path: Path) -> tuple[int, int]:
    """The baseline and peak resident memory, in bytes, of a process making ``product`` of ``image``."""
    small = [
        write_image(tmp_path / "wide.fits", shape=(12, 8200)),  # averaged for the viewer
        write_image(tmp_path / "square.fits", shape=(800, 800)),  # the largest picture drawn
    ]
    cache = tmp_path / "cache"
    child = subprocess.run(
        [sys.executable, "-c", MEASURE, product, str(image), str(cache), *map(str, small)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(child.stdout.splitlines()[-1])
    assert not [p.name for p in cache.rglob(".*")], "temp files left behind"
    return figures["baseline"], figures["peak"]


def report(product: str, image: Path, data_bytes: int, baseline: int, peak: int) -> None:
    print(f"\n{product} of {image.name} ({data_bytes / 1e6:.0f} MB of data): peak {peak / 1e6:.0f} MB, "
          f"{(peak - baseline) / 1e6:.0f} MB above the {baseline / 1e6:.0f} MB baseline")  # fmt: skip


@pytest.fixture(scope="module")
def large_images(tmp_path_factory) -> dict[str, Path]:
    """8000² float32 (256 MB of data), plain and gzipped: zeros with a patch of noise, a bright spot and a blank
    corner (mostly zeros, so that gzip is quick)."""
    data = np.zeros((8000, 8000), dtype=np.float32)
    data[3000:3500, 3000:3500] = np.random.default_rng(3).normal(0.0, 1e-4, (500, 500))
    data[4000:4010, 6000:6010] = 5e-3
    data[:200, :200] = np.nan
    folder = tmp_path_factory.mktemp("large")
    header = fits.Header({"BUNIT": "JY/BEAM", "BMAJ": 6.5 / 3600, "BMIN": 5.0 / 3600, "BPA": 0.0})
    fits.PrimaryHDU(data, header=header).writeto(folder / "large.fits")
    with (folder / "large.fits").open("rb") as plain, gzip.open(folder / "large.fits.gz", "wb", 1) as packed:
        shutil.copyfileobj(plain, packed, 4 << 20)
    header.update(NCP_FAR_FROM_ITS_REFERENCE, CDELT1=-1.5 / 3600, CDELT2=1.5 / 3600)  # resampled for the viewer
    fits.PrimaryHDU(data, header=header).writeto(folder / "ncp.fits")
    return {"plain": folder / "large.fits", "gzip": folder / "large.fits.gz", "ncp": folder / "ncp.fits"}


@pytest.mark.parametrize("product", ["quicklook", "finder input"])
@pytest.mark.parametrize("packing", ["plain", "gzip", "ncp"])
def test_products_of_a_large_image_take_bounded_memory(large_images, tmp_path, product, packing):
    data_bytes = 8000 * 8000 * 4
    baseline, peak = peak_memory(product, large_images[packing], tmp_path)
    report(product, large_images[packing], data_bytes, baseline, peak)
    assert peak - baseline < data_bytes / 4


def write_bomb(path: Path, side: int = 22360) -> Path:
    """A gzipped float32 image of zeros, side² of them (2 GB for 22360) in about 2 MB, made of gzip members of
    64 MiB of zeros each (a gzip file may hold several; they decompress one after the other)."""
    header = fits.PrimaryHDU(np.zeros((1, 1), dtype=np.float32)).header
    header.update(NAXIS1=side, NAXIS2=side)
    padded = -(-side * side * 4 // 2880) * 2880
    member = 64 << 20
    zeros = gzip.compress(bytes(member), 9)
    with path.open("wb") as out:
        out.write(gzip.compress(header.tostring().encode()))
        for _ in range(padded // member):
            out.write(zeros)
        out.write(gzip.compress(bytes(padded % member), 9))
    return path


@pytest.mark.e2e
def test_a_decompression_bomb_is_refused_beyond_the_limit_and_shown_in_bounded_memory_within_it(tmp_path):
    bomb = write_bomb(tmp_path / "zeros.fits.gz")
    data_bytes = 22360 * 22360 * 4
    refused = make_settings(tmp_path / "refused", decompressed_max_bytes=2**30)
    with api_client(refused) as client:
        reply = client.put(f"{API}/upload/zeros.fits.gz", content=bomb.read_bytes())
        assert reply.status_code == 413 and reply.json()["error"] == "too_large"
        assert "decompressed_max_bytes" in reply.json()["status"]
    assert not any(p.is_file() for p in refused.data_dir.rglob("*"))
    assert not any((refused.tmp_dir / "uploads").iterdir())
    accepted = make_settings(tmp_path / "accepted", decompressed_max_bytes=3 * 2**30)
    with api_client(accepted) as client:
        file_uuid = upload_file(client, bomb)
        stored = client.appliance.files.path(client.appliance.files.get("anonymous", file_uuid))
    baseline, peak = peak_memory("quicklook", stored, tmp_path)
    report(f"quicklook ({bomb.stat().st_size / 1e6:.1f} MB gzip)", bomb, data_bytes, baseline, peak)
    assert peak - baseline < data_bytes / 16


NCP_FAR_FROM_ITS_REFERENCE = {"CTYPE1": "RA---NCP", "CTYPE2": "DEC--NCP", "CRVAL1": 255.45, "CRVAL2": -38.6,
                              "CRPIX1": 3428.0, "CRPIX2": 3847.0}  # fmt: skip  # as the ATCA fields, at Dec -40


def drawn_positions(data: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float = 4.0) -> np.ndarray:
    """The centroid (0-based pixels) of the bright pixels of ``data`` around each (x, y): where each source is."""
    found = []
    for cx, cy in zip(x, y, strict=True):
        y0, x0 = max(0, int(cy - radius)), max(0, int(cx - radius))
        part = np.nan_to_num(data[y0 : int(cy + radius) + 2, x0 : int(cx + radius) + 2])
        weight = np.clip(part - 0.3 * part.max(), 0, None)
        rows, cols = np.indices(part.shape)
        found.append(((weight * cols).sum() / weight.sum() + x0, (weight * rows).sum() / weight.sum() + y0))
    return np.array(found)


@pytest.mark.parametrize(
    ("header", "resampled"),
    [
        (NCP_FAR_FROM_ITS_REFERENCE, True),
        ({"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "PV2_1": 0.01, "PV2_2": -0.02}, True),
        ({"CTYPE1": "RA---AZP", "CTYPE2": "DEC--AZP", "PV2_1": 2.0, "CRVAL2": -70.0}, True),
        ({"CTYPE1": "RA---CAR", "CTYPE2": "DEC--CAR", "CRVAL2": 0.0}, True),
        ({"CTYPE1": "RA---ZEA", "CTYPE2": "DEC--ZEA"}, True),
        ({"CTYPE1": "RA---ARC", "CTYPE2": "DEC--ARC", "CROTA2": 30.0}, True),
        ({"CTYPE1": "GLON-TAN", "CTYPE2": "GLAT-TAN"}, True),
        ({"RADESYS": "FK4", "EQUINOX": 1950.0}, True),
        ({}, False),  # plain SIN
        ({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CROTA2": 20.0}, False),
    ],
    ids=["ncp", "sin_pv", "azp", "car", "zea", "arc_rotated", "galactic", "fk4", "sin", "tan_rotated"],
)
def test_viewer_copy_is_on_a_grid_the_viewer_draws_as_written(appliance, tmp_path, header, resampled):
    """Aladin Lite ignores PV terms and misdraws NCP, AZP and others: those images are resampled onto an ICRS TAN
    grid, and every source is where the catalog puts it on that grid; TAN and SIN without PV keep their pixels."""
    path = tmp_path / "field.fits"
    truth = make_grid_sky(path, 400, 100, header=header)
    record = appliance.files.add("anonymous", path)
    view = view_fits(record, appliance.files.path(record), appliance.settings.cache_dir)
    with fits.open(view) as copy:
        data, shown = copy[0].data, copy[0].header
    if not resampled:
        np.testing.assert_array_equal(data, fits.getdata(path))
        assert "PV2_1" not in shown and shown["CTYPE1"] == fits.getheader(path)["CTYPE1"]
        return
    assert (shown["CTYPE1"], shown["CTYPE2"], shown["RADESYS"]) == ("RA---TAN", "DEC--TAN", "ICRS")
    assert not [key for key in shown if key.startswith(("PV", "PC", "CD1_", "CD2_"))]
    wcs = celestial_wcs(shown)
    sky = celestial_wcs(fits.getheader(path)).pixel_to_world(truth["x"], truth["y"])
    x, y = wcs.world_to_pixel(sky)
    found = drawn_positions(data, x, y)
    assert np.hypot(found[:, 0] - x, found[:, 1] - y).max() < 0.05  # pixels of 1.5"
    assert 0.9 * 400**2 < np.isfinite(data).sum() < 1.3 * 400**2  # the whole image, and little around it


@pytest.mark.parametrize("header", [{}, NCP_FAR_FROM_ITS_REFERENCE], ids=["sin", "ncp"])
def test_block_averaged_viewer_copy_puts_sources_at_their_catalog_positions(appliance, tmp_path, header):
    path = tmp_path / "large.fits"
    truth = make_grid_sky(path, 4200, 600, header=header)  # averaged over 2x2 blocks for the viewer
    record = appliance.files.add("anonymous", path)
    view = view_fits(record, appliance.files.path(record), appliance.settings.cache_dir)
    with fits.open(view) as copy:
        data, wcs = copy[0].data, celestial_wcs(copy[0].header)
    assert max(data.shape) <= 2200 and "averaged over 2x2 blocks for display" in str(copy[0].header["HISTORY"])
    x, y = wcs.world_to_pixel(celestial_wcs(fits.getheader(path)).pixel_to_world(truth["x"], truth["y"]))
    found = drawn_positions(data, x, y, radius=3.0)
    assert np.hypot(found[:, 0] - x, found[:, 1] - y).max() < 0.05  # pixels of 3"


def test_wide_viewer_copy_is_given_as_tiles_the_viewer_draws_within_a_tenth_of_a_pixel(client, tmp_path):
    """Aladin Lite draws an image as two triangles between its corners: a 3.4° image, zoomed in 1.5° off its centre,
    is drawn 2.9" (half a 6" pixel) off. The viewer is given it as tiles, exact cut-outs of the copy each with its WCS,
    each of which it draws within a tenth of a pixel; a 1000² image of 1.5" pixels stays whole."""
    from appliance.quicklook import mesh_error_arcsec

    small = upload_file(client, write_image(tmp_path / "small.fits", shape=(1000, 1000)))
    assert client.get(f"/files/{small}/view-statistics").json()["tiles"] == 1
    path = tmp_path / "wide.fits"
    make_grid_sky(path, 2048, 256, pixel_arcsec=6.0, beam_arcsec=45.0)
    file_uuid = upload_file(client, path)
    tiles = client.get(f"/files/{file_uuid}/view-statistics").json()["tiles"]
    with fits.open(io.BytesIO(client.get(f"/files/{file_uuid}/view.fits").content)) as copy:
        data, wcs = copy[0].data, celestial_wcs(copy[0].header)
    assert mesh_error_arcsec(wcs, data.shape, 1) > 6.0 / 2
    assert 1 < tiles <= 8 and mesh_error_arcsec(wcs, data.shape, tiles) <= 0.1 * 6.0
    covered = np.zeros(data.shape, dtype=int)
    for k in range(tiles * tiles):
        reply = client.get(f"/files/{file_uuid}/view.fits", params={"tile": k})
        assert reply.status_code == 200
        with fits.open(io.BytesIO(reply.content)) as tile:
            part, part_wcs = tile[0].data, celestial_wcs(tile[0].header)
        # where the tile's first pixel is in the copy, by its WCS: the same pixels there
        x0, y0 = (round(float(v)) for v in wcs.world_to_pixel(part_wcs.pixel_to_world(0, 0)))
        np.testing.assert_array_equal(part, data[y0 : y0 + part.shape[0], x0 : x0 + part.shape[1]])
        far = part_wcs.pixel_to_world(part.shape[1] - 1, part.shape[0] - 1)
        assert far.separation(wcs.pixel_to_world(x0 + part.shape[1] - 1, y0 + part.shape[0] - 1)).arcsec < 1e-4
        covered[y0 : y0 + part.shape[0], x0 : x0 + part.shape[1]] += 1
    assert (covered == 1).all()  # every pixel in one tile
    assert client.get(f"/files/{file_uuid}/view.fits", params={"tile": tiles * tiles}).status_code == 404


def test_overlay_picture_of_a_large_image_shows_block_means_at_their_catalog_positions(tmp_path):
    """A picture of a 2000² image shows 3x3 block means, each at its block's centre; every n-th pixel drawn there
    would put each source (n - 1) / 2 pixels off its ellipse."""
    from appliance.catalogs import overlay_figure

    path = tmp_path / "large.fits"
    truth = make_grid_sky(path, 2000, 250)
    components = normalized_table("components", "sep", {"ra": truth["ra"], "dec": truth["dec"], "major": [6.5] * 64,
                                                        "minor": [6.5] * 64, "pa": [0.0] * 64})  # fmt: skip
    figure = overlay_figure(path, components, "large")
    axes = figure.axes[0]
    shown, wcs = np.asarray(axes.images[0].get_array()), axes.wcs
    assert shown.shape == (666, 666)
    np.testing.assert_allclose(shown[100:110, 200:210], block_reduce(fits.getdata(path), 3)[100:110, 200:210] / 9,
                               rtol=1e-5)  # fmt: skip
    x, y = wcs.world_to_pixel(celestial_wcs(fits.getheader(path)).pixel_to_world(truth["x"], truth["y"]))
    found = drawn_positions(shown, x, y, radius=3.0)
    assert np.hypot(found[:, 0] - x, found[:, 1] - y).max() < 0.05
    ellipses = axes.collections[0].get_offsets()
    np.testing.assert_allclose(ellipses, np.column_stack([x, y]), atol=1e-6)


@pytest.mark.parametrize(("rotation", "along_x"), [(0.0, "RA"), (90.0, "Dec"), (-70.0, "Dec"), (20.0, "RA")])
def test_each_axis_of_a_picture_is_labelled_with_the_coordinate_it_carries(tmp_path, rotation, along_x):
    """An AZP image turned on the sky: the axis along which Dec changes is labelled Dec and ticked in Dec."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from appliance.catalogs import overlay_figure

    header = {"CTYPE1": "RA---AZP", "CTYPE2": "DEC--AZP", "PV2_1": 2.0, "CRVAL2": -70.0, "CROTA2": rotation}
    path = write_image(tmp_path / "azp.fits", shape=(200, 200), header=header)
    wcs = celestial_wcs(fits.getheader(path))
    centre, step = wcs.pixel_to_world(100, 100), wcs.pixel_to_world(110, 100)
    d_ra, d_dec = (abs(a.to_value("arcsec")) for a in centre.spherical_offsets_to(step))
    assert (d_dec > d_ra) == (along_x == "Dec")  # what the x axis really carries
    figure = overlay_figure(path, normalized_table("components", "", {}), "azp")
    FigureCanvasAgg(figure).draw()
    coords = figure.axes[0].coords
    ra, dec = coords[0], coords[1]
    on_x, on_y = (ra, dec) if along_x == "RA" else (dec, ra)
    assert on_x.get_axislabel() == along_x and on_y.get_axislabel() == ("Dec" if along_x == "RA" else "RA")
    assert "b" in on_x.get_axislabel_position() and "b" in on_x.get_ticklabel_position()
    assert "l" in on_y.get_axislabel_position() and "l" in on_y.get_ticklabel_position()
    assert "b" not in on_y.get_ticklabel_position() and "l" not in on_x.get_ticklabel_position()
