"""FITS inspection with astropy: decide whether a file holds a usable 2-D image and summarise its header."""

from __future__ import annotations

import gzip
import math
import os
import re
import shutil
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import block_reduce
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from appliance.errors import InvalidContent, TooLarge, UnsupportedType

FITS_MAGIC = b"SIMPLE  ="
GZIP_MAGIC = b"\x1f\x8b"
FITS_BLOCK = 2880  # a FITS file is a sequence of 2880-byte blocks; a header fills its blocks with 80-byte cards
CARD = 80

# AIPS and CASA write the restoring beam into HISTORY when BMAJ/BMIN are missing from the header.
_AIPS_BEAM = re.compile(r"BMAJ\s*=\s*([-+.\dEe]+)\s+BMIN\s*=\s*([-+.\dEe]+)\s+BPA\s*=\s*([-+.\dEe]+)")


@dataclass(frozen=True)
class Beam:
    bmaj_arcsec: float
    bmin_arcsec: float
    bpa_deg: float | None
    source: str  # "header" or "history"


@dataclass(frozen=True)
class FitsSummary:
    """What a user (and a finder) needs to know about an uploaded image, all from the header."""

    hdu: int
    naxis: list[int]  # NAXIS1, NAXIS2, ... as in the header
    shape: list[int]  # the 2-D image as numpy sees it: [NAXIS2, NAXIS1]
    bitpix: int
    bunit: str | None
    celestial_wcs: bool
    ctype: list[str]
    projection: str | None
    radesys: str | None
    center_ra_deg: float | None
    center_dec_deg: float | None
    pixel_scale_arcsec: list[float] | None  # along the image's x and y axes
    beam: Beam | None
    frequency_hz: float | None
    telescope: str | None
    object: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def celestial_wcs(header: fits.Header) -> WCS:
    """The header's celestial WCS; astropy's notes on what it fixed in the header are not errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header).celestial


def image_wcs(header: fits.Header) -> WCS:
    """The grid a copy or a picture of the image is drawn on: its celestial WCS, or, when it has no usable one, its
    pixel axes as a linear WCS counting 0-based pixels (as the catalogs' x and y do)."""
    try:
        wcs = celestial_wcs(header)
        if wcs.naxis == 2 and wcs.has_celestial:
            return wcs
    except Exception:  # astropy.wcs raises many types for malformed keywords; all mean "no usable WCS"
        pass
    pixels = WCS(naxis=2)
    pixels.wcs.ctype = ["X", "Y"]
    pixels.wcs.crpix = [1.0, 1.0]
    pixels.wcs.crval = [0.0, 0.0]
    pixels.wcs.name = "image pixels, 0-based"
    return pixels


def sniff(head: bytes) -> None:
    """Reject content that is neither FITS nor gzip from its first bytes, before the rest is stored."""
    if not (head.startswith(FITS_MAGIC) or head.startswith(GZIP_MAGIC)):
        raise UnsupportedType("not_fits", "the file is not FITS: it does not start with the card 'SIMPLE  ='")


def inspect_fits(
    path: Path, *, header_max_cards: int | None = None, decompressed_max_bytes: int | None = None
) -> FitsSummary:
    """Open ``path`` with astropy and summarise its first 2-D image HDU (degenerate axes allowed).

    Raises UnsupportedType when the content is not FITS, InvalidContent when it is truncated, corrupt or holds no
    2-D image, TooLarge when its headers hold more than ``header_max_cards`` cards or, gzipped, it decompresses to
    more than ``decompressed_max_bytes`` (both found before astropy reads it). Reads headers only (data stays
    memory-mapped), so it is cheap for files of any size."""
    with path.open("rb") as f:
        head = f.read(len(FITS_MAGIC))
    sniff(head)
    if head.startswith(GZIP_MAGIC):
        _check_gzip_stream(path, header_max_cards, decompressed_max_bytes)
    else:
        with path.open("rb") as stream:
            _walk_hdus(stream, header_max_cards, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=True, lazy_load_hdus=False) as hdul:
                _raise_on_truncation(caught)
                index, hdu = _first_image(hdul)
                return _summarise(index, hdu.header, notes=_notes(caught))
        except (InvalidContent, UnsupportedType):
            raise
        except (OSError, ValueError, TypeError, KeyError, IndexError, EOFError, fits.VerifyError) as exc:
            _raise_on_truncation(caught)
            if "SIMPLE" in str(exc):
                raise UnsupportedType("not_fits", f"the file is not FITS: {exc}") from None
            raise InvalidContent("corrupt_fits", f"the FITS file is corrupt: {exc}") from None


def _check_gzip_stream(path: Path, header_max_cards: int | None, decompressed_max_bytes: int | None) -> None:
    """Read the whole stream, which checks it, walking its HDUs on the way; bytes after the last HDU count too."""
    try:
        with gzip.open(path, "rb") as stream:
            first = stream.read(len(FITS_MAGIC))
            if not first.startswith(FITS_MAGIC):
                raise UnsupportedType("not_fits", "the gzip file does not hold FITS: no 'SIMPLE  =' card at its start")
            stream.seek(0)
            _walk_hdus(stream, header_max_cards, decompressed_max_bytes)
            while stream.read(1 << 22):
                _check_decompressed(stream.tell(), decompressed_max_bytes)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise InvalidContent("corrupt_gzip", f"the gzip stream is truncated or corrupt: {exc}") from None


def _walk_hdus(stream: BinaryIO, header_max_cards: int | None, decompressed_max_bytes: int | None) -> None:
    """Count header cards HDU by HDU in the raw bytes, up to each END card, skipping the data, and refuse more than
    ``header_max_cards``: astropy would spend seconds of CPU parsing a header of 100 000 cards. Only headers within
    the limit are parsed, for their data size, which is refused before it is read when the stream would go past
    ``decompressed_max_bytes``. Stops at what it does not expect (a short block, bytes after the last HDU, a header
    it cannot read), which astropy then reports."""
    cards = 0
    while len(block := stream.read(FITS_BLOCK)) == FITS_BLOCK and block.startswith((FITS_MAGIC, b"XTENSION=")):
        header = bytearray()
        while True:
            header += block
            end = next((i for i in range(0, FITS_BLOCK, CARD) if block[i : i + 8] == b"END     "), None)
            cards += FITS_BLOCK // CARD if end is None else end // CARD + 1
            if header_max_cards is not None and cards > header_max_cards:
                raise TooLarge(
                    "header_too_large",
                    f"the FITS headers hold more than {header_max_cards} cards, the limit set by header_max_cards",
                )
            if end is not None:
                break
            if len(block := stream.read(FITS_BLOCK)) < FITS_BLOCK:
                return
        try:
            size = _data_size(fits.Header.fromstring(bytes(header)))
        except (KeyError, ValueError, TypeError, fits.VerifyError):
            return
        if size < 0:  # negative axis lengths: seeking back would read the same header again
            return
        end = stream.tell() + size
        _check_decompressed(end, decompressed_max_bytes)
        if stream.seek(size, os.SEEK_CUR) < end:  # only a gzip stream stops at its end; astropy checks plain files
            raise InvalidContent(
                "truncated_fits", f"the FITS file is truncated: it ends at byte {stream.tell()}, its headers say {end}"
            )


def _check_decompressed(size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise TooLarge(
            "too_large",
            f"the gzip file decompresses to {size} bytes or more ({size / 2**30:.2f} GiB), over the limit of {limit} "
            f"bytes ({limit / 2**30:.2f} GiB) set by decompressed_max_bytes",
        )


def _data_size(header: fits.Header) -> int:
    """Bytes of an HDU's data, padded to whole blocks (FITS 4.0, 4.4.1): |BITPIX|/8 × GCOUNT × (PCOUNT + NAXIS1 × ...
    × NAXISn), where random groups (GROUPS = T) leave out their NAXIS1 of 0."""
    naxes = [int(header[f"NAXIS{i}"]) for i in range(1, int(header["NAXIS"]) + 1)]
    if header.get("GROUPS") is True and naxes[:1] == [0]:
        naxes = naxes[1:]
    if not naxes:
        return 0
    size = abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1))
    size *= int(header.get("PCOUNT", 0)) + math.prod(naxes)
    return (size + FITS_BLOCK - 1) // FITS_BLOCK * FITS_BLOCK


