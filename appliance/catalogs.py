"""The normalized catalog every app produces, and its products: VOTable, FITS, CSV, JSON and ASCII tables, DS9 and
CASA region files, and an overlay picture.

Two astropy Tables with units and UCDs: islands (connected regions above the flood threshold) and components (the
Gaussians fitted in them). Positions are ICRS degrees; pixel positions are 0-based (FITS pixel minus 1); sizes are
FWHM in arcsec; position angles are degrees east of north. Values a finder does not provide are NaN.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Column, Table
from astropy.wcs import WCS

JY_BEAM = u.Jy / u.beam

# name, unit, UCD, description; columns both kinds share are defined once
_POSITION = [
    ("ra", u.deg, "pos.eq.ra;meta.main", "right ascension (ICRS)"),
    ("dec", u.deg, "pos.eq.dec;meta.main", "declination (ICRS)"),
]
_PIXEL = [
    ("x", u.pix, "pos.cartesian.x;instr.det", "pixel column, 0-based"),
    ("y", u.pix, "pos.cartesian.y;instr.det", "pixel row, 0-based"),
]
_NOISE_AND_ORIGIN = [
    ("local_rms", JY_BEAM, "stat.stdev;phot.flux.density", "local noise"),
    ("background", JY_BEAM, "instr.background", "local background level"),
    (
        "flags",
        None,
        "meta.code.qual",
        "the finder's own quality flag (aegean: 0 is clean; caesar: fit quality, 3 best)",
    ),
    ("app", None, "meta.code", "finder that produced the row"),
]
_INT_FLUX = [
    ("int_flux", u.Jy, "phot.flux.density", "integrated flux density"),
    ("int_flux_err", u.Jy, "stat.error;phot.flux.density", "uncertainty of int_flux"),
]

COMPONENT_COLUMNS: list[tuple[str, Any, str, str]] = [
    ("component_id", None, "meta.id;meta.main", "component number in this catalog, from 1"),
    ("island_id", None, "meta.id.parent", "island the component belongs to"),
    ("name", None, "meta.id", "the finder's own name of the component"),
    *_POSITION,
    ("ra_err", u.arcsec, "stat.error;pos.eq.ra", "uncertainty of ra"),
    ("dec_err", u.arcsec, "stat.error;pos.eq.dec", "uncertainty of dec"),
    *_PIXEL,
    ("peak_flux", JY_BEAM, "phot.flux.density;stat.max", "peak surface brightness"),
    ("peak_flux_err", JY_BEAM, "stat.error;phot.flux.density;stat.max", "uncertainty of peak_flux"),
    *_INT_FLUX,
    ("major", u.arcsec, "phys.angSize.smajAxis", "FWHM of the major axis"),
    ("major_err", u.arcsec, "stat.error;phys.angSize.smajAxis", "uncertainty of major"),
    ("minor", u.arcsec, "phys.angSize.sminAxis", "FWHM of the minor axis"),
    ("minor_err", u.arcsec, "stat.error;phys.angSize.sminAxis", "uncertainty of minor"),
    ("pa", u.deg, "pos.posAng", "position angle of the major axis, east of north"),
    ("pa_err", u.deg, "stat.error;pos.posAng", "uncertainty of pa"),
    *_NOISE_AND_ORIGIN,
]

ISLAND_COLUMNS: list[tuple[str, Any, str, str]] = [
    ("island_id", None, "meta.id;meta.main", "island number in this catalog"),
    ("name", None, "meta.id", "the finder's own name of the island"),
    *_POSITION,
    *_PIXEL,
    ("n_components", None, "meta.number", "number of fitted components"),
    ("npix", u.pix, "phys.area", "pixels in the island"),
    ("peak_flux", JY_BEAM, "phot.flux.density;stat.max", "brightest pixel or component"),
    *_INT_FLUX,
    *_NOISE_AND_ORIGIN,
]

_INTEGER_COLUMNS = {"component_id", "island_id", "n_components", "flags"}
KINDS = ("islands", "components")
TABLE_FORMATS = {"votable": "vot", "fits": "fits", "csv": "csv", "json": "json", "ascii": "dat"}
REGION_FORMATS = {"ds9": "reg", "crtf": "crtf"}


@dataclass
class Catalog:
    islands: Table
    components: Table

    def table(self, kind: str) -> Table:
        return self.islands if kind == "islands" else self.components


def normalized_table(kind: str, app: str, values: dict[str, Any], wcs: WCS | None = None) -> Table:
    """A table of ``kind`` with every schema column, in order, with units and UCDs. Columns missing from ``values``
    are NaN (or 0 for flags); x and y are computed from ra/dec with ``wcs`` when not given."""
    spec = ISLAND_COLUMNS if kind == "islands" else COMPONENT_COLUMNS
    length = len(next(iter(values.values()))) if values else 0
    values = dict(values)
    if wcs is not None and length and "x" not in values:
        x, y = wcs.celestial.all_world2pix(np.asarray(values["ra"]), np.asarray(values["dec"]), 0)
        values["x"], values["y"] = x, y
    table = Table(meta={"name": f"{app}_{kind}"})
    for name, unit, ucd, description in spec:
        if name == "app":
            data: Any = np.full(length, app, dtype=f"U{max(len(app), 1)}")
        elif name == "name":
            data = np.asarray([str(v) for v in values["name"]] if "name" in values else [""] * length, dtype=str)
        elif name in values:
            data = np.asarray(values[name], dtype=np.int64 if name in _INTEGER_COLUMNS else np.float64)
        elif name in _INTEGER_COLUMNS:
            data = np.zeros(length, dtype=np.int64)
        else:
            data = np.full(length, np.nan)
        table[name] = Column(data, unit=unit, description=description, meta={"ucd": ucd})
    return table


def write_table(table: Table, path: Path, fmt: str) -> None:
    """One of TABLE_FORMATS, written with astropy (JSON: column metadata and one object per row)."""
    if fmt == "votable":
        table.write(path, format="votable", overwrite=True)
    elif fmt == "fits":
        table.write(path, format="fits", overwrite=True)
    elif fmt == "csv":
        table.write(path, format="ascii.csv", overwrite=True)
    elif fmt == "ascii":
        table.write(path, format="ascii.commented_header", overwrite=True)
    elif fmt == "json":
        path.write_text(json.dumps(table_to_json(table), allow_nan=False))
    else:
        raise ValueError(f"unknown table format {fmt!r}")


def table_to_json(table: Table) -> dict[str, Any]:
    columns = [
        {
            "name": name,
            "unit": str(table[name].unit) if table[name].unit is not None else None,
            "ucd": table[name].meta.get("ucd"),
            "description": table[name].description,
        }
        for name in table.colnames
    ]
    rows = [{name: _json_value(row[name]) for name in table.colnames} for row in table]
    return {"name": table.meta.get("name", ""), "columns": columns, "sources": rows}


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return str(value)


def _centres(table: Table) -> SkyCoord:
    return SkyCoord(np.asarray(table["ra"]), np.asarray(table["dec"]), unit="deg", frame="icrs")


def component_regions(table: Table) -> Any:
    """FWHM ellipses in sky coordinates, labelled with the component id."""
    from regions import EllipseSkyRegion, Regions

    centres = _centres(table)
    major = np.nan_to_num(np.asarray(table["major"], dtype=float), nan=0.0)
    minor = np.where(np.isfinite(table["minor"]), table["minor"], major)
    pa = np.nan_to_num(np.asarray(table["pa"], dtype=float), nan=0.0)
    return Regions(
        [
            EllipseSkyRegion(
                center=centres[i],
                width=major[i] * u.arcsec,
                height=minor[i] * u.arcsec,
                angle=(pa[i] + 90.0) * u.deg,  # regions: from the RA axis, anticlockwise; pa: from north, via east
                meta={"text": str(table["component_id"][i])},
                visual={"color": "green"},
            )
            for i in range(len(table))
        ]
    )


def write_products(catalog: Catalog, outdir: Path, image: Path, title: str) -> list[Path]:
    """Every table format for both kinds, the components' FWHM ellipses as DS9 and CASA regions, and the overlay
    picture."""
    written = []
    for kind in KINDS:
        for fmt, ext in TABLE_FORMATS.items():
            path = outdir / f"catalog_{kind}.{ext}"
            write_table(catalog.table(kind), path, fmt)
            written.append(path)
    regions = component_regions(catalog.components)
    for fmt, ext in REGION_FORMATS.items():
        path = outdir / f"regions.{ext}"
        # CRTF in ICRS, as the catalog: regions converts every position to FK5 by default, one at a time
        regions.write(str(path), format=fmt, overwrite=True, **({"coordsys": "icrs"} if fmt == "crtf" else {}))
        written.append(path)
    plot = outdir / "overlay.png"
    overlay_plot(image, catalog.components, plot, title)
    written.append(plot)
    return written


def _local_frame(centres: SkyCoord, wcs: WCS) -> tuple[np.ndarray, ...]:
    """Pixel position, pixels per arcsec, the direction of north (radians from +x, anticlockwise) and +1/-1 for
    east lying anticlockwise/clockwise from north, at each position: right for any orientation or parity."""
    step = 1.0 * u.arcsec
    x, y = wcs.world_to_pixel(centres)
    nx, ny = wcs.world_to_pixel(centres.directional_offset_by(0 * u.deg, step))
    ex, ey = wcs.world_to_pixel(centres.directional_offset_by(90 * u.deg, step))
    north = np.arctan2(ny - y, nx - x)
    sense = np.sign(np.sin(np.arctan2(ey - y, ex - x) - north))
    return x, y, np.hypot(nx - x, ny - y), north, sense


def pixel_ellipses(table: Table, wcs: WCS) -> tuple[np.ndarray, ...]:
    """x, y, full width, full height (pixels) and angle from +x (deg, anticlockwise) of each component's FWHM
    ellipse in the image."""
    x, y, pixels_per_arcsec, north, sense = _local_frame(_centres(table), wcs)
    pa = np.deg2rad(np.nan_to_num(np.asarray(table["pa"], dtype=float)))
    major = np.nan_to_num(np.asarray(table["major"], dtype=float))
    minor = np.where(np.isfinite(table["minor"]), table["minor"], major)
    return x, y, major * pixels_per_arcsec, minor * pixels_per_arcsec, np.rad2deg(north + sense * pa)


def position_angles(ra: np.ndarray, dec: np.ndarray, pixel_angle_deg: np.ndarray, wcs: WCS) -> np.ndarray:
    """Position angles east of north, in [0, 180), of axes at ``pixel_angle_deg`` from +x (anticlockwise)."""
    _, _, _, north, sense = _local_frame(SkyCoord(ra, dec, unit="deg", frame="icrs"), wcs)
    return np.rad2deg(sense * (np.deg2rad(pixel_angle_deg) - north)) % 180.0


MAX_PLOT_PIXELS = 800  # about the picture's own size: more pixels would only be resampled away


def overlay_plot(image: Path, components: Table, out: Path, title: str) -> None:
    """The image on its sky grid, or its pixel grid when it has no celestial WCS (asinh stretch over the zscale range),
    with every component's FWHM ellipse.
    Images larger than MAX_PLOT_PIXELS on a side are shown decimated, with the WCS decimated to match."""
    import matplotlib

    matplotlib.use("Agg")
    from astropy.io import fits
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval
    from matplotlib.figure import Figure

    from appliance.fitsimage import image_wcs, plane_bands

    with fits.open(image, memmap=False) as hdul:
        wcs = image_wcs(hdul[0].header)
        step = max(1, math.ceil(max(hdul[0].shape) / MAX_PLOT_PIXELS))
        shown = np.concatenate([band[::step, ::step] for band in plane_bands(hdul[0], step)])
    wcs = wcs[::step, ::step] if step > 1 else wcs
    finite = shown[np.isfinite(shown)]
    norm = ImageNormalize(finite if finite.size else np.zeros(1), interval=ZScaleInterval(), stretch=AsinhStretch())
    figure = Figure(figsize=(7, 7), dpi=100)
    axes = figure.add_subplot(projection=wcs)
    axes.imshow(shown, origin="lower", cmap="gray_r", norm=norm, interpolation="nearest")
    if len(components):
        from matplotlib.collections import EllipseCollection

        x, y, width, height, angle = pixel_ellipses(components, wcs)
        axes.add_collection(
            EllipseCollection(
                width,
                height,
                angle,
                units="xy",
                offsets=np.column_stack([x, y]),
                offset_transform=axes.transData,
                facecolors="none",
                edgecolors="tab:red",
                linewidths=0.8,
            )
        )
    axes.set_xlabel("RA" if wcs.has_celestial else "x (pixel, 0-based)")
    axes.set_ylabel("Dec" if wcs.has_celestial else "y (pixel, 0-based)")
    axes.set_title(f"{title}: {len(components)} components" if len(components) else title)
    figure.subplots_adjust(left=0.14, right=0.97, bottom=0.08, top=0.95)
    figure.savefig(out, pil_kwargs={"compress_level": 3})  # fixed margins: bbox_inches="tight" draws twice


def sorted_page(table: Table, sort: str, descending: bool, offset: int, limit: int) -> Table:
    """Rows ``offset`` to ``offset + limit`` after sorting by ``sort`` (NaN last either way)."""
    if sort not in table.colnames:
        raise ValueError(f"no column {sort!r}")
    values = np.asarray(table[sort])
    if values.dtype.kind in "fc":
        key = np.where(np.isnan(values), np.inf if not descending else -np.inf, values)
    else:
        key = values
    order = np.argsort(key, kind="stable")
    if descending:
        order = order[::-1]
    return table[order[offset : offset + limit]]


def flux_plots(table: Table, histogram: Path, counts: Path, title: str) -> None:
    """The distribution of integrated fluxes (log bins) and the cumulative source counts N(>S)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    flux = np.asarray(table["int_flux"], dtype=float)
    flux = flux[np.isfinite(flux) & (flux > 0)] * 1e3  # mJy
    for path, kind in ((histogram, "histogram"), (counts, "counts")):
        figure = Figure(figsize=(5, 3.6), dpi=100)
        axes = figure.add_subplot()
        if flux.size:
            if kind == "histogram":
                bins = np.logspace(np.log10(flux.min()), np.log10(flux.max()) + 1e-9, min(30, max(5, flux.size // 5)))
                axes.hist(flux, bins=bins, color="tab:blue")
                axes.set_xscale("log")
                axes.set_ylabel("components")
            else:
                ordered = np.sort(flux)[::-1]
                axes.loglog(ordered, np.arange(1, ordered.size + 1), drawstyle="steps-post", color="tab:blue")
                axes.set_ylabel("N(>S)")
        else:
            axes.text(0.5, 0.5, "no components", ha="center", va="center", transform=axes.transAxes)
        axes.set_xlabel("integrated flux (mJy)")
        axes.set_title(f"{title}: {'flux distribution' if kind == 'histogram' else 'source counts'}")
        figure.tight_layout()
        figure.savefig(path)
