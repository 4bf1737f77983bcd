"""A real `caesar-appliance serve` child process on a free port, for the end-to-end tests and the benchmarks."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from astropy.table import Table

API_PREFIX = "/caesar/api/v1.0"
_ERROR_LINE = re.compile(r"Traceback |\S+ \S+ (ERROR|CRITICAL) ")


class ServerProcess:
    """``command`` is what to run (default: this Python's ``caesar-appliance serve``; a built bundle for its tests);
    ``--home`` and ``--port 0`` are added. ``env`` adds to this process's environment, or replaces it when
    ``inherit_env`` is false."""

    def __init__(
        self,
        home: Path,
        *args: str,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        inherit_env: bool = True,
    ) -> None:
        self.home = home
        self.args = args
        self.command = command or [sys.executable, "-m", "appliance", "serve"]
        self.env = {**(os.environ if inherit_env else {}), **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.stderr = tempfile.TemporaryFile(mode="w+")

    @property
    def api(self) -> str:
        return self.url + API_PREFIX

    def start(self, timeout: float = 60) -> ServerProcess:
        """Start and wait until /health says ok; raises with the server's stderr if it does not get there."""
        self.process = subprocess.Popen(
            [*self.command, "--home", str(self.home), "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=self.env,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        match = re.search(r"serving (http://\S+)", line)
        if not match:
            self.process.wait(timeout)
            raise RuntimeError(f"the appliance did not start (exit {self.process.returncode}): {self.errors()}")
        self.url = match.group(1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.api + "/health", timeout=2) as reply:
                    if json.load(reply)["ok"]:
                        return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the appliance did not become healthy: {self.errors()}")

    @property
    def token(self) -> str:
        """The API token the appliance made in its home folder."""
        return (self.home / "api-token").read_text().strip()

    @property
    def login_url(self) -> str:
        """A new login link to the dashboard (a link logs in once), as a second launch asks for it."""
        request = urllib.request.Request(self.api + "/login-link", method="POST", headers=self.headers)
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.load(reply)["login"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def logged_errors(self) -> list[str]:
        """The lines of stderr that log an error or start a traceback (a request's text never starts a line)."""
        return [line for line in self.errors().splitlines() if _ERROR_LINE.match(line)]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``signum`` and wait for the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        self.stderr.close()


def make_sky(
    path: Path,
    size: int = 256,
    n_sources: int = 20,
    *,
    seed: int = 20261128,
    noise_jy: float = 1e-4,
    snr_range: tuple[float, float] = (8.0, 200.0),
    snr_slope: float | None = None,
    beam_arcsec: tuple[float, float, float] = (6.5, 5.5, 30.0),
    pixel_arcsec: float = 1.5,
    center_deg: tuple[float, float] = (150.0, -30.0),
) -> Table:
    """Write a synthetic radio image with known point sources and return the truth table.

    Beam-shaped point sources (peak SNR log-uniform in ``snr_range``, or dN/dS ∝ S^snr_slope when given, at least
    4 beams apart and 12 px from the edges) on Gaussian noise correlated on the beam scale and rescaled to ``noise_jy``; SIN projection; the header
    carries BUNIT, the beam and a 1.4 GHz frequency. Truth columns: x, y (0-based pixels), ra, dec (deg), peak_flux
    (Jy/beam), int_flux (Jy; equal to the peak for a point source), snr.
    """
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    bmaj, bmin, bpa = beam_arcsec
    fwhm_to_sigma = 1 / (2 * np.sqrt(2 * np.log(2)))
    sig_major, sig_minor = bmaj / pixel_arcsec * fwhm_to_sigma, bmin / pixel_arcsec * fwhm_to_sigma

    noise = gaussian_filter(rng.standard_normal((size, size)), sigma=0.5 * np.sqrt(sig_major * sig_minor))
    image = noise / noise.std() * noise_jy

    positions: list[tuple[float, float]] = []
    min_sep = 4 * bmaj / pixel_arcsec
    while len(positions) < n_sources:
        x, y = rng.uniform(12, size - 13, 2)
        if all((x - px) ** 2 + (y - py) ** 2 >= min_sep**2 for px, py in positions):
            positions.append((x, y))
    low, high = snr_range
    if snr_slope is None:
        snr = np.exp(rng.uniform(np.log(low), np.log(high), n_sources))
    else:  # inverse of the cumulative distribution of a power law
        k = snr_slope + 1.0
        snr = (rng.uniform(0, 1, n_sources) * (high**k - low**k) + low**k) ** (1.0 / k)
    peaks = snr * noise_jy

    # position angle is east of north; with RA increasing to the left, the major axis makes an angle of
    # (90 deg + bpa) with the +x pixel axis
    theta = np.deg2rad(90.0 + bpa)
    half = int(np.ceil(6 * sig_major))  # the Gaussian is drawn within 6 sigma of its centre
    for (x, y), peak in zip(positions, peaks, strict=True):
        x0, y0 = int(round(x)), int(round(y))
        ys, xs = slice(max(0, y0 - half), y0 + half + 1), slice(max(0, x0 - half), x0 + half + 1)
        yy, xx = np.mgrid[ys, xs]
        dx, dy = xx - x, yy - y
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        image[ys, xs] += peak * np.exp(-0.5 * ((u / sig_major) ** 2 + (v / sig_minor) ** 2))

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = list(center_deg)
    wcs.wcs.crpix = [size / 2 + 1, size / 2 + 1]
    wcs.wcs.cdelt = [-pixel_arcsec / 3600, pixel_arcsec / 3600]
    wcs.wcs.radesys = "ICRS"
    header = wcs.to_header()
    header.update(BUNIT="JY/BEAM", BMAJ=bmaj / 3600, BMIN=bmin / 3600, BPA=bpa, RESTFRQ=1.4e9, OBJECT="synthetic")
    fits.PrimaryHDU(image.astype(np.float32), header=header).writeto(path, overwrite=True)

    xs = np.array([p[0] for p in positions])
    ys = np.array([p[1] for p in positions])
    sky = wcs.pixel_to_world(xs, ys)
    return Table(
        {
            "x": xs,
            "y": ys,
            "ra": sky.ra.deg,
            "dec": sky.dec.deg,
            "peak_flux": peaks,
            "int_flux": peaks,
            "snr": snr,
        }
    )


def score_against_truth(found: Table, truth: Table, radius_arcsec: float, snr_min: float = 5.0) -> dict[str, float]:
    """Completeness: the fraction of truth sources with SNR >= ``snr_min`` that have a detection within the
    radius. Reliability: the fraction of detections within the radius of any truth source. Flux and peak ratios
    (median, with the 16th and 84th percentiles of the flux ratio) and the median offset over those matches."""
    import numpy as np
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    if not len(found):
        return {"detections": 0, "completeness": 0.0, "reliability": 0.0}
    detected = SkyCoord(np.asarray(found["ra"]), np.asarray(found["dec"]), unit="deg")
    true = SkyCoord(np.asarray(truth["ra"]), np.asarray(truth["dec"]), unit="deg")
    index, separation, _ = true.match_to_catalog_sky(detected)
    bright = np.asarray(truth["snr"]) >= snr_min
    matched = (separation < radius_arcsec * u.arcsec) & bright
    _, back, _ = detected.match_to_catalog_sky(true)
    flux = np.asarray(found["int_flux"])[index[matched]] / np.asarray(truth["int_flux"])[matched]
    peak = np.asarray(found["peak_flux"])[index[matched]] / np.asarray(truth["peak_flux"])[matched]
    return {
        "detections": len(found),
        "completeness": float(matched.sum() / bright.sum()),
        "reliability": float((back < radius_arcsec * u.arcsec).mean()),
        "flux_ratio": float(np.median(flux)),
        "flux_ratio_p16": float(np.percentile(flux, 16)),
        "flux_ratio_p84": float(np.percentile(flux, 84)),
        "peak_ratio": float(np.median(peak)),
        "offset_arcsec": float(np.median(separation[matched].to_value(u.arcsec))),
    }


def populate(server: ServerProcess, folder: Path) -> dict[str, list[str]]:
    """Give a running appliance something to serve, through its API: images (one gzipped), finished jobs with all
    their products, a cancelled job, comparisons (one with a catalog file). Returns the ids by kind ("file", "job", "comparison", "job_file");
    the last of each kind of file and job is a spare that a fuzzer may delete."""
    import gzip

    import httpx

    folder.mkdir(parents=True, exist_ok=True)
    sky = folder / "sky.fits"
    truth = make_sky(sky, size=128, n_sources=5)
    published = folder / "published.csv"
    truth["ra", "dec", "int_flux"][1:].write(published, format="ascii.csv", overwrite=True)
    packed = folder / "sky.fits.gz"
    packed.write_bytes(gzip.compress(sky.read_bytes()))
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=120) as api:

        def answer(reply: httpx.Response, status: int = 200) -> dict[str, Any]:
            if reply.status_code != status:
                raise RuntimeError(f"{reply.request.method} {reply.request.url}: {reply.status_code} {reply.text}")
            return reply.json()

        def job(file_uuid: str, **job_inputs: object) -> str:
            body = {"app": "sep", "data_inputs": file_uuid, "job_inputs": job_inputs, "tag": "fuzz"}
            return answer(api.post("/job", json=body), 202)["job_id"]

        image = answer(api.post("/upload", files={"file": (sky.name, sky.read_bytes())}, data={"tag": "fuzz"}))["uuid"]
        gzipped = answer(api.put(f"/upload/{packed.name}", content=packed.read_bytes()))["uuid"]
        spare_file = answer(api.put("/upload/spare.fits", content=sky.read_bytes()))["uuid"]
        finished = [job(image), job(image, seedthr=6.0), job(gzipped), job(spare_file)]
        cancelled = job(image)
        answer(api.post(f"/job/{cancelled}/cancel"))
        deadline = time.monotonic() + 300
        for job_id in finished:
            while (state := answer(api.get(f"/job/{job_id}/status"))["state"]) in ("PENDING", "STARTED", "RUNNING"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} did not end in 300 s")
                time.sleep(0.1)
            if state != "SUCCESS":
                raise RuntimeError(f"job {job_id} ended {state}: {api.get(f'/job/{job_id}/log').text}")
        with_catalog = api.post(
            "/compare/catalog", data={"job": finished[0]}, files={"catalog": (published.name, published.read_bytes())}
        )
        comparisons = [
            answer(with_catalog, 201)["compare_id"],
            *(
                answer(api.post("/compare", json={"jobs": pair}), 201)["compare_id"]
                for pair in (finished[:2], finished[1::-1])
            ),
        ]
        job_files = [entry["name"] for entry in answer(api.get(f"/job/{finished[0]}/files"))]
    return {
        "file": [image, gzipped, spare_file],
        "job": [*finished[:3], cancelled, finished[3]],
        "comparison": comparisons,
        "job_file": job_files,
    }


FUZZ_CHECKS = (
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
)
# operations that delete or cancel what they name get only the spare ids, so that the others stay for the rest
_DESTRUCTIVE = ({"include-method": "DELETE"}, {"include-path-regex": "/delete/|/cancel$"})


def fuzz_config(server: ServerProcess, ids: dict[str, list[str]], max_examples: int, stateful: bool) -> dict[str, Any]:
    """A schemathesis configuration (the dict form of schemathesis.toml) for the API of ``server``, authenticated,
    with the checks a truthful OpenAPI must pass, and the ids ``populate`` made mixed into the generated ones."""
    values = {
        "file_uuid": ids["file"][:-1],
        "job_id": ids["job"][:-1],
        "compare_id": ids["comparison"][:-1],
        "name": ids["job_file"],
        "spare_file_uuid": ids["file"][-1:],
        "spare_job_id": ids["job"][-1:],
        "spare_compare_id": ids["comparison"][-1:],
    }

    def bound(*names: str, prefix: str = "") -> dict[str, Any]:
        return {f"path.{name}": {"dictionary": prefix + name, "probability": 0.5} for name in names}

    return {
        "base-url": server.url,
        "headers": server.headers,
        "generation": {"mode": "all", "max-examples": max_examples, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in FUZZ_CHECKS}},
        "phases": {"stateful": {"enabled": stateful}},
        "request-timeout": 60,
        "dictionaries": {name: {"values": listed} for name, listed in values.items()},
        "parameters": bound("file_uuid", "job_id", "compare_id", "name"),
        "operations": [
            {**selection, "parameters": bound("file_uuid", "job_id", "compare_id", prefix="spare_")}
            for selection in _DESTRUCTIVE
        ],
    }


def make_grid_sky(
    path: Path,
    size: int = 1000,
    spacing: int = 200,
    *,
    header: dict[str, Any] | None = None,
    peak_jy: float = 0.05,
    noise_jy: float = 1e-4,
    beam_arcsec: float = 6.5,
    pixel_arcsec: float = 1.5,
) -> Table:
    """A size² image with a beam-shaped source every ``spacing`` pixels (far enough apart that a misplaced one is
    not taken for its neighbour) on white noise, SIN at (150, -30) unless ``header`` says otherwise (its keys
    replace the WCS and add to the rest). Written a band of rows at a time, so that a large one fits in memory.
    Returns the truth: x, y (0-based pixels), ra, dec (deg)."""
    import numpy as np
    from astropy.io import fits

    from appliance.fitsimage import celestial_wcs

    sigma = beam_arcsec / pixel_arcsec / (2 * np.sqrt(2 * np.log(2)))
    centres = np.arange(spacing / 2, size, spacing) + 0.3  # off the pixel centres
    out = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", size), ("NAXIS2", size)])
    out.update(CTYPE1="RA---SIN", CTYPE2="DEC--SIN", CRVAL1=150.0, CRVAL2=-30.0, CRPIX1=size / 2 + 1,
               CRPIX2=size / 2 + 1, CDELT1=-pixel_arcsec / 3600, CDELT2=pixel_arcsec / 3600, RADESYS="ICRS",
               BUNIT="JY/BEAM", BMAJ=beam_arcsec / 3600, BMIN=beam_arcsec / 3600, BPA=0.0)  # fmt: skip
    out.update(header or {})
    rng = np.random.default_rng(11)
    rows = max(1, (8 << 20) // (4 * size))
    with fits.StreamingHDU(path, out) as stream:
        for top in range(0, size, rows):
            y, x = np.mgrid[top : min(top + rows, size), 0:size]
            band = rng.normal(0.0, noise_jy, x.shape).astype(np.float32)
            near_y = centres[np.abs(centres[:, None] - y[:, 0][None, :]).min(axis=1) < 6 * sigma]
            for cy in near_y:
                dy2 = (y - cy) ** 2
                nearest_x = centres[np.abs(centres[None, :] - x[0][:, None]).argmin(axis=1)]
                band += (peak_jy * np.exp(-(dy2 + (x - nearest_x[None, :]) ** 2) / (2 * sigma**2))).astype(np.float32)
            stream.write(band)
    x, y = (a.ravel() for a in np.meshgrid(centres, centres))
    ra, dec = celestial_wcs(out).all_pix2world(x, y, 0)
    return Table({"x": x, "y": y, "ra": ra, "dec": dec})


# Run in the page: the viewer shows the image alone, linear grey from 0 to 0.9 of the faintest measured component's
# peak (brighter ones saturate, evenly around their centre).
_BARE_VIEW = """(ids) => {
    const v = window.caesarViewer;
    v.catalog.hide(); v.ring.hide();
    v.image.setColormap("grayscale", {stretch: "linear"});
    const measured = v.catalog.getSources().filter((s) => ids === null || ids.includes(String(s.data.component_id)));
    v.image.setCuts(0, 0.9 * Math.min(...measured.map((s) => +s.data.peak_flux)));
}"""
_POSITIONS = """() => {
    const v = window.caesarViewer, rect = v.aladin.getParentDiv().getBoundingClientRect();
    return v.catalog.getSources().map((s) => {
        const p = v.screenPosition(s.data.component_id);
        return {id: String(s.data.component_id), ra: s.ra, dec: s.dec, x: p.x - rect.left, y: p.y - rect.top};
    });
}"""
_FRAME = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 150))))"


