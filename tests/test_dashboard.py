"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a real appliance process:
upload through the page, a job through the generated form, SUCCESS arriving live, the sky viewer with its
ellipses, a click selecting the catalog row, and no request leaving the machine. Screenshots of the main pages
go to test-artifacts/screenshots/."""

from __future__ import annotations

import functools
import http.server as http_server
import json
import math
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.testing import ServerProcess, make_sky
from tests.conftest import API, LONG_JOB, REPO, upload_file

pytestmark = pytest.mark.e2e  # the browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("dash") / "home") as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the dashboard tests: ./manage test installs it (apt chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A page whose every request to a host other than the appliance is blocked and recorded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    outside: list[str] = []
    local = re.compile(rf"^{re.escape(server.url)}(/|$)")

    def guard(route):
        if local.match(route.request.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.goto(server.login_url)
    page.outside = outside
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors
    yield page
    context.close()
    assert outside == [], f"requests left the machine: {outside[:5]}"


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def sky_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("browser-sky") / "browser-sky.fits"
    make_sky(path, size=256, n_sources=20)
    return path


def test_upload_run_and_inspect_a_job_in_the_browser(page, server, sky_image):
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    expect(page.locator("h1")).to_have_text("Overview")
    shoot(page, "overview-empty")

    # upload through the page: the file input sends it with a progress bar
    page.goto(server.url + "/files")
    page.set_input_files("#file-input", str(sky_image))
    ready = page.locator("#uploads li.done a")
    expect(ready).to_have_text(re.compile(r"ready: 256 × 256"), timeout=30000)
    expect(page.locator("#files-table")).to_contain_text("browser-sky.fits")
    assert page.locator("#uploads progress").evaluate("p => p.value === p.max")
    shoot(page, "files")

    # the file page: header summary, quicklook, and the form generated from aegean's schema
    ready.click()
    expect(page.locator("h1")).to_have_text("browser-sky.fits")
    expect(page.locator("table.facts")).to_contain_text("6.50″ × 5.50″")
    expect(page.locator("#opt-seedthr")).to_have_value("5.0")
    assert page.locator("#opt-ncores").get_attribute("max") == "100"
    assert page.locator("#opt-save-bkgmap").get_attribute("type") == "checkbox"
    page.wait_for_function("document.querySelector('img.quicklook').complete")
    shoot(page, "file")

    # invalid values come back next to their field, without leaving the page
    page.fill("#opt-seedthr", "2")
    page.fill("#opt-mergethr", "3")
    page.click("#run-form button[type=submit]")
    expect(page.locator("#err-mergethr")).to_contain_text("must be below seedthr")
    expect(page.locator(".field.invalid #opt-mergethr")).to_have_count(1)

    # a valid run goes to the job page, which follows the job live
    page.fill("#opt-seedthr", "5")
    page.fill("#opt-mergethr", "2.6")
    page.fill("#opt-ncores", "2")
    page.click("#run-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#job-state")).to_have_text("SUCCESS", timeout=120000)
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded instead of updating live"
    expect(page.locator("#job-log")).to_contain_text("SUCCESS")

    # the viewer shows the image and every component as an ellipse; a click inside one selects its row
    page.wait_for_function("window.__viewer && window.__viewer.image && window.__viewer.catalog", timeout=60000)
    assert page.evaluate("window.__viewer.sources") == 20
    assert page.evaluate("window.__viewer.error") is None
    expect(page.locator("table.catalog tbody tr")).to_have_count(20)
    target = page.locator("table.catalog tbody tr").nth(3).get_attribute("data-component")
    page.locator("#viewer").scroll_into_view_if_needed()
    position = page.evaluate(f"window.caesarViewer.screenPosition({target})")
    page.mouse.click(position["x"], position["y"])
    expect(page.locator(f'table.catalog tr.selected[data-component="{target}"]')).to_have_count(1)
    assert page.evaluate("window.__viewer.selected") == target  # ringed in the viewer
    # and selecting a row selects it in the viewer, with the mouse or the keyboard
    other = page.locator("table.catalog tbody tr").nth(0)
    other.click()
    expect(other).to_have_class(re.compile("selected"))
    assert page.evaluate("window.caesarViewer.catalog.getSources().filter(s => s.isSelected).length") == 1
    third = page.locator("table.catalog tbody tr").nth(2)
    third.focus()
    page.keyboard.press("Enter")
    expect(third).to_have_class(re.compile("selected"))
    assert page.evaluate("window.__viewer.selected") == third.get_attribute("data-component")
    shoot(page, "job")

    # cuts, stretch and colours, with a colour bar in the image's unit
    page.wait_for_function("window.__viewer.display", timeout=30000)
    controls = page.locator("form.viewer-controls")
    assert page.evaluate("window.__viewer.display.stretch") == "asinh"
    assert controls.locator("[data-unit]").inner_text() == "mJy/beam"
    controls.locator("select[name=cuts]").select_option("zscale")
    controls.locator("select[name=stretch]").select_option("sqrt")
    controls.locator("select[name=colormap]").select_option("viridis")
    display = page.evaluate("window.__viewer.display")
    assert display["stretch"] == "sqrt" and display["colormap"] == "viridis" and display["low"] < display["high"]
    assert page.evaluate("window.caesarViewer.image.getCuts()") == pytest.approx([display["low"], display["high"]])
    assert "viridis" in controls.locator(".colorbar img").get_attribute("src")
    assert controls.locator(".colorbar img").evaluate("img => img.complete && img.naturalWidth") == 256
    ticks = [float(t) for t in controls.locator("[data-tick]").all_inner_texts()]
    assert ticks[0] == pytest.approx(display["low"] * 1e3, rel=1e-2) and ticks == sorted(ticks)
    controls.locator("input[name=high]").fill(str(display["high"] / 2))
    controls.locator("input[name=high]").dispatch_event("change")
    assert controls.locator("select[name=cuts]").input_value() == "custom"
    assert page.evaluate("window.__viewer.display.high") == pytest.approx(display["high"] / 2, rel=1e-5)
    shoot(page, "job-viridis")
    # the residual image (the Gaussians taken out) as a layer with its own cuts; the image keeps its own
    controls.locator("select[name=layer]").select_option("residual")
    page.wait_for_function("window.__viewer.display.layer === 'residual'", timeout=30000)
    residual = page.evaluate("window.__viewer.display")
    assert residual["stretch"] == "asinh" and residual["high"] < display["high"] / 2
    shoot(page, "job-residual")
    controls.locator("select[name=layer]").select_option("image")
    page.wait_for_function("window.__viewer.display.layer === 'image'", timeout=30000)
    assert page.evaluate("window.__viewer.display.high") == pytest.approx(display["high"] / 2, rel=1e-5)
    assert page.evaluate("window.__viewer.display.colormap") == "viridis"

    # the catalog table sorts (here by RA ascending) without leaving the page
    page.click("table.catalog th a:text-is('RA')")
    page.wait_for_timeout(300)
    page.click("table.catalog th a:text-matches('^RA')")
    expect(page.locator("table.catalog th[aria-sort=ascending]")).to_contain_text("RA")
    ras = [float(t.rstrip("°")) for t in page.locator("table.catalog tbody tr td:nth-child(3) small").all_inner_texts()]
    assert ras == sorted(ras)

    page.goto(server.url + "/jobs")
    expect(page.locator("#jobs-table")).to_contain_text("SUCCESS")
    shoot(page, "jobs")
    page.goto(server.url + "/apps")
    expect(page.locator("#app-caesar")).to_contain_text("not available")
    shoot(page, "apps")
    page.goto(server.url + "/")
    shoot(page, "overview")
    assert page.js_errors == []


def test_files_dropped_on_the_page_upload(page, server, tmp_path):
    import base64

    from playwright.sync_api import expect

    from tests.conftest import write_image

    dropped = write_image(tmp_path / "dropped.fits", shape=(48, 64))
    page.goto(server.url + "/files")
    payload = base64.b64encode(dropped.read_bytes()).decode()
    page.evaluate(
        """payload => {
            const bytes = Uint8Array.from(atob(payload), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.fits"));
            document.getElementById("upload-form").dispatchEvent(
                new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        payload,
    )
    expect(page.locator("#uploads li.done a")).to_have_text("ready: 64 × 48", timeout=30000)
    expect(page.locator("#files-table")).to_contain_text("dropped.fits")

    # a refused upload: its bar turns red, with the reason beside it
    page.set_input_files("#file-input", files=[{"name": "notes.fits", "mimeType": "application/fits",
                                                "buffer": b"not a FITS file" * 300}])  # fmt: skip
    refused = page.locator("#uploads li.failed")
    expect(refused.locator(".error")).to_contain_text("the file is not FITS", timeout=30000)
    red = refused.locator("progress").evaluate("bar => getComputedStyle(bar).accentColor")
    assert (
        red == "rgb(179, 38, 30)"
        and page.locator("#uploads li.done progress").evaluate("bar => getComputedStyle(bar).accentColor") != red
    )


def test_deleting_a_file_a_job_uses_says_which_jobs(page, server, slow_sky):
    from playwright.sync_api import expect

    with httpx.Client(base_url=server.api, headers=server.headers, timeout=60) as api:
        file_uuid = api.post("/upload", files={"file": ("busy.fits", slow_sky.read_bytes())}).json()["uuid"]
        job = api.post("/job", json={"app": "aegean", "job_inputs": LONG_JOB, "data_inputs": file_uuid}).json()
        try:
            page.goto(server.url + "/files")
            page.once("dialog", lambda dialog: dialog.accept())
            page.locator("tr", has_text="busy.fits").get_by_role("link", name="Delete").click()
            alert = page.get_by_role("alert")
            expect(alert).to_contain_text("busy.fits is used by 1 job(s) that have not ended: aegean submitted 20")
            assert job["job_id"] not in alert.inner_text()
            expect(page.locator("#files-table")).to_contain_text("busy.fits")
        finally:
            api.post(f"/job/{job['job_id']}/cancel")


def test_jobs_list_updates_live(page, server, sky_image):
    from playwright.sync_api import expect

    page.goto(server.url + "/jobs")
    page.evaluate("window.__sameDocument = true")
    with httpx.Client(base_url=server.api, headers=server.headers) as http:
        file_uuid = http.post("/upload", files={"file": ("live.fits", sky_image.read_bytes())}).json()["uuid"]
        job_id = http.post("/job", json={"app": "sep", "data_inputs": file_uuid, "tag": "live"}).json()["job_id"]
    row = page.locator(f'#jobs-table tr:has(a[href="/jobs/{job_id}"])')
    expect(row).to_contain_text("SUCCESS", timeout=60000)
    assert page.evaluate("window.__sameDocument") is True


def test_pages_read_without_javascript(browser, server):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(server.login_url)
    for path, heading in (("/", "Overview"), ("/files", "Files"), ("/jobs", "Jobs"), ("/apps", "Apps")):
        page.goto(server.url + path)
        assert page.locator("h1").inner_text() == heading
    page.goto(server.url + "/jobs")
    page.locator("#jobs-table a").first.click()
    assert page.locator("#job-state").inner_text() in ("SUCCESS", "FAILURE")
    assert "catalog" in page.locator("#results").inner_text().lower()
    context.close()


def test_large_image_in_the_viewer(page, server, tmp_path):
    """An 8192² image (256 MB) is shown through a 4096² block-averaged copy; the time to show it is printed."""
    big = tmp_path / "big8192.fits"
    make_sky(big, size=8192, n_sources=200, seed=5)
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=300) as http:
        file_uuid = http.put("/upload/big8192.fits", content=big.read_bytes()).json()["uuid"]
        job_id = http.post("/job", json={"app": "sep", "data_inputs": file_uuid}).json()["job_id"]
        deadline = time.monotonic() + 300
        while http.get(f"/job/{job_id}/status").json()["state"] not in ("SUCCESS", "FAILURE"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        http.get(f"{server.url}/files/{file_uuid}/view.fits")  # made once, then cached
    started = time.monotonic()
    page.goto(f"{server.url}/jobs/{job_id}")
    page.wait_for_function("window.__viewer && window.__viewer.image && window.__viewer.catalog", timeout=120000)
    seconds = time.monotonic() - started
    sources = page.evaluate("window.__viewer.sources")
    print(f"\nviewer: 8192² image (shown as its 4096² block average) with {sources} ellipses in {seconds:.1f} s")
    assert sources >= 150 and page.evaluate("window.__viewer.error") is None
    shoot(page, "job-8192")


def test_a_page_on_another_port_cannot_act_through_the_session(browser, server, slow_sky, tmp_path):
    """Logged in to the dashboard, the user visits a page another local server serves (same site for the browser,
    so SameSite does not help): its images, form and fetch aim at caesar-rest's GET delete and cancel routes and
    the POST ones. The file and the running job are untouched; a script with the token still has the GET forms."""
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as http:
        file_uuid = upload_file(http, slow_sky)
        job_id = http.post(
            f"{API}/job", json={"app": "aegean", "job_inputs": LONG_JOB, "data_inputs": file_uuid}
        ).json()["job_id"]
        api = server.api
        attack = (
            f'<img src="{api}/delete/{file_uuid}"><img src="{api}/job/{job_id}/cancel">'
            f'<form method="post" action="{api}/job/{job_id}/cancel"><button>See more cats</button></form>'
            f"<script>fetch('{api}/delete/{file_uuid}', {{method: 'POST', mode: 'no-cors', credentials: 'include'}})"
            "</script>"
        )
        (tmp_path / "index.html").write_text(f"<!doctype html><title>cat pictures</title>{attack}")
        handler = functools.partial(http_server.SimpleHTTPRequestHandler, directory=str(tmp_path))
        other = http_server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=other.serve_forever, daemon=True).start()
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(server.login_url)
            assert page.locator("h1").inner_text() == "Overview"
            page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
            page.wait_for_load_state("networkidle")
            with page.expect_response(f"{api}/job/{job_id}/cancel") as clicked:
                page.get_by_role("button").click()  # the user is tricked into sending the form
            assert clicked.value.status == 403
            refused = [
                (entry["message"], entry.get("http_status"))
                for entry in map(json.loads, (server.home / "logs" / "appliance.log").read_text().splitlines())
                if file_uuid in entry["message"] or f"/job/{job_id}/cancel" in entry["message"]
            ]
            assert sorted(refused) == sorted([
                (f"GET {API}/delete/{file_uuid} 403", 403), (f"POST {API}/delete/{file_uuid} 403", 403),
                (f"GET {API}/job/{job_id}/cancel 403", 403), (f"POST {API}/job/{job_id}/cancel 403", 403),
            ])  # fmt: skip
            assert http.get(f"{API}/file/{file_uuid}").status_code == 200
            assert http.get(f"{API}/job/{job_id}/status").json()["state"] in ("PENDING", "STARTED", "RUNNING")
            # the user's own page still acts with the cookie
            page.goto(f"{server.url}/jobs/{job_id}")
            assert page.locator("h1").count() == 1
        finally:
            context.close()
            other.shutdown()
        cancel = http.get(f"{API}/job/{job_id}/cancel")  # caesar-rest's GET form, with the token
        assert cancel.status_code == 200 and cancel.json()["state"] in ("CANCELING", "CANCELED")
        deadline = time.monotonic() + 30
        while http.get(f"{API}/job/{job_id}/status").json()["state"] != "CANCELED":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert http.get(f"{API}/delete/{file_uuid}").status_code == 200


# the pixels of the catalog layer around a position, counted by which of the given colours each is close to
COUNT_COLOURS_AT = """([ra, dec, colours]) => {
  const viewer = window.caesarViewer, canvas = viewer.aladin.view.catalogCanvas;
  const scale = canvas.width / canvas.clientWidth, [x, y] = viewer.aladin.world2pix(ra, dec), r = Math.round(12 * scale);
  const data = canvas.getContext("2d").getImageData(Math.round(x * scale) - r, Math.round(y * scale) - r, 2 * r + 1,
                                                    2 * r + 1).data;
  const counts = colours.map(() => 0);
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] < 200) continue;
    colours.forEach((c, k) => {
      if (Math.abs(data[i] - c[0]) + Math.abs(data[i + 1] - c[1]) + Math.abs(data[i + 2] - c[2]) < 60) counts[k]++;
    });
  }
  return counts;
}"""


def test_a_job_compared_with_a_published_catalog_in_the_browser(page, server, tmp_path):
    """From a job page to a comparison with a catalog file: each class is drawn in its own colour where its sources
    are, the legend and the plots show, and the comparison is deleted from the list."""
    import numpy as np
    from astropy.coordinates import SkyCoord
    from playwright.sync_api import expect

    from appliance.compare import CLASSES, COLOURS
    from tests.conftest import published_catalog

    field = tmp_path / "compared.fits"
    truth = make_sky(field, size=256, n_sources=20, seed=11)
    published, where, off_image = published_catalog(field, truth)
    catalog = tmp_path / "published.vot"
    published.write(catalog, format="votable")
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=60) as api:
        file_uuid = api.post("/upload", files={"file": (field.name, field.read_bytes())}).json()["uuid"]
        job_id = api.post("/job", json={"app": "sep", "data_inputs": file_uuid}).json()["job_id"]
        deadline = time.monotonic() + 120
        while api.get(f"/job/{job_id}/status").json()["state"] != "SUCCESS":
            assert time.monotonic() < deadline
            time.sleep(0.2)

    page.goto(f"{server.url}/jobs/{job_id}")
    page.get_by_role("link", name="Compare with another job or a published catalog").click()
    expect(page.locator("#cmp-job")).to_have_value(job_id)
    page.set_input_files("#cmp-catalog", str(catalog))
    page.click("#compare-form button[type=submit]")
    page.wait_for_url(re.compile(r"/comparisons/[0-9a-f-]{36}$"))
    for cls, positions in where.items():
        expect(page.locator(f'[data-count="{cls}"]')).to_have_text(str(len(positions)))
    expect(page.locator("table.facts")).to_contain_text(f"{len(published)}, of which {off_image} outside the image")

    page.wait_for_function("window.__viewer && window.__viewer.image && window.__viewer.catalog", timeout=60000)
    assert page.evaluate("window.__viewer.error") is None
    drawn = page.evaluate(
        "() => Object.fromEntries(Object.entries(window.caesarViewer.catalogs).map(([name, c]) => "
        "[name, {color: c.color, positions: c.getSources().map(s => [s.ra, s.dec])}]))"
    )
    assert set(drawn) == set(CLASSES)
    for cls, positions in where.items():
        assert drawn[cls]["color"] == COLOURS[cls] and len(drawn[cls]["positions"]) == len(positions), cls
        shown = SkyCoord(np.array(drawn[cls]["positions"]), unit="deg")
        _, separation, _ = shown.match_to_catalog_sky(SkyCoord(positions, unit="deg"))
        assert (separation.arcsec < 1.0).all(), (cls, separation.arcsec)

    # on the screen: around every source, pixels of its class's colour and of no other
    page.locator("#viewer").scroll_into_view_if_needed()
    rgb = [[int(COLOURS[cls][i : i + 2], 16) for i in (1, 3, 5)] for cls in CLASSES]
    first = [*where["matched"][0], rgb]
    page.wait_for_function(f"({COUNT_COLOURS_AT})({json.dumps(first)})[0] > 0", timeout=30000)
    for k, cls in enumerate(CLASSES):
        for ra, dec in drawn[cls]["positions"]:
            counts = page.evaluate(COUNT_COLOURS_AT, [ra, dec, rgb])
            assert counts[k] > 5 and sum(counts) == counts[k], (cls, ra, dec, counts)

    legend = page.locator(".legend-line li")
    expect(legend).to_have_count(3)
    for k, cls in enumerate(CLASSES):
        colour = legend.nth(k).locator(".marker").evaluate("m => getComputedStyle(m).borderTopColor")
        assert colour == "rgb({}, {}, {})".format(*rgb[k]), cls
    plot = page.locator("img.plot")
    plot.scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector('img.plot').complete")
    assert plot.evaluate("img => img.naturalWidth") == 1100
    expect(page.locator("table.comparison tbody tr")).to_have_count(sum(len(p) for p in where.values()))
    page.locator(".filters a", has_text="only in B").click()
    expect(page.locator("table.comparison tbody tr")).to_have_count(len(where["only_b"]))
    row = page.locator("table.comparison tbody tr").nth(1)  # a row centres the viewer on its source
    row.click()
    expect(row).to_have_class(re.compile("selected"))
    centre = page.evaluate("window.caesarViewer.aladin.getRaDec()")
    target = SkyCoord(*where["only_b"][1], unit="deg")
    assert target.separation(SkyCoord(*centre, unit="deg")).arcsec < 1.0
    first_row = page.locator("table.comparison tbody tr").nth(0)  # and a marker selects its row
    page.locator("#viewer").scroll_into_view_if_needed()
    marker = page.evaluate("([ra, dec]) => window.caesarViewer.screenPosition(ra, dec)",
                           [float(v) for v in where["only_b"][0]])  # fmt: skip
    page.mouse.click(marker["x"], marker["y"])
    expect(first_row).to_have_class(re.compile("selected"))
    expect(row).not_to_have_class(re.compile("selected"))
    shoot(page, "comparison")

    compare_id = page.url.rsplit("/", 1)[1]
    page.goto(server.url + "/comparisons")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr", has=page.locator(f'a[href="/comparisons/{compare_id}"]')).get_by_role(
        "link", name="Delete"
    ).click()
    expect(page.locator("#comparisons-table")).to_contain_text(f"Comparison {compare_id[:8]} deleted.")
    expect(page.locator(f'#comparisons-table a[href="/comparisons/{compare_id}"]')).to_have_count(0)
    with httpx.Client(base_url=server.api, headers=server.headers) as api:
        assert api.get(f"/compare/{compare_id}").status_code == 404