def _raise_on_truncation(caught: list[warnings.WarningMessage]) -> None:
    for warning in caught:
        text = str(warning.message)
        if "truncated" in text:
            raise InvalidContent("truncated_fits", f"the FITS file is truncated: {text}")


def _notes(caught: list[warnings.WarningMessage]) -> list[str]:
    notes = []
    for warning in caught:
        text = " ".join(str(warning.message).split())
        if "extra bytes after the last HDU" in text:
            notes.append("extra bytes after the last HDU were ignored")
    return sorted(set(notes))


def _first_image(hdul: fits.HDUList) -> tuple[int, Any]:
    seen = []
    for index, hdu in enumerate(hdul):
        if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            continue
        naxes = [hdu.header.get(f"NAXIS{i}", 0) for i in range(1, hdu.header.get("NAXIS", 0) + 1)]
        if not naxes:
            continue
        seen.append((index, naxes))
        if len(naxes) >= 2 and naxes[0] > 1 and naxes[1] > 1 and all(n == 1 for n in naxes[2:]):
            return index, hdu
    if not seen:
        raise InvalidContent("no_image", "the FITS file holds no image data")
    described = "; ".join(f"HDU {i}: {'x'.join(map(str, n))}" for i, n in seen)
    raise InvalidContent(
        "not_2d_image",
        f"the FITS file holds no 2-D image (NAXIS1 and NAXIS2 > 1, any further axes of length 1): {described}",
    )


