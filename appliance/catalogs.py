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
    (
        "appliance_flags",
        None,
        "meta.code.qual",
        "the appliance's own checks, as bits: 1 centre outside the image, 2 centre on a blank (NaN) pixel",
    ),
    ("app", None, "meta.code", "finder that produced the row"),
]
_INT_FLUX = [
    ("int_flux", u.Jy, "phot.flux.density", "integrated flux density"),
    ("int_flux_err", u.Jy, "stat.error;phot.flux.density", "uncertainty of int_flux"),
]

_IAU_NAME = ("iau_name", None, "meta.id", "IAU-style name from the position: <FINDER> Jhhmmss.s+ddmmss (truncated)")

COMPONENT_COLUMNS: list[tuple[str, Any, str, str]] = [
    ("component_id", None, "meta.id;meta.main", "component number in this catalog, from 1"),
    ("island_id", None, "meta.id.parent", "island the component belongs to"),
    ("name", None, "meta.id", "the finder's own name of the component"),
    _IAU_NAME,
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
    ("major_deconv", u.arcsec, "phys.angSize.smajAxis;src", "FWHM of the major axis with the beam taken out"),
    ("minor_deconv", u.arcsec, "phys.angSize.sminAxis;src", "FWHM of the minor axis with the beam taken out"),
    ("pa_deconv", u.deg, "pos.posAng;src", "position angle of the deconvolved major axis, east of north"),
    ("snr", None, "stat.snr", "peak_flux / local_rms"),
    *_NOISE_AND_ORIGIN,
]

ISLAND_COLUMNS: list[tuple[str, Any, str, str]] = [
    ("island_id", None, "meta.id;meta.main", "island number in this catalog"),
    ("name", None, "meta.id", "the finder's own name of the island"),
    _IAU_NAME,
    *_POSITION,
    *_PIXEL,
    ("n_components", None, "meta.number", "number of fitted components"),
    ("npix", u.pix, "phys.area", "pixels in the island"),
    ("peak_flux", JY_BEAM, "phot.flux.density;stat.max", "brightest pixel or component"),
    *_INT_FLUX,
    *_NOISE_AND_ORIGIN,
]

# sources found inside an island (caesar's nested search): island columns, and where they sit
NESTED_COLUMNS: list[tuple[str, Any, str, str]] = [
    *ISLAND_COLUMNS[:2],
    ("nest_level", None, "meta.code", "nesting depth: 1 inside an island, 2 inside a nested source, ..."),
    ("parent_id", None, "meta.id.parent", "island_id of the island it lies in"),
    *ISLAND_COLUMNS[2:],
]

_INTEGER_COLUMNS = {"component_id", "island_id", "n_components", "flags", "appliance_flags", "nest_level", "parent_id"}
KINDS = ("islands", "components", "nested")
TABLE_FORMATS = {"votable": "vot", "fits": "fits", "csv": "csv", "json": "json", "ascii": "dat"}
REGION_FORMATS = {"ds9": "reg", "crtf": "crtf"}


@dataclass
class Catalog:
    """Islands, the components fitted in them, and sources nested in islands (only caesar finds those): each island
    is counted once, a nested source is part of its island's pixels and flux."""

    islands: Table
    components: Table
    nested: Table | None = None

    def __post_init__(self) -> None:
        if self.nested is None:
            self.nested = normalized_table("nested", self.islands.meta["name"].removesuffix("_islands"), {})

    def table(self, kind: str) -> Table:
        return {"islands": self.islands, "components": self.components, "nested": self.nested}[kind]


# Bits of appliance_flags: checks the appliance makes of every row, whatever the finder (their own are in flags).
OUTSIDE_IMAGE = 1
ON_BLANK = 2
APPLIANCE_FLAG_BITS = {OUTSIDE_IMAGE: "centre outside the image", ON_BLANK: "centre on a blank (NaN) pixel"}