def test_run_again_from_a_job_page_with_a_changed_option(page, server, slow_sky):
    """A job's page opens the form filled in with its app, options and tag; one changed value is submitted with all
    the others. While the job runs its page says how far the finder has got."""
    from playwright.sync_api import expect

    asked = {**LONG_JOB, "seedthr": 6.0, "mergethr": 3.5, "save-rmsmap": True}
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=60) as api:
        file_uuid = api.post("/upload", files={"file": ("again.fits", slow_sky.read_bytes())}).json()["uuid"]
        first = api.post("/job", json={"app": "aegean", "job_inputs": asked, "data_inputs": file_uuid,
                                       "tag": "again"}).json()  # fmt: skip
        try:
            page.goto(f"{server.url}/jobs/{first['job_id']}")
            expect(page.locator("#job-progress")).not_to_be_empty(timeout=60000)  # BANE says what it does
            expect(page.locator("#job-typical")).to_contain_text("aegean")
            shoot(page, "job-progress")
            page.click("#run-again")
            page.wait_for_url(re.compile(rf"/files/{file_uuid}\?again={first['job_id']}"))
            expect(page.locator("select[name=app]").first).to_have_value("aegean")
            expect(page.locator("#opt-seedthr")).to_have_value("6.0")
            expect(page.locator("#opt-mergethr")).to_have_value("3.5")
            expect(page.locator("#opt-bkggrid")).to_have_value(str(LONG_JOB["bkggrid"]))
            expect(page.locator("#opt-save-rmsmap")).to_be_checked()
            expect(page.locator("#opt-save-bkgmap")).not_to_be_checked()
            expect(page.locator("#opt-tag")).to_have_value("again")
            shoot(page, "run-again")
            page.fill("#opt-seedthr", "7")
            page.click("#run-form button[type=submit]")
            page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
            second = page.url.rsplit("/", 1)[1]
            assert second != first["job_id"]
            job = api.get(f"/job/{second}").json()
            assert job["options"] == {**first["options"], "seedthr": 7.0} and job["tag"] == "again"
        finally:
            for job in api.get("/jobs", params={"tag": "again"}).json():
                api.post(f"/job/{job['job_id']}/cancel")
    assert page.js_errors == []