def _summarise(index: int, header: fits.Header, notes: list[str]) -> FitsSummary:
    naxes = [int(header[f"NAXIS{i}"]) for i in range(1, int(header["NAXIS"]) + 1)]
    wcs_facts = _celestial_wcs(header, naxes, notes)
    beam = _beam(header, notes)
    return FitsSummary(
        hdu=index,
        naxis=naxes,
        shape=[naxes[1], naxes[0]],
        bitpix=int(header["BITPIX"]),
        bunit=_text(header.get("BUNIT")),
        beam=beam,
        frequency_hz=_frequency(header),
        telescope=_text(header.get("TELESCOP")),
        object=_text(header.get("OBJECT")),
        notes=notes,
        **wcs_facts,
    )


def _celestial_wcs(header: fits.Header, naxes: list[int], notes: list[str]) -> dict[str, Any]:
    ctype = [str(header.get(f"CTYPE{i}", "")).strip() for i in (1, 2)]
    facts: dict[str, Any] = dict(
        celestial_wcs=False,
        ctype=ctype,
        projection=None,
        radesys=None,
        center_ra_deg=None,
        center_dec_deg=None,
        pixel_scale_arcsec=None,
    )
    try:
        wcs = celestial_wcs(header)
        if wcs.naxis != 2 or not wcs.has_celestial:
            notes.append("no celestial WCS: positions will be in pixels only")
            return facts
        center = wcs.pixel_to_world((naxes[0] - 1) / 2, (naxes[1] - 1) / 2).icrs
        scales = (proj_plane_pixel_scales(wcs) * u.deg).to_value(u.arcsec)
    except Exception as exc:  # astropy.wcs raises many types for malformed keywords; all mean "no usable WCS"
        notes.append(f"WCS could not be read ({type(exc).__name__}: {exc}); positions will be in pixels only")
        return facts
    facts.update(
        celestial_wcs=True,
        projection=ctype[0][5:].strip("-") or None,  # as written: astropy turns NCP into SIN with PV terms
        radesys=wcs.wcs.radesys or None,
        center_ra_deg=float(center.ra.deg),
        center_dec_deg=float(center.dec.deg),
        pixel_scale_arcsec=[float(s) for s in scales],
    )
    return facts


def _beam(header: fits.Header, notes: list[str]) -> Beam | None:
    bmaj, bmin, bpa = (_number(header.get(k)) for k in ("BMAJ", "BMIN", "BPA"))
    source = "header"
    if bmaj is None or bmin is None:
        found = [m for m in map(_AIPS_BEAM.search, (str(h) for h in header.get("HISTORY", []))) if m]
        if not found:
            notes.append("no restoring beam in the header (BMAJ/BMIN)")
            return None
        bmaj, bmin, bpa = (float(v) for v in found[-1].groups())
        source = "history"
    if bpa is None:
        notes.append("no BPA in the header")
    return Beam(bmaj_arcsec=bmaj * 3600.0, bmin_arcsec=bmin * 3600.0, bpa_deg=bpa, source=source)


