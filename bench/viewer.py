"""Registration of the sky viewer: how far from its component the viewer draws each source, in Debian's chromium.

Injected-source images (a beam-shaped source every 250 pixels, 1.5" pixels, 6.5" beam) in NCP at Dec -40 (its
reference point 2 deg away, as on the ATCA fields), in AZP, and an 8192² one the viewer is given block-averaged and as
6 × 6 tiles (drawn whole, 3.4° as two triangles between its corners, it put sources 1.5° out 2.9" off zoomed in); each
run through sep, its job page opened, and each component's screen position compared with the centroid of the bright
pixels drawn around it (appliance.testing.viewer_registration), at the default zoom and zoomed in to a field of 4
beams (the 8192² one has a broad beam, which its default view's 25" pixels do not hide). The baseline, from the same
run, is a plain SIN image, which the viewer draws as written.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx

from appliance.testing import ServerProcess, make_grid_sky, viewer_registration

NCP_AT_DEC_MINUS_40 = {"CTYPE1": "RA---NCP", "CTYPE2": "DEC--NCP", "CRVAL1": 255.45, "CRVAL2": -38.6,
                       "CRPIX1": 3428.0, "CRPIX2": 3847.0}  # fmt: skip
AZP = {"CTYPE1": "RA---AZP", "CTYPE2": "DEC--AZP", "PV2_1": 2.0, "PV2_2": 30.0, "CRVAL2": -70.0}  # tilted
IMAGES = {  # name: size, spacing, beam FWHM (arcsec), header
    "SIN (baseline)": (1000, 250, 6.5, {}),
    "NCP at Dec -40": (1000, 250, 6.5, NCP_AT_DEC_MINUS_40),
    "AZP": (1000, 250, 6.5, AZP),
    # a broad beam: at the default zoom a screen pixel is 25", which would hide a 6.5" one
    "8192² SIN, block-averaged": (8192, 1024, 45.0, {}),
}
SEARCH_ARCSEC = 250.0  # farther than the worst misplacement, nearer than the next source (375")
ZOOMED_BEAMS = 4  # the field of view zoomed in
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-background-networking"]


def job_on(http: httpx.Client, path: Path) -> str:
    """A finished sep job on the image at ``path``."""
    file_uuid = http.put(f"/upload/{path.name}", content=path.read_bytes()).json()["uuid"]
    job_id = http.post("/job", json={"app": "sep", "data_inputs": file_uuid}).json()["job_id"]
    while (state := http.get(f"/job/{job_id}/status").json()["state"]) not in ("SUCCESS", "FAILURE", "ABORTED"):
        time.sleep(0.3)
    if state != "SUCCESS":
        raise RuntimeError(f"sep on {path.name} ended {state}: {http.get(f'/job/{job_id}/log').text[-2000:]}")
    return job_id


def measure(browser, server: ServerProcess, job_id: str, beam: float, name: str) -> dict:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.goto(server.login_url)
        page.goto(f"{server.url}/jobs/{job_id}")
        page.wait_for_function("window.__viewer && window.__viewer.image && window.__viewer.catalog", timeout=120000)
        shot = SCREENSHOTS / f"bench-viewer-{name}.png"
        return viewer_registration(page, max(SEARCH_ARCSEC, 2 * beam), ZOOMED_BEAMS * beam, shot)
    finally:
        context.close()


def run() -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory(prefix="caesar-bench-viewer-") as tmp:
        work = Path(tmp)
        with (
            ServerProcess(work / "home") as server,
            httpx.Client(base_url=server.api, headers=server.headers, timeout=600) as http,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            print(f"{'image':28} {'sources':>7} {'default zoom (″)':>17} {'zoomed in (″)':>14} "
                  f"{'× baseline':>16} {'screen px (″)':>13}")  # fmt: skip
            baseline = None
            for name, (size, spacing, beam, header) in IMAGES.items():
                label = name.split()[0].strip("²")
                path = work / f"{label}.fits"
                make_grid_sky(path, size, spacing, header=header, beam_arcsec=beam)
                figures = measure(browser, server, job_on(http, path), beam, label)
                path.unlink()
                baseline = baseline or figures
                ratio = (f"{figures['max_default'] / baseline['max_default']:.1f} / "
                         f"{figures['max_zoomed'] / baseline['max_zoomed']:.1f}")  # fmt: skip
                print(f"{name:28} {len(figures['default']):7d} {figures['max_default']:17.2f} "
                      f"{figures['max_zoomed']:14.3f} {ratio:>16} {figures['arcsec_per_screen_pixel']:13.2f}",
                      flush=True)  # fmt: skip
            browser.close()
            server.stop()
