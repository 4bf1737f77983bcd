"""Catalogs made elsewhere (a published survey, another program) read for a comparison: VOTable, CSV, ECSV or a FITS
table, with the position and flux columns found by their UCDs or their usual names, in the normalized units (ICRS
degrees, Jy).

A catalog without recognisable positions is refused with the columns it has, so the user can rename one."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle
from astropy.table import Table

from appliance.errors import InvalidContent, UnsupportedType

FORMATS = {
    ".vot": ("votable", "VOTable"),
    ".votable": ("votable", "VOTable"),
    ".xml": ("votable", "VOTable"),
    ".csv": ("ascii.csv", "CSV"),
    ".ecsv": ("ascii.ecsv", "ECSV"),
    ".fits": ("fits", "FITS table"),
    ".fit": ("fits", "FITS table"),
    ".fts": ("fits", "FITS table"),
}
MAX_BYTES = 64 << 20

# names as _plain makes them
RA_NAMES = ("ra", "raj2000", "raicrs", "ra2000", "alphaj2000", "alpha", "racen", "rafit")
DEC_NAMES = ("dec", "decj2000", "dej2000", "deicrs", "decicrs", "de", "dec2000", "deltaj2000", "delta", "deccen",
             "decfit")  # fmt: skip
FLUX_NAMES = ("intflux", "totalflux", "fluxint", "intfluxdensity", "totalfluxdensity", "sint", "fint", "stotal",
              "stot", "ftot", "fluxtot", "fluxtotal", "flux", "fluxdensity", "s", "s1.4", "s1400", "flux1.4",
              "flux1400", "peakflux", "speak", "fpeak", "fluxpeak")  # fmt: skip
RA_UCDS = ("pos.eq.ra;meta.main", "pos_eq_ra_main", "pos.eq.ra")
DEC_UCDS = ("pos.eq.dec;meta.main", "pos_eq_dec_main", "pos.eq.dec")
FLUX_UCDS = ("phot.flux.density", "phot_flux_radio", "phot.flux.density;em.radio")


@dataclass(frozen=True)
class UploadedCatalog:
    """The rows as the comparison uses them (ra, dec in degrees; int_flux in Jy, NaN without a flux column), and
    which of the file's columns they came from."""

    table: Table
    name: str
    columns: dict[str, str | None]  # "ra", "dec", "flux" -> the file's column


def read_catalog(filename: str, data: bytes) -> UploadedCatalog:
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix not in FORMATS:
        accepted = ", ".join(sorted(FORMATS))
        raise UnsupportedType("unsupported_catalog", f"{filename!r}: a catalog is a file ending in one of {accepted}")
    fmt, label = FORMATS[suffix]
    if not data:
        raise InvalidContent("invalid_catalog", f"{filename} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's notes on non-standard units and the like
            table = Table.read(io.BytesIO(data), format=fmt)
    except Exception as exc:  # every reader raises its own kinds for a malformed file
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InvalidContent("invalid_catalog", f"{filename} is not a readable {label}: {reason}") from None
    if not len(table):
        raise InvalidContent("invalid_catalog", f"{filename} has no rows")
    ra_name, dec_name = _find(table, RA_UCDS, RA_NAMES), _find(table, DEC_UCDS, DEC_NAMES)
    missing = [what for what, found in (("right ascension", ra_name), ("declination", dec_name)) if found is None]
    if missing:
        raise InvalidContent(
            "no_positions",
            f"{filename}: found no {' and no '.join(missing)} column. A position column has the UCD pos.eq.ra or "
            f"pos.eq.dec, or one of the names {', '.join(RA_NAMES[:4])} / {', '.join(DEC_NAMES[:4])} (any case); "
            f"the catalog has: {', '.join(table.colnames)[:500]}",
            details={"missing": missing, "columns": table.colnames[:200]},
        )
    ra = _angles(table, ra_name, filename, u.hourangle)
    dec = _angles(table, dec_name, filename, u.deg)
    bad = ~(np.isfinite(ra) & np.isfinite(dec)) | (np.abs(dec) > 90)
    if bad.any():
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(bad)[:10])
        raise InvalidContent(
            "invalid_positions",
            f"{filename}: {int(bad.sum())} row(s) have no valid position in {ra_name} / {dec_name} (rows {rows})",
        )
    flux_name = _find(table, FLUX_UCDS, FLUX_NAMES)
    flux = _fluxes(table, flux_name, filename) if flux_name else np.full(len(table), np.nan)
    rows = Table(
        {"ra": ra % 360.0, "dec": dec, "int_flux": flux},
        units={"ra": u.deg, "dec": u.deg, "int_flux": u.Jy},
        meta={"name": filename},
    )
    return UploadedCatalog(rows, filename, {"ra": ra_name, "dec": dec_name, "flux": flux_name})