def _frequency(header: fits.Header) -> float | None:
    for i in range(1, 10):  # the spectral axis may be described beyond NAXIS (e.g. NAXIS = 2 with a CTYPE3 FREQ)
        if str(header.get(f"CTYPE{i}", "")).upper().startswith("FREQ"):
            crval, cdelt, crpix = (_number(header.get(f"{k}{i}")) for k in ("CRVAL", "CDELT", "CRPIX"))
            if crval is not None:
                return crval + (1.0 - (crpix or 1.0)) * (cdelt or 0.0)
    for key in ("RESTFRQ", "RESTFREQ", "FREQ"):
        value = _number(header.get(key))
        if value is not None:
            return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def prepare_image(
    source: Path,
    hdu_index: int,
    dest: Path,
    beam_override: tuple[float, float, float] | None = None,
    beam_fallback: tuple[float, float, float] | None = None,
    *,
    with_beam: bool = True,
    block: int = 1,
    reads_pv_terms: bool = True,
) -> list[str]:
    """Write the plane a finder reads: the 2-D image of ``hdu_index`` as float32 with only its ``image_wcs``, the
    beam in the header (unless ``with_beam`` is false: a picture needs none), and non-finite pixels as NaN blanks.
    With ``block`` > 1 (the viewer's copy of a large image) each block × block pixels are averaged, blanks left out,
    and a partial block at the end of a row or column is dropped; astropy's strided WCS slice puts each new pixel at
    the centre of its block. For a reader that ignores projection parameters (``reads_pv_terms`` false: caesar),
    NCP stays NCP rather than the equivalent SIN with PV terms astropy writes.

    Rows are read and written ROW_BLOCK_BYTES at a time, so memory stays bounded whatever the image's size; a
    gzipped source is first unpacked to a hidden file beside ``dest``, removed afterwards (astropy reads each
    section of a gzip stream by decompressing it from the start). Returns what was assumed or changed, for the job
    log."""
    notes: list[str] = []
    scratch = dest.with_name(f".{dest.name.lstrip('.')}.unpacked")
    try:
        with _unpacked(source, scratch) as plain, fits.open(plain, memmap=False) as hdul:
            hdu = hdul[hdu_index]
            if len(hdu.shape) > 2:
                notes.append(f"degenerate axes dropped: {len(hdu.shape)}-D data of shape {hdu.shape} read as 2-D")
            out = _plane_header(hdu.header, block, notes, reads_pv_terms)
            if with_beam:
                notes += _write_beam(hdu.header, out, beam_override, beam_fallback)
            blanks = _write_plane(hdu, out, dest, block)
            pixels = math.prod(hdu.shape)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if blanks:
        notes.append(f"{blanks} blank (NaN or infinite) pixels are masked ({blanks / pixels:.1%} of the image)")
    return notes


ROW_BLOCK_BYTES = 8 << 20  # float32 rows read and written at a time; a few copies of them are all a product holds


@contextmanager
def _unpacked(source: Path, scratch: Path) -> Iterator[Path]:
    """``source`` as a plain FITS file: a gzipped one is decompressed to ``scratch``, which is removed afterwards."""
    with source.open("rb") as f:
        gzipped = f.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    if not gzipped:
        yield source
        return
    try:
        with gzip.open(source, "rb") as packed, scratch.open("wb") as out:
            shutil.copyfileobj(packed, out, ROW_BLOCK_BYTES)
        yield scratch
    finally:
        scratch.unlink(missing_ok=True)


def _plane_header(header: fits.Header, block: int, notes: list[str], reads_pv_terms: bool = True) -> fits.Header:
    wcs = image_wcs(header)
    out = wcs[::block, ::block].to_header() if block > 1 else wcs.to_header()
    if wcs.has_celestial:
        original = str(header.get(f"CTYPE{wcs.wcs.lng + 1}", ""))[5:].strip("-")
        if not reads_pv_terms and _is_ncp(wcs):
            for axis in (wcs.wcs.lng, wcs.wcs.lat):
                out[f"CTYPE{axis + 1}"] = wcs.wcs.ctype[axis][:5] + "NCP"
            for m in (1, 2):
                out.remove(f"PV{wcs.wcs.lat + 1}_{m}", ignore_missing=True)
        written = str(out[f"CTYPE{wcs.wcs.lng + 1}"])[5:].strip("-")
        terms = [key for key in out if key.startswith("PV")]
        note = f"projection given to the finder: {written}" + (f" with {', '.join(terms)}" if terms else "")
        if written != original:
            note += f", the equivalent of the header's {original}"
        if terms and not reads_pv_terms:
            note += (": the finder ignores PV terms, so the sky positions in its own files are off; the catalog's "
                     "are computed from its pixel positions")  # fmt: skip
        notes.append(note)
    for key in ("BUNIT", "TELESCOP", "OBJECT", "DATE-OBS", "RESTFRQ", "RESTFREQ"):
        if key in header:
            out[key] = header[key]
    if block > 1:
        out["HISTORY"] = f"averaged over {block}x{block} blocks for display"
    return out