def footprint_flags(table: Table, data: np.ndarray) -> np.ndarray:
    """OUTSIDE_IMAGE and ON_BLANK of each row, from its 0-based pixel centre; only those pixels of data are read."""
    rows, cols = data.shape
    x, y = np.rint(np.asarray(table["x"], dtype=float)), np.rint(np.asarray(table["y"], dtype=float))
    outside = ~(np.isfinite(x) & np.isfinite(y)) | (x < 0) | (y < 0) | (x >= cols) | (y >= rows)
    flags = np.where(outside, OUTSIDE_IMAGE, 0)
    inside = np.flatnonzero(~outside)
    blank = ~np.isfinite(data[y[inside].astype(int), x[inside].astype(int)])
    flags[inside[blank]] |= ON_BLANK
    return flags


_ROW_NAMES = {"islands": ("island", "islands"), "components": ("component", "components"),
              "nested": ("nested source", "nested sources")}  # fmt: skip


def check_footprint(catalog: Catalog, data: np.ndarray, drop: bool) -> tuple[Catalog, str | None]:
    """Flag the rows centred off the data (outside the image or on blank pixels), which finders can report with a
    clean flag; with ``drop`` leave them out. Also says what was found, for the job's log."""
    tables, found = {}, []
    for kind in KINDS:
        table = catalog.table(kind)
        flags = footprint_flags(table, data) if len(table) else np.zeros(0, dtype=np.int64)
        table["appliance_flags"] = flags | np.asarray(table["appliance_flags"])
        for bit, where in ((OUTSIDE_IMAGE, "outside the image"), (ON_BLANK, "on blank pixels")):
            if count := int(np.count_nonzero(flags & bit)):
                found.append(f"{count} {_ROW_NAMES[kind][count > 1]} centred {where}")
        tables[kind] = table[flags == 0] if drop else table
    if not found:
        return catalog, None
    done = "left out (drop_outside)" if drop else "kept, with appliance_flags set (drop_outside is off)"
    return Catalog(**tables), f"footprint: {', '.join(found)}: {done}"


def normalized_table(kind: str, app: str, values: dict[str, Any], wcs: WCS | None = None) -> Table:
    """A table of ``kind`` with every schema column, in order, with units and UCDs. Columns missing from ``values``
    are NaN (or 0 for flags); x and y are computed from ra/dec with ``wcs`` when not given."""
    spec = {"islands": ISLAND_COLUMNS, "components": COMPONENT_COLUMNS, "nested": NESTED_COLUMNS}[kind]
    length = len(next(iter(values.values()))) if values else 0
    values = dict(values)
    if wcs is not None and length and "x" not in values:
        x, y = wcs.celestial.all_world2pix(np.asarray(values["ra"]), np.asarray(values["dec"]), 0)
        values["x"], values["y"] = x, y
    if length and "snr" not in values and "peak_flux" in values and "local_rms" in values:
        with np.errstate(divide="ignore", invalid="ignore"):
            values["snr"] = np.asarray(values["peak_flux"], dtype=float) / np.asarray(values["local_rms"], dtype=float)
    table = Table(meta={"name": f"{app}_{kind}"})
    for name, unit, ucd, description in spec:
        if name == "app":
            data: Any = np.full(length, app, dtype=f"U{max(len(app), 1)}")
        elif name == "iau_name":
            data = np.asarray(iau_names(app, values["ra"], values["dec"]) if length else [], dtype=str)
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


def iau_names(app: str, ra, dec) -> list[str]:
    """``<APP> Jhhmmss.s+ddmmss``: RA to a tenth of a second of time and Dec to an arcsecond, both truncated, as the
    IAU asks; empty where the position is unknown."""
    names = []
    for alpha, delta in zip(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float), strict=True):
        if not (math.isfinite(alpha) and math.isfinite(delta)):
            names.append("")
            continue
        tenths = int(math.floor((alpha % 360.0) / 15.0 * 36000.0 + 1e-6))
        seconds = int(math.floor(abs(delta) * 3600.0 + 1e-6))
        sign = "-" if delta < 0 else "+"
        names.append(
            f"{app.upper()} J{tenths // 36000:02d}{tenths // 600 % 60:02d}{tenths % 600 // 10:02d}.{tenths % 10}"
            f"{sign}{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
        )
    return names


