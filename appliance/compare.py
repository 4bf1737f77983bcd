"""Comparing two catalogs of the same image: a one-to-one cross-match within a radius, what only one side found,
flux ratios and position offsets, as a table, region files coloured by class and a picture. Side A is a finished
job; side B another job on the same image, or a catalog made elsewhere (appliance.uploaded_catalogs), of which only
the rows inside the image take part.

Finders disagree a lot on real radio fields (extended emission is split or merged differently), so the
comparison is per component and says which side each unmatched row came from.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid as uuidlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Column, Table
from sqlalchemy import func, select

from appliance.catalogs import KINDS, footprint_flags, table_to_json
from appliance.config import Settings
from appliance.db import Database
from appliance.errors import InvalidContent, InvalidRequest, NotFound
from appliance.fitsimage import celestial_wcs
from appliance.jobs import JobService
from appliance.models import Comparison, Job
from appliance.uploaded_catalogs import read_catalog

CLASSES = ("matched", "only_a", "only_b")
# one colour and one marker per class, the same in the regions, the plot and the dashboard's viewer and legend
COLOURS = {"matched": "#2ecc40", "only_a": "#ff4136", "only_b": "#3d9dff"}
MARKERS = {"matched": "circle", "only_a": "square", "only_b": "rhomb"}
TABLE_FORMATS = {"votable": "vot", "csv": "csv", "json": "rows.json"}


@dataclass(frozen=True)
class Match:
    a: np.ndarray  # indices into A of the matched pairs
    b: np.ndarray  # and into B
    separation_arcsec: np.ndarray
    only_a: np.ndarray
    only_b: np.ndarray


def cross_match(a: Table, b: Table, radius_arcsec: float) -> Match:
    """Pairs of mutual nearest neighbours closer than the radius: each row is in at most one pair."""
    if not len(a) or not len(b):
        empty = np.array([], dtype=int)
        return Match(empty, empty, np.array([]), np.arange(len(a)), np.arange(len(b)))
    sky_a = SkyCoord(np.asarray(a["ra"]), np.asarray(a["dec"]), unit="deg")
    sky_b = SkyCoord(np.asarray(b["ra"]), np.asarray(b["dec"]), unit="deg")
    nearest_b, separation, _ = sky_a.match_to_catalog_sky(sky_b)
    nearest_a, _, _ = sky_b.match_to_catalog_sky(sky_a)
    mutual = (nearest_a[nearest_b] == np.arange(len(a))) & (separation < radius_arcsec * u.arcsec)
    matched_a = np.flatnonzero(mutual)
    matched_b = nearest_b[mutual]
    return Match(
        a=matched_a,
        b=matched_b,
        separation_arcsec=separation[mutual].to_value(u.arcsec),
        only_a=np.setdiff1d(np.arange(len(a)), matched_a),
        only_b=np.setdiff1d(np.arange(len(b)), matched_b),
    )


def comparison_table(a: Table, b: Table, match: Match) -> Table:
    """One row per matched pair (at A's position), then A's unmatched rows, then B's."""
    index_a = np.concatenate([match.a, match.only_a, np.full(len(match.only_b), -1)])
    index_b = np.concatenate([match.b, np.full(len(match.only_a), -1), match.only_b])
    classes = ["matched"] * len(match.a) + ["only_a"] * len(match.only_a) + ["only_b"] * len(match.only_b)

    def pick(table: Table, index: np.ndarray, column: str) -> np.ndarray:
        values = np.asarray(table[column], dtype=float) if len(table) else np.array([])
        return np.where(index >= 0, values[np.maximum(index, 0)] if len(values) else np.nan, np.nan)

    ra = np.where(index_a >= 0, pick(a, index_a, "ra"), pick(b, index_b, "ra"))
    dec = np.where(index_a >= 0, pick(a, index_a, "dec"), pick(b, index_b, "dec"))
    flux_a, flux_b = pick(a, index_a, "int_flux"), pick(b, index_b, "int_flux")
    d_ra = (pick(b, index_b, "ra") - pick(a, index_a, "ra")) * np.cos(np.deg2rad(dec)) * 3600.0
    d_dec = (pick(b, index_b, "dec") - pick(a, index_a, "dec")) * 3600.0
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = flux_b / flux_a
    table = Table(meta={"name": "comparison"})
    columns = [
        ("class", np.array(classes, dtype="U7"), None, "meta.code.class", "matched, only_a or only_b"),
        ("ra", ra, u.deg, "pos.eq.ra;meta.main", "position (A's for a matched pair)"),
        ("dec", dec, u.deg, "pos.eq.dec;meta.main", "position (A's for a matched pair)"),
        ("component_a", index_a + 1, None, "meta.id", "component number in catalog A (0: none)"),
        ("component_b", index_b + 1, None, "meta.id", "component number in catalog B (0: none)"),
        ("int_flux_a", flux_a, u.Jy, "phot.flux.density", "integrated flux in A"),
        ("int_flux_b", flux_b, u.Jy, "phot.flux.density", "integrated flux in B"),
        ("flux_ratio", ratio, None, "arith.ratio;phot.flux.density", "int_flux_b / int_flux_a"),
        ("d_ra", d_ra, u.arcsec, "pos.eq.ra;arith.diff", "RA offset of B from A, times cos(dec)"),
        ("d_dec", d_dec, u.arcsec, "pos.eq.dec;arith.diff", "Dec offset of B from A"),
        ("separation", np.hypot(d_ra, d_dec), u.arcsec, "pos.angDistance", "distance between A and B"),
    ]
    for name, data, unit, ucd, description in columns:
        table[name] = Column(data, unit=unit, description=description, meta={"ucd": ucd})
    return table


def summary(table: Table) -> dict[str, Any]:
    matched = table[table["class"] == "matched"]
    ratio = np.asarray(matched["flux_ratio"])
    ratio = ratio[np.isfinite(ratio)]
    separation = np.asarray(matched["separation"])

    def quantiles(values: np.ndarray) -> dict[str, float | None]:
        if not values.size:
            return {"median": None, "p16": None, "p84": None}
        p16, median, p84 = np.percentile(values, [16, 50, 84])
        return {"median": float(median), "p16": float(p16), "p84": float(p84)}

    return {
        "counts": {cls: int(np.sum(table["class"] == cls)) for cls in CLASSES},
        "flux_ratio": quantiles(ratio),
        "offset_arcsec": quantiles(separation),
    }


def write_regions(table: Table, path: Path, radius_arcsec: float) -> None:
    """A circle of the match radius at every row, coloured by class (DS9, sky coordinates)."""
    from regions import CircleSkyRegion, Regions

    centres = SkyCoord(np.asarray(table["ra"]), np.asarray(table["dec"]), unit="deg", frame="icrs")
    shapes = [
        CircleSkyRegion(
            center=centres[i],
            radius=radius_arcsec / 2 * u.arcsec,
            meta={"text": f"{row['class']} {row['component_a'] or ''}/{row['component_b'] or ''}"},
            visual={"color": COLOURS[row["class"]]},
        )
        for i, row in enumerate(table)
    ]
    Regions(shapes).write(str(path), format="ds9", overwrite=True)


def write_plot(table: Table, path: Path, labels: tuple[str, str], radius_arcsec: float) -> None:
    """The flux ratio B/A of the matched pairs against A's flux (log-log, with 1 and the median), and B's offsets
    from A (with the match radius and the median offset)."""
    import matplotlib
    import matplotlib.patches
    import matplotlib.ticker

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    matched = table[table["class"] == "matched"]
    numbers = summary(table)
    figure = Figure(figsize=(11, 5), dpi=100)
    ratios, offsets = figure.subplots(1, 2)
    flux_a, ratio = np.asarray(matched["int_flux_a"]) * 1e3, np.asarray(matched["flux_ratio"])
    good = (flux_a > 0) & (ratio > 0) & np.isfinite(ratio)
    colour = COLOURS["matched"]
    if good.any():
        ratios.loglog(flux_a[good], ratio[good], "o", color=colour, ms=4, mec="k", mew=0.3)
        ratios.axhline(1.0, color="k", lw=0.8)
        median = numbers["flux_ratio"]["median"]
        ratios.axhline(median, color=colour, ls="--", lw=1, label=f"median {median:.3g}")
        ratios.legend(loc="best")
    else:
        ratios.text(0.5, 0.5, "no matched pair has both fluxes", ha="center", va="center", transform=ratios.transAxes)
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ratios.xaxis.set_major_formatter(plain)
    ratios.yaxis.set_major_formatter(plain)
    low, high = ratios.get_ylim()
    if high < 10 * low:  # within a decade the log axis has no major tick to read: label the minor ones
        ratios.yaxis.set_minor_formatter(plain)
    ratios.set_xlabel(f"{labels[0]} integrated flux (mJy)")
    ratios.set_ylabel(f"flux ratio {labels[1]} / {labels[0]}")
    counts = numbers["counts"]
    ratios.set_title(f"{counts['matched']} matched, {counts['only_a']} only in {labels[0]}, "
                     f"{counts['only_b']} only in {labels[1]}")  # fmt: skip
    offsets.plot(matched["d_ra"], matched["d_dec"], "o", color=colour, ms=4, mec="k", mew=0.3)
    if len(matched):
        offsets.plot([np.nanmedian(matched["d_ra"])], [np.nanmedian(matched["d_dec"])], "k+", ms=14, label="median")
        offsets.legend(loc="upper right")
    offsets.add_patch(matplotlib.patches.Circle((0, 0), radius_arcsec, fill=False, ls="--", color="grey"))
    offsets.axhline(0, color="grey", lw=0.5)
    offsets.axvline(0, color="grey", lw=0.5)
    offsets.set_xlim(radius_arcsec * 1.1, -radius_arcsec * 1.1)  # east to the left, as on the sky
    offsets.set_ylim(-radius_arcsec * 1.1, radius_arcsec * 1.1)
    offsets.set_aspect("equal")
    offsets.set_xlabel(f"RA offset {labels[1]} − {labels[0]}, × cos Dec (arcsec)")
    offsets.set_ylabel("Dec offset (arcsec)")
    offsets.set_title(f"offsets within the {radius_arcsec:.3g}″ match radius")
    figure.tight_layout()
    figure.savefig(path)


class ComparisonService:
    """Comparisons of a finished job with another on the same image, or with an uploaded catalog, kept under
    <home>/comparisons/<user>/<id>/."""

    def __init__(self, settings: Settings, db: Database, jobs: JobService) -> None:
        self.settings = settings
        self.db = db
        self.jobs = jobs

    def folder(self, comparison: Comparison) -> Path:
        return self.settings.home / "comparisons" / comparison.user / comparison.id

    def create(self, user: str, job_ids: Any, radius_arcsec: Any = None, kind: Any = "components") -> Comparison:
        if not isinstance(job_ids, list) or len(job_ids) != 2 or not all(isinstance(j, str) for j in job_ids):
            raise InvalidRequest("invalid_jobs", 'give the two jobs to compare as "jobs": ["<job id>", "<job id>"]')
        self._check_kind(kind)
        jobs = [self._finished_job(user, job_id) for job_id in job_ids]
        if jobs[0].data_inputs != jobs[1].data_inputs:
            raise InvalidContent("different_images", "the two jobs ran on different images: compare jobs of one image")
        radius = self._radius(jobs[0], radius_arcsec)
        tables = [Table.read(self.jobs.folder(job) / f"catalog_{kind}.fits") for job in jobs]
        labels = (f"A ({jobs[0].app})", f"B ({jobs[1].app})")
        facts = {"apps": [jobs[0].app, jobs[1].app]}
        return self._save(user, jobs[0], jobs[1], tables, kind, radius, labels, facts, {})

    def create_with_catalog(self, user: str, job_id: Any, filename: Any, data: bytes, radius_arcsec: Any = None,
                            kind: Any = "components") -> Comparison:  # fmt: skip
        """Job A against a catalog made elsewhere (VOTable, CSV, ECSV or FITS table with positions): its rows
        outside job A's image (or on blank pixels) do not take part, and are counted."""
        if not isinstance(job_id, str) or not job_id:
            raise InvalidRequest("invalid_jobs", "give the job to compare the catalog with as job=<job id>")
        if not isinstance(filename, str) or not filename:
            raise InvalidRequest("missing_catalog", "send the catalog file in the form field 'catalog'")
        self._check_kind(kind)
        job = self._finished_job(user, job_id)
        radius = self._radius(job, radius_arcsec)
        uploaded = read_catalog(filename, data)
        inside, outside = self._inside_image(user, job, uploaded.table)
        if not len(inside):
            raise InvalidContent(
                "catalog_outside_image",
                f"none of the {len(uploaded.table)} rows of {filename} lies on the image of job {job.id}: "
                "is it a catalog of this field?",
            )
        table_a = Table.read(self.jobs.folder(job) / f"catalog_{kind}.fits")
        stem = filename.rsplit("/", 1)[-1]
        labels = (f"A ({job.app})", f"B ({stem[:40]})")
        catalog = {"name": filename, "rows": len(uploaded.table), "outside_image": outside, "columns": uploaded.columns}
        suffix = "." + filename.rsplit(".", 1)[-1].lower()
        facts = {"apps": [job.app], "catalog": catalog}
        return self._save(user, job, None, [table_a, inside], kind, radius, labels, facts, {f"catalog_b{suffix}": data})

    def _check_kind(self, kind: Any) -> None:
        if kind not in KINDS:
            raise InvalidRequest("invalid_kind", f"kind is one of {', '.join(KINDS)}")

    def _finished_job(self, user: str, job_id: str) -> Job:
        job = self.jobs.get(user, job_id)
        if job.state != "SUCCESS":
            raise InvalidContent("job_not_successful", f"job {job.id} is {job.state}: only finished jobs compare")
        return job

    def _inside_image(self, user: str, job: Job, table: Table) -> tuple[Table, int]:
        """The rows whose position falls on the image of the job (not on a blank pixel), and how many do not."""
        from astropy.io import fits

        try:
            record, path = self.jobs.files.open_path(user, job.data_inputs)
        except NotFound:
            raise InvalidContent(
                "image_deleted",
                f"the image of job {job.id} was deleted: a catalog is compared within the image, so it is needed",
            ) from None
        with fits.open(path, memmap=True) as hdul:
            hdu = hdul[record.summary["hdu"]]
            wcs = celestial_wcs(hdu.header)
            data = np.asarray(hdu.data)
            data = data.reshape(data.shape[-2:])
            x, y = wcs.world_to_pixel(SkyCoord(np.asarray(table["ra"]), np.asarray(table["dec"]), unit="deg"))
            located = Table({"x": np.asarray(x, dtype=float), "y": np.asarray(y, dtype=float)})
            flags = footprint_flags(located, data)
        keep = flags == 0
        return table[keep], int((~keep).sum())

    def _save(self, user: str, job_a: Job, job_b: Job | None, tables: list[Table], kind: str, radius: float,
              labels: tuple[str, str], facts: dict[str, Any], keep: dict[str, bytes]) -> Comparison:  # fmt: skip
        match = cross_match(tables[0], tables[1], radius)
        table = comparison_table(tables[0], tables[1], match)
        comparison = Comparison(
            id=str(uuidlib.uuid4()),
            user=user,
            job_a=job_a.id,
            job_b=job_b.id if job_b else None,
            kind=kind,
            radius_arcsec=radius,
            created=datetime.now(UTC),
            summary={**summary(table), **facts},
        )
        folder = self.folder(comparison)
        partial = folder.with_name(f".{folder.name}.part")
        partial.mkdir(parents=True)
        try:
            table.write(partial / "comparison.vot", format="votable", overwrite=True)
            table.write(partial / "comparison.csv", format="ascii.csv", overwrite=True)
            (partial / "comparison.rows.json").write_text(json.dumps(table_to_json(table), allow_nan=False))
            write_regions(table, partial / "comparison.reg", radius)
            write_plot(table, partial / "comparison.png", labels, radius)
            for name, data in keep.items():
                (partial / name).write_bytes(data)
            (partial / "comparison.json").write_text(json.dumps(document(comparison), indent=2))
            partial.rename(folder)
            with self.db.session() as session:
                session.add(comparison)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return comparison

    def _radius(self, job: Any, radius_arcsec: Any) -> float:
        if radius_arcsec is not None:
            number = isinstance(radius_arcsec, (int, float)) and not isinstance(radius_arcsec, bool)
            if not number or not math.isfinite(radius_arcsec) or radius_arcsec <= 0:
                raise InvalidRequest("invalid_radius", "radius_arcsec must be a positive number of arcsec")
            return float(radius_arcsec)
        spec = json.loads((self.jobs.folder(job) / "job.json").read_text())
        beam = (spec.get("input_summary") or {}).get("beam")
        if not beam:
            raise InvalidRequest("invalid_radius", "the image has no beam: give radius_arcsec")
        return float(beam["bmaj_arcsec"])

    def recover(self) -> None:
        """Remove folders of comparisons that were being written when the appliance stopped."""
        with self.db.session() as session:
            known = set(session.scalars(select(Comparison.id)).all())
        for folder in (self.settings.home / "comparisons").glob("*/*"):
            if folder.is_dir() and folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)

    def get(self, user: str, comparison_id: str) -> Comparison:
        with self.db.session() as session:
            comparison = session.get(Comparison, comparison_id) if isinstance(comparison_id, str) else None
            if comparison is None or comparison.user != user:
                raise NotFound("comparison_not_found", f"comparison {comparison_id} not found")
            return comparison

    def list(self, user: str, limit: int = 100, offset: int = 0) -> tuple[list[Comparison], int]:
        with self.db.session() as session:
            where = Comparison.user == user
            total = session.scalar(select(func.count()).select_from(Comparison).where(where)) or 0
            rows = session.scalars(
                select(Comparison).where(where).order_by(Comparison.created.desc()).limit(limit).offset(offset)
            ).all()
            return list(rows), total

    def product(self, user: str, comparison_id: str, name: str) -> Path:
        path = self.folder(self.get(user, comparison_id)) / name
        if not path.is_file():  # a comparison made before the product existed
            raise NotFound("output_not_available", f"comparison {comparison_id} has no {name}")
        return path

    def delete(self, user: str, comparison_id: str) -> None:
        comparison = self.get(user, comparison_id)
        with self.db.session() as session:
            session.execute(Comparison.__table__.delete().where(Comparison.id == comparison.id))
        shutil.rmtree(self.folder(comparison), ignore_errors=True)


def document(comparison: Comparison) -> dict[str, Any]:
    """The comparison as the API gives it: ``jobs`` lists A and, when B is a job, B; ``catalog`` describes B when
    it is an uploaded catalog."""
    return {
        "compare_id": comparison.id,
        "jobs": [job for job in (comparison.job_a, comparison.job_b) if job],
        "kind": comparison.kind,
        "radius_arcsec": comparison.radius_arcsec,
        "created": comparison.created.isoformat(),
        **comparison.summary,
    }