def _is_ncp(wcs: WCS) -> bool:
    """Whether ``wcs`` is SIN with the projection parameters of NCP (PV2_1 = 0, PV2_2 = cot of the reference Dec),
    as astropy reads an NCP header: the two are the same projection."""
    if wcs.wcs.ctype[wcs.wcs.lng][5:].strip("-") != "SIN":
        return False
    terms = {(axis, m): value for axis, m, value in wcs.wcs.get_pv()}
    lat = wcs.wcs.lat + 1
    cot = 1.0 / math.tan(math.radians(wcs.wcs.crval[wcs.wcs.lat])) if wcs.wcs.crval[wcs.wcs.lat] else math.inf
    return (
        set(terms) <= {(lat, 1), (lat, 2)}
        and terms.get((lat, 1), 0.0) == 0.0
        and math.isclose(terms.get((lat, 2), 0.0), cot, rel_tol=1e-9)
    )


def _write_plane(hdu: Any, header: fits.Header, dest: Path, block: int) -> int:
    """Stream the plane into ``dest`` with ``header``, a band of rows at a time; returns the blanks met."""
    ny, nx = hdu.shape[-2:]
    full = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", nx // block),
                        ("NAXIS2", ny // block)])  # fmt: skip
    full.extend(header)
    dest.unlink(missing_ok=True)  # StreamingHDU would append an extension to an existing file
    blanks = 0
    with fits.StreamingHDU(dest, full) as stream:
        for band in plane_bands(hdu, block):
            bad = ~np.isfinite(band)
            blanks += int(np.count_nonzero(bad))
            band[bad] = np.nan
            if block > 1:
                band = block_reduce(band, block, func=np.nanmean).astype(np.float32)  # a partial block is dropped
            if band.size:
                stream.write(band)
    return blanks


def plane_bands(hdu: Any, multiple: int = 1) -> Iterator[np.ndarray]:
    """The 2-D plane of an image HDU (degenerate axes dropped) as float32, in bands of about ROW_BLOCK_BYTES, each
    of a multiple of ``multiple`` rows but the last. Read through astropy's sections, one band in memory at a time;
    open the file with memmap=False, else the pages read stay mapped into the process."""
    ny, nx = hdu.shape[-2:]
    rows = max(1, ROW_BLOCK_BYTES // (4 * nx * multiple)) * multiple
    lead = (0,) * (len(hdu.shape) - 2)
    for start in range(0, ny, rows):
        yield np.asarray(hdu.section[(*lead, slice(start, start + rows))], dtype=np.float32)


def _write_beam(
    header: fits.Header,
    out: fits.Header,
    override: tuple[float, float, float] | None,
    fallback: tuple[float, float, float] | None,
) -> list[str]:
    beam = _beam(header, [])
    if override is not None or (beam is None and fallback is not None):
        bmaj, bmin, bpa = override if override is not None else fallback
        out.update(BMAJ=bmaj / 3600.0, BMIN=bmin / 3600.0, BPA=bpa)
        source = "set by the options" if override is not None else "not in the header: the fallback options give"
        return [f'beam {source} {bmaj}" x {bmin}" at {bpa} deg']
    if beam is None:
        raise InvalidContent("no_beam", "the image header has no restoring beam (BMAJ/BMIN)")
    notes = []
    if beam.source == "history":
        notes.append(f'beam read from the HISTORY cards: {beam.bmaj_arcsec:.3f}" x {beam.bmin_arcsec:.3f}"')
    bpa = beam.bpa_deg
    if bpa is None:
        bpa = 0.0
        notes.append("no BPA in the header: a beam position angle of 0 deg is assumed")
    out.update(BMAJ=beam.bmaj_arcsec / 3600.0, BMIN=beam.bmin_arcsec / 3600.0, BPA=bpa)
    return notes