def deconvolved(major, minor, pa, beam: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Gaussians (FWHM arcsec, PA deg east of north) with the beam (bmaj, bmin arcsec, bpa deg) taken out, as
    major, minor and PA: Sigma_source - Sigma_beam in the (east, north) plane. An axis the beam alone explains is 0."""

    def covariance(major, minor, pa):
        major, minor, pa = (np.asarray(v, dtype=float) for v in (major, minor, pa))
        along = np.stack([np.sin(np.deg2rad(pa)), np.cos(np.deg2rad(pa))], -1)  # (east, north) of the major axis
        across = np.stack([along[..., 1], -along[..., 0]], -1)
        return (major**2)[..., None, None] * (along[..., :, None] * along[..., None, :]) + (minor**2)[
            ..., None, None
        ] * (across[..., :, None] * across[..., None, :])

    rest = covariance(major, minor, pa) - covariance(*beam)
    finite = np.isfinite(rest).all(axis=(-1, -2))
    values, vectors = np.linalg.eigh(np.where(finite[..., None, None], rest, 0.0))
    major_d, minor_d = np.sqrt(np.clip(values[..., 1], 0, None)), np.sqrt(np.clip(values[..., 0], 0, None))
    pa_d = np.rad2deg(np.arctan2(vectors[..., 0, 1], vectors[..., 1, 1])) % 180.0
    return tuple(np.where(finite, v, np.nan) for v in (major_d, minor_d, pa_d))


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


def _sky_per_pixel(x: np.ndarray, y: np.ndarray, wcs: WCS) -> np.ndarray:
    """At each pixel position, the 2x2 map from a pixel offset (dx, dy) to the offset (east, north) in arcsec on
    the sky, by central differences on the sphere: right for any projection, orientation or parity, also where the
    projection does not keep angles (NCP, AZP), which a rotation by the direction of north alone gets wrong."""
    x, y = np.atleast_1d(np.asarray(x, dtype=float)), np.atleast_1d(np.asarray(y, dtype=float))
    centre = wcs.pixel_to_world(x, y)
    columns = []
    for dx, dy in ((_STEP, 0.0), (0.0, _STEP)):
        ends = []
        for sign in (1, -1):
            moved = wcs.pixel_to_world(x + sign * dx, y + sign * dy)
            angle, distance = centre.position_angle(moved).rad, centre.separation(moved).arcsec
            ends.append((distance * np.sin(angle), distance * np.cos(angle)))
        columns.append([(plus - minus) / (2 * _STEP) for plus, minus in zip(*ends, strict=True)])
    (east_x, north_x), (east_y, north_y) = columns
    return np.stack([np.stack([east_x, east_y], -1), np.stack([north_x, north_y], -1)], -2)


_STEP = 0.25  # pixels


def _mapped_ellipses(matrix: np.ndarray, major, minor, angle) -> tuple[np.ndarray, ...]:
    """Full axes and major-axis angle (radians, from the first axis towards the second) of ellipses mapped by the
    2x2 matrices: an ellipse maps to an ellipse whose axes are not the images of its axes unless angles are kept."""
    major, minor, angle = (np.asarray(v, dtype=float) for v in (major, minor, angle))
    rotation = np.stack(
        [np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2
    )
    shape = rotation * np.stack([major, minor], -1)[..., None, :]  # axes as columns
    axes = matrix @ shape
    values, vectors = np.linalg.eigh(axes @ np.swapaxes(axes, -1, -2))
    along = vectors[..., :, 1]
    return np.sqrt(values[..., 1]), np.sqrt(np.clip(values[..., 0], 0, None)), np.arctan2(along[..., 1], along[..., 0])


def sky_ellipses(x, y, major_px, minor_px, angle_deg, wcs: WCS) -> tuple[np.ndarray, ...]:
    """Pixel ellipses (full axes in pixels, major axis at ``angle_deg`` from +x towards +y) on the sky: full major
    and minor axes in arcsec and the position angle east of north in [0, 180)."""
    major, minor, angle = _mapped_ellipses(_sky_per_pixel(x, y, wcs), major_px, minor_px, np.deg2rad(angle_deg))
    return major, minor, np.rad2deg(np.arctan2(np.cos(angle), np.sin(angle))) % 180.0  # (east, north) -> from north


def pixel_ellipses(table: Table, wcs: WCS) -> tuple[np.ndarray, ...]:
    """x, y, full width, full height (pixels) and angle from +x (deg, anticlockwise) of each component's FWHM
    ellipse in the image: the inverse of sky_ellipses."""
    x, y = wcs.world_to_pixel(_centres(table))
    pa = np.deg2rad(np.nan_to_num(np.asarray(table["pa"], dtype=float)))
    major = np.nan_to_num(np.asarray(table["major"], dtype=float))
    minor = np.where(np.isfinite(table["minor"]), table["minor"], major)
    to_pixels = np.linalg.inv(_sky_per_pixel(x, y, wcs))
    width, height, angle = _mapped_ellipses(to_pixels, major, minor, np.pi / 2 - pa)  # from east towards north
    return x, y, width, height, np.rad2deg(angle)


MAX_PLOT_PIXELS = 800  # about the picture's own size: more pixels would only be resampled away


def overlay_plot(image: Path, components: Table, out: Path, title: str) -> None:
    """overlay_figure as a PNG."""
    overlay_figure(image, components, title).savefig(out, pil_kwargs={"compress_level": 3})


def overlay_figure(image: Path, components: Table, title: str) -> Any:
    """The image on its sky grid, or its pixel grid when it has no celestial WCS (asinh stretch over the zscale range),
    with every component's FWHM ellipse, each axis labelled and ticked with the coordinate that runs along it.
    Images larger than MAX_PLOT_PIXELS on a side are shown as the means of n×n blocks, on the WCS of the blocks."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from astropy.io import fits
    from astropy.nddata import block_reduce
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval
    from matplotlib.figure import Figure

    from appliance.fitsimage import image_wcs, plane_bands

    with fits.open(image, memmap=False) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of a block of blanks is a blank
        wcs = image_wcs(hdul[0].header)
        step = max(1, math.ceil(max(hdul[0].shape) / MAX_PLOT_PIXELS))
        shown = np.concatenate([block_reduce(band, step, func=np.nanmean) if step > 1 else band
                                for band in plane_bands(hdul[0], step)])  # fmt: skip
    wcs = wcs[::step, ::step] if step > 1 else wcs  # pixel n: the centre of block n, where its mean belongs
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
    if wcs.has_celestial:
        names = ("RA", "Dec") if wcs.wcs.lngtyp == "RA" else (wcs.wcs.lngtyp, wcs.wcs.lattyp)
        along_x = coordinate_along_x(wcs, shown.shape)
        for index, side in ((along_x, "b"), (1 - along_x, "l")):
            coordinate = axes.coords[index]
            coordinate.set_ticklabel_position(side)
            coordinate.set_axislabel_position(side)
            coordinate.set_axislabel(names[index == wcs.wcs.lat])
    else:
        axes.set_xlabel("x (pixel, 0-based)")
        axes.set_ylabel("y (pixel, 0-based)")
    axes.set_title(f"{title}: {len(components)} components" if len(components) else title)
    figure.subplots_adjust(left=0.14, right=0.97, bottom=0.08, top=0.95)  # fixed margins: "tight" draws twice
    return figure


def coordinate_along_x(wcs: WCS, shape: tuple[int, ...]) -> int:
    """The world axis (0 or 1) that changes most along the image's x axis at its centre, the other running along y:
    on a rotated or strongly distorted image x may carry Dec rather than RA."""
    rows, cols = shape[-2:]
    x, y, step = (cols - 1) / 2, (rows - 1) / 2, max(1.0, min(rows, cols) / 20)
    centre = wcs.pixel_to_world(x, y)
    lon_x, lat_x = (abs(a.to_value(u.arcsec)) for a in centre.spherical_offsets_to(wcs.pixel_to_world(x + step, y)))
    lon_y, lat_y = (abs(a.to_value(u.arcsec)) for a in centre.spherical_offsets_to(wcs.pixel_to_world(x, y + step)))
    return wcs.wcs.lng if lon_x * lat_y >= lat_x * lon_y else wcs.wcs.lat


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