def viewer_registration(
    page, search_arcsec: float, zoom_fov_arcsec: float, shot: Path | None = None, ids: list[str] | None = None
) -> dict[str, Any]:
    """How far from each component the sky viewer on ``page`` (a job page with its viewer ready) draws the component's
    source: the separation (arcsec) between the component's position and the sky position, as the viewer gives it,
    of the centroid of the bright pixels the viewer draws within ``search_arcsec`` of the component's screen
    position (window.caesarViewer.screenPosition). Measured at the default zoom, then zoomed in on each to a field of
    ``zoom_fov_arcsec``. Returns the separations by component id, each kind's maximum, and the view's scale; the
    default view, bare, is saved to ``shot`` when given. ``ids``: only these components."""
    import io

    import numpy as np
    from astropy.coordinates import SkyCoord
    from PIL import Image
    from scipy import ndimage

    viewer = page.locator("#viewer")
    viewer.scroll_into_view_if_needed()
    page.evaluate(_BARE_VIEW, ids)
    page.evaluate(_FRAME)
    width = page.evaluate("window.caesarViewer.aladin.getParentDiv().clientWidth")
    fov = page.evaluate("window.caesarViewer.aladin.getFov()[0]") * 3600.0
    height = page.evaluate("window.caesarViewer.aladin.getParentDiv().clientHeight")
    components = [c for c in page.evaluate(_POSITIONS) if ids is None or c["id"] in ids]
    if shot is not None:
        shot.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(path=str(shot))

    def settled(viewer) -> np.ndarray:
        """The viewer's picture once two in a row, 0.1 s apart, are the same: the viewer has drawn the change."""
        last = None
        for _ in range(50):
            shot = np.asarray(Image.open(io.BytesIO(viewer.screenshot())).convert("L"), dtype=float)
            if last is not None and np.array_equal(shot, last):
                return shot
            last = shot
            page.wait_for_timeout(100)
        return last

    def drawn_at(x: float, y: float, radius_px: float) -> tuple[float, float] | None:
        """The centroid (screen pixels in the viewer) of the bright blob drawn nearest to (x, y) within radius_px."""
        shot = settled(viewer)
        y0, x0 = max(0, int(y - radius_px)), max(0, int(x - radius_px))
        part = shot[y0 : int(y + radius_px) + 1, x0 : int(x + radius_px) + 1]
        if not part.size or part.max() < 64:
            return None
        weight = np.clip(part - 0.5 * part.max(), 0, None)
        labels, count = ndimage.label(weight > 0)
        centres = np.array(ndimage.center_of_mass(weight, labels, range(1, count + 1)))
        row, col = centres[np.argmin(np.hypot(centres[:, 0] + y0 - y, centres[:, 1] + x0 - x))]
        return col + x0 + 0.5, row + y0 + 0.5  # a screen pixel's centre is half a pixel from its corner

    def sky(point: tuple[float, float]) -> SkyCoord:
        ra, dec = page.evaluate(f"window.caesarViewer.aladin.pix2world({point[0]}, {point[1]})")
        return SkyCoord(ra, dec, unit="deg")

    default, zoomed, drawn = {}, {}, {}
    for c in components:
        found = drawn_at(c["x"], c["y"], search_arcsec / fov * width)
        drawn[c["id"]] = sky(found) if found else None
        default[c["id"]] = SkyCoord(c["ra"], c["dec"], unit="deg").separation(drawn[c["id"]]).arcsec if found else None
    for c in components:
        if drawn[c["id"]] is None:
            zoomed[c["id"]] = None
            continue
        page.evaluate(f"window.caesarViewer.aladin.gotoRaDec({drawn[c['id']].ra.deg}, {drawn[c['id']].dec.deg})")
        page.evaluate(f"window.caesarViewer.aladin.setFoV({zoom_fov_arcsec / 3600.0})")
        page.evaluate(_FRAME)
        found = drawn_at(width / 2, height / 2, min(width, height) / 2)
        zoomed[c["id"]] = SkyCoord(c["ra"], c["dec"], unit="deg").separation(sky(found)).arcsec if found else None

    def worst(errors: dict[str, float | None]) -> float:  # a source not seen at all counts as infinitely far
        return max((math.inf if e is None else e for e in errors.values()), default=math.nan)

    return {"default": default, "zoomed": zoomed, "max_default": worst(default), "max_zoomed": worst(zoomed),
            "arcsec_per_screen_pixel": fov / width}  # fmt: skip