NCP_AT_DEC_MINUS_40 = {"CTYPE1": "RA---NCP", "CTYPE2": "DEC--NCP", "CRVAL1": 255.45, "CRVAL2": -38.6,
                       "CRPIX1": 3428.0, "CRPIX2": 3847.0}  # fmt: skip  # its reference point 2 deg away, as ATCA's
AZP = {"CTYPE1": "RA---AZP", "CTYPE2": "DEC--AZP", "PV2_1": 2.0, "PV2_2": 30.0, "CRVAL2": -70.0}  # tilted


def sep_job(server, path: Path) -> str:
    """A finished sep job on the image at ``path``."""
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=300) as http:
        file_uuid = http.put(f"/upload/{path.name}", content=path.read_bytes()).json()["uuid"]
        job_id = http.post("/job", json={"app": "sep", "data_inputs": file_uuid}).json()["job_id"]
        deadline = time.monotonic() + 300
        while (state := http.get(f"/job/{job_id}/status").json()["state"]) not in ("SUCCESS", "FAILURE", "ABORTED"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert state == "SUCCESS"
    return job_id


def open_viewer(page, server, job_id: str) -> None:
    page.goto(f"{server.url}/jobs/{job_id}")
    page.wait_for_function("window.__viewer && window.__viewer.image && window.__viewer.catalog", timeout=120000)
    assert page.evaluate("window.__viewer.error") is None


@pytest.mark.parametrize("header", [NCP_AT_DEC_MINUS_40, AZP], ids=["ncp", "azp"])
def test_viewer_draws_every_component_on_its_source(page, server, tmp_path, header):
    """On an injected-source image in NCP at Dec -40 (drawn 2.7' off as the SIN with PV terms astropy writes) and
    in a tilted AZP (0.6" off), each component's screen position lies on the bright pixels of its source: within half a beam and
    a screen pixel at the default zoom, and within a fifth of an image pixel zoomed in to 4 beams."""
    from appliance.testing import make_grid_sky, viewer_registration

    path = tmp_path / f"injected-{header['CTYPE1'][5:]}.fits"
    make_grid_sky(path, 1000, 250, header=header)
    open_viewer(page, server, sep_job(server, path))
    assert page.evaluate("window.__viewer.sources") == 16
    figures = viewer_registration(page, 250.0, 4 * 6.5, SCREENSHOTS / f"viewer-injected-{header['CTYPE1'][5:]}.png")
    print(
        f'\nviewer registration on {path.name}: at most {figures["max_default"]:.2f}" at the default zoom '
        f'({figures["arcsec_per_screen_pixel"]:.2f}" a screen pixel), {figures["max_zoomed"]:.3f}" zoomed in'
    )
    assert len(figures["default"]) == 16
    assert figures["max_default"] < 6.5 / 2 + figures["arcsec_per_screen_pixel"]
    assert figures["max_zoomed"] < 0.3


def test_viewer_draws_the_components_of_a_wide_image_on_their_sources_zoomed_in_far_from_its_centre(
    page, server, tmp_path
):
    """A 3.4° image (2048² of 6"): Aladin draws an image as two triangles between its corners, which put a source
    1.5° from the centre 2.9" off its component zoomed in; given as tiles, each drawn so, every one is within a tenth
    of a pixel and the measurement's own scatter."""
    from appliance.testing import make_grid_sky, viewer_registration

    path = tmp_path / "wide.fits"
    make_grid_sky(path, 2048, 256, pixel_arcsec=6.0, beam_arcsec=45.0)
    job_id = sep_job(server, path)
    open_viewer(page, server, job_id)
    assert page.evaluate("window.__viewer.tiles") > 1
    with httpx.Client(base_url=server.api, headers=server.headers) as http:
        rows = http.get(f"/job/{job_id}/catalog", params={"format": "json"}).json()["sources"]
    assert len(rows) == 64
    far = sorted(rows, key=lambda r: -math.hypot((r["ra"] - 150.0) * math.cos(math.radians(30.0)), r["dec"] + 30.0))
    figures = viewer_registration(page, 250.0, 4 * 45.0, ids=[str(r["component_id"]) for r in far[:8]])
    print(f'\nviewer registration on {path.name}, the 8 components farthest from its centre: at most '
          f'{figures["max_default"]:.2f}" at the default zoom, {figures["max_zoomed"]:.3f}" zoomed in')  # fmt: skip
    assert figures["max_zoomed"] < 1.0


@pytest.mark.parametrize("field", ["ScorpioS17Field", "ScorpioExtendedSourceField"])
def test_viewer_draws_components_on_the_sources_of_real_atca_fields(page, server, shared_data, field):
    """The real NCP fields: the screenshot shows every ellipse on its source; the compact bright components lie
    on their source's bright pixels, zoomed in to 4 beams (within two beams: these are blended, in diffuse emission)."""
    from appliance.testing import viewer_registration

    job_id = sep_job(server, shared_data / f"{field}.fits")
    open_viewer(page, server, job_id)
    page.locator("#viewer").scroll_into_view_if_needed()
    page.locator("#viewer").screenshot(path=str(SCREENSHOTS / f"viewer-{field}.png"))
    with httpx.Client(base_url=server.api, headers=server.headers) as http:
        rows = http.get(f"/job/{job_id}/catalog", params={"format": "json"}).json()["sources"]
    compact = sorted((r for r in rows if r["major"] and r["major"] < 1.5 * 6.5 and r["snr"] and r["snr"] > 10),
                     key=lambda r: -r["peak_flux"])[:8]  # fmt: skip
    assert len(compact) >= 3
    brightest = compact[0]["component_id"]
    figures = viewer_registration(page, 30.0, 4 * 6.5, ids=[str(r["component_id"]) for r in compact])
    zoomed = sorted(math.inf if e is None else e for e in figures["zoomed"].values())
    print(f"\nviewer registration on {field}, {len(compact)} compact components, zoomed in: "
          f"{', '.join(f'{e:.2f}' for e in zoomed)} arcsec")  # fmt: skip
    # a finder's centroid of a real source in diffuse emission and that of its bright pixels differ by up to a beam
    # (on the injected images, by a tenth of an arcsecond); the projection drawn as plain SIN put them 85-157" off
    assert zoomed[-1] < 2 * 6.5
    # the ellipse over its source, zoomed in on the brightest compact component, as the page shows it
    open_viewer(page, server, job_id)
    page.wait_for_function("window.__viewer.display", timeout=30000)
    page.evaluate(f"window.caesarViewer.select({brightest}); window.caesarViewer.aladin.setFoV({8 * 6.5 / 3600})")
    page.wait_for_timeout(500)
    page.locator("#viewer").screenshot(path=str(SCREENSHOTS / f"viewer-{field}-zoomed.png"))