def _plain(name: str) -> str:
    """The name without case, punctuation or a unit at its end: "_RAJ2000" is raj2000, "S_int_mJy" is sint."""
    plain = re.sub(r"[^a-z0-9.]", "", name.lower())
    return re.sub(r"(.)(deg|mjy|ujy|jy)$", r"\1", plain)


def _find(table: Table, ucds: tuple[str, ...], names: tuple[str, ...]) -> str | None:
    """The first column with one of the UCDs (in their order), else with one of the names (in their order)."""
    for ucd in ucds:
        for column in table.colnames:
            if str(table[column].meta.get("ucd", "")).lower() == ucd and _usable(table[column]):
                return column
    plain = {_plain(column): column for column in reversed(table.colnames)}
    return next((plain[name] for name in names if name in plain and _usable(table[plain[name]])), None)


def _usable(column: Any) -> bool:
    return column.ndim == 1 and (column.dtype.kind in "iuf" or column.dtype.kind in "SU")


def _angles(table: Table, name: str, filename: str, sexagesimal_unit: u.Unit) -> np.ndarray:
    """Degrees (NaN where blank), from numbers in the column's unit (degrees when it has none; hours of time count as
    hours of angle) or from text: numbers in degrees, or sexagesimal (RA in hours)."""
    column = table[name]
    if column.dtype.kind in "SU":
        texts = np.ma.asarray(column).astype(str).filled("")
        texts = np.char.strip(texts.astype(str))
        given = (texts != "") & (texts != "--")
        numeric = all(re.fullmatch(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?", t) for t in texts[given])
        degrees = np.full(len(texts), np.nan)
        try:
            degrees[given] = Angle(list(texts[given]), unit=u.deg if numeric else sexagesimal_unit).to_value(u.deg)
        except Exception:  # astropy's angle parser raises several kinds
            raise InvalidContent(
                "invalid_positions", f"{filename}: column {name} holds neither numbers nor sexagesimal angles"
            ) from None
        return degrees
    unit = _unit(column, u.deg, u.deg, u.hour)
    try:
        if unit.physical_type == "time":
            return (_numbers(column) * unit.to(u.hour) * u.hourangle).to_value(u.deg)
        return (_numbers(column) * unit).to_value(u.deg)
    except (u.UnitsError, ValueError, TypeError):  # not an angle
        raise InvalidContent(
            "invalid_positions", f"{filename}: column {name} is in {unit}, which is not an angle"
        ) from None


def _unit(column: Any, default: u.UnitBase, *expected: u.UnitBase) -> u.UnitBase:
    """The column's unit; one that is none of the expected kinds is read again as a plain word: a VOTable's
    "degrees" is otherwise taken for a prefixed unit."""
    unit = column.unit
    if unit is None:
        return default
    if not any(unit.is_equivalent(kind) for kind in expected):
        again = u.Unit(str(unit).strip().removesuffix("s"), parse_strict="silent")
        return again if any(again.is_equivalent(kind) for kind in expected) else unit
    return unit


def _numbers(column: Any) -> np.ndarray:
    """The column as floats, NaN where a value is masked (blank)."""
    return np.ma.asarray(column).astype(float).filled(np.nan)


def _fluxes(table: Table, name: str, filename: str) -> np.ndarray:
    """Jy, from the column's unit; without one, mJy when the name says so, else Jy. A flux per beam counts as Jy."""
    column = table[name]
    if column.dtype.kind not in "iuf":
        raise InvalidContent("invalid_fluxes", f"{filename}: column {name} does not hold numbers")
    unit = _unit(column, u.mJy if "mjy" in name.lower() else u.Jy, u.Jy, u.Jy / u.beam)
    try:
        return (_numbers(column) * (unit * u.beam if unit.is_equivalent(u.Jy / u.beam) else unit)).to_value(u.Jy)
    except (u.UnitsError, ValueError, TypeError):  # not a flux density
        raise InvalidContent(
            "invalid_fluxes", f"{filename}: column {name} is in {unit}, which is not a flux density"
        ) from None
