"""The dashboard's pages without a browser: they render without JavaScript, forms work as plain HTML forms, errors
are pages, and the live streams send fragments."""

from __future__ import annotations

import html
import re
import sys
from html.parser import HTMLParser

import pytest

from appliance.apps import App, JobInput
from appliance.apps.options import OptionSchema
from appliance.catalogs import Catalog, normalized_table
from runners import RunSpec
from tests.conftest import API, upload_file, wait_for_job

HTML = {"accept": "text/html"}


def test_every_page_renders_and_loads_nothing_from_outside(client, image):
    file_uuid = upload_file(client, image)
    for path in ("/", "/files", f"/files/{file_uuid}", "/jobs", "/apps", f"/files/{file_uuid}/delete"):
        reply = client.get(path, headers=HTML)
        assert reply.status_code == 200, path
        assert "text/html" in reply.headers["content-type"]
        assert not re.search(r"(src|href)=\"(https?:)?//", reply.text), f"{path} loads from outside"
    assert client.get(f"/files/{file_uuid}/quicklook.png").content.startswith(b"\x89PNG")
    assert client.get(f"/files/{file_uuid}/view.fits").content.startswith(b"SIMPLE  =")


def test_the_form_works_without_javascript(client, sky):
    file_uuid = upload_file(client, sky[0])
    refused = client.post(f"/files/{file_uuid}/run", data={"app": "aegean", "seedthr": "2", "mergethr": "3"},
                          headers=HTML)  # fmt: skip
    assert refused.status_code == 422 and 'id="err-mergethr"' in refused.text and "<h1>" in refused.text
    typed = client.post(f"/files/{file_uuid}/run", data={"app": "aegean", "ncores": "two"}, headers=HTML)
    assert typed.status_code == 422 and "must be an integer" in typed.text
    accepted = client.post(f"/files/{file_uuid}/run", data={"app": "sep", "npixmin": "6", "tag": "form"},
                           follow_redirects=False)  # fmt: skip
    assert accepted.status_code == 303
    job_id = accepted.headers["location"].rsplit("/", 1)[1]
    job = client.get(f"{API}/job/{job_id}").json()
    assert job["options"]["npixmin"] == 6 and job["tag"] == "form" and job["app"] == "sep"
    assert wait_for_job(client, job_id)["state"] == "SUCCESS"
    page = client.get(f"/jobs/{job_id}", headers=HTML).text
    assert "Components (20)" in page and "data-viewer" in page and "catalog?kind=components&amp;format=votable" in page
    table = client.get(f"/jobs/{job_id}/table", params={"sort": "ra", "order": "asc"}).text
    assert 'aria-sort="ascending"' in table and table.count("<tr data-component") == 20
    # what an astronomer reads: IAU names, sexagesimal beside degrees, S/N, and what every flag bit means
    assert table.count("<td>SEP J") == 20 and re.search(r"<td>\d\d:\d\d:\d\d\.\d\d<br><small>\d+\.\d{6}°", table)
    assert re.search(r"<td>[+-]\d\d:\d\d:\d\d\.\d<br>", table) and ">S/N<" in table
    assert "OBJ_MERGED: deblended from a blend" in table and "centre on a blank (NaN) pixel" in table
    assert "deconvolved" not in table  # sep gives no deconvolved sizes: no empty columns
    by_snr = client.get(f"/jobs/{job_id}/table", params={"sort": "snr", "order": "desc"}).text
    assert 'aria-sort="descending"' in by_snr.split("S/N")[0].rsplit("<th", 1)[1]
    for plot in ("flux-histogram.png", "source-counts.png"):
        assert client.get(f"/jobs/{job_id}/plots/{plot}").content.startswith(b"\x89PNG")


def test_upload_and_delete_with_plain_forms(client, image, tmp_path):
    reply = client.post("/files", files={"file": ("plain.fits", image.read_bytes())}, data={"tag": "plain"},
                        follow_redirects=False)  # fmt: skip
    assert reply.status_code == 303
    file_uuid = reply.headers["location"].rsplit("/", 1)[1]
    bad = client.post("/files", files={"file": ("notes.txt", b"hello")}, headers=HTML)
    assert bad.status_code == 415 and "not a FITS file name" in bad.text and "<h1>Files</h1>" in bad.text
    assert client.post(f"/files/{file_uuid}/delete", follow_redirects=False).status_code == 303
    assert client.get(f"{API}/fileids").json() == []


def test_errors_are_pages_for_browsers_and_json_for_scripts(client):
    page = client.get("/files/" + "0" * 32, headers=HTML)
    assert page.status_code == 404 and "<h1>Not found</h1>" in page.text
    assert client.get("/files/" + "0" * 32).json()["error"] == "file_not_found"
    assert client.get("/no/such/page", headers=HTML).status_code == 404


def test_live_stream_of_a_finished_job(client, sky):
    file_uuid = upload_file(client, sky[0])
    job_id = client.post(f"{API}/job", json={"app": "sep", "data_inputs": file_uuid}).json()["job_id"]
    wait_for_job(client, job_id)
    with client.stream("GET", f"/events/jobs/{job_id}") as stream:
        text = "".join(stream.iter_text())
    assert "event: status" in text and 'class="state success"' in text and "event: done" in text


def server_sent_events(stream: str) -> list[tuple[str, str]]:
    """(event, data) as a browser's EventSource reads them: data lines joined by newlines."""
    events = []
    for block in re.split(r"\r?\n\r?\n", stream):
        lines = block.splitlines()
        names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
        data = [line.removeprefix("data:").removeprefix(" ") for line in lines if line.startswith("data:")]
        if names:
            events.append((names[0], "\n".join(data)))
    return events


class Chatty(App):
    """Prints numbered lines, fast or slowly, some without their newline for a while: a log's worst timings."""

    name = "chatty"
    title = description = "prints numbered lines"
    schema = OptionSchema([])

    def __init__(self, lines: int, pause: float) -> None:
        self.lines, self.pause = lines, pause

    def check_input(self, summary, options, target=None) -> None:
        pass

    def steps(self, job: JobInput) -> list[RunSpec]:
        script = (
            "import sys, time\n"
            f"for i in range({self.lines}):\n"
            "    sys.stdout.write(f'line {i} ' + 'é' * (i % 7)); sys.stdout.flush()\n"
            f"    time.sleep({self.pause} / 2); print(' end', flush=True); time.sleep({self.pause} / 2)\n"
        )
        return [RunSpec(name="chatty", command=[sys.executable, "-c", script], workdir=job.workdir)]

    def collect(self, job: JobInput) -> Catalog:
        return Catalog(normalized_table("islands", self.name, {}), normalized_table("components", self.name, {}))


@pytest.mark.parametrize(("lines", "pause"), [(3000, 0.0), (12, 0.25)])
def test_the_live_log_shows_every_line_once_from_the_first(client, image, lines, pause):
    """The job page's log and then its stream, opened at any moment of the job: together every line, once, whole."""
    client.appliance.jobs.apps.apps["chatty"] = Chatty(lines, pause)
    file_uuid = upload_file(client, image)
    for _ in range(2):
        job_id = client.post(f"{API}/job", json={"app": "chatty", "data_inputs": file_uuid}).json()["job_id"]
        page = client.get(f"/jobs/{job_id}", headers=HTML).text
        shown = html.unescape(re.search(r'<pre id="job-log"[^>]*>(.*?)</pre>', page, re.S).group(1))
        stream_url = re.search(r'sse-connect="([^"]+)"', page)
        if stream_url:  # still running when the page was made
            with client.stream("GET", html.unescape(stream_url.group(1))) as stream:
                events = "".join(stream.iter_text())
            shown += "".join(html.unescape(data) for event, data in server_sent_events(events) if event == "log")
        full = client.get(f"{API}/job/{job_id}/log").text
        assert wait_for_job(client, job_id)["state"] == "SUCCESS"
        printed = [line for line in shown.splitlines() if line.startswith("line ")]
        assert printed == [f"line {i} {'é' * (i % 7)} end" for i in range(lines)]
        assert shown.strip() == full.strip()


class FormFields(HTMLParser):
    """What a browser would send for the form with the id ``form_id``: its named inputs (checked boxes only) and
    the selected option of each select."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.select = form_id, False, None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        elif self.inside and tag == "input" and "name" in a:
            if a.get("type") != "checkbox" or "checked" in a:
                self.fields[a["name"]] = a.get("value") or ""
        elif self.inside and tag == "select":
            self.select = a["name"]
        elif self.inside and tag == "option" and self.select and "selected" in a:
            self.fields[self.select] = a["value"]

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None


def form_fields(page: str, form_id: str = "run-form") -> dict[str, str]:
    parser = FormFields(form_id)
    parser.feed(page)
    return parser.fields


def test_run_again_opens_the_form_with_the_jobs_app_options_and_tag(client, image):
    client.appliance.queue.pause()
    file_uuid = upload_file(client, image)
    asked = {"seedthr": 6, "mergethr": 3.5, "save-rmsmap": True, "fit-maxcomponents": 0, "beam-bmaj": 7.25}
    first = client.post(f"{API}/job", json={"app": "aegean", "data_inputs": file_uuid, "job_inputs": asked,
                                            "tag": "night 2"}).json()  # fmt: skip
    job_page = client.get(f"/jobs/{first['job_id']}", headers=HTML).text
    again = html.unescape(re.search(r'<a id="run-again"[^>]*href="([^"]+)"', job_page)[1])
    assert again == f"/files/{file_uuid}?again={first['job_id']}#run-h"

    form = client.get(again.split("#")[0], headers=HTML).text
    assert f"The options of job {first['job_id'][:8]}" in form
    assert re.search(r'<option value="aegean" selected>', form)  # the finder picker shows the job's app
    fields = form_fields(form)
    assert fields.pop("app") == "aegean" and fields.pop("tag") == "night 2"
    typed = client.appliance.apps.get("aegean").schema.from_form(fields)
    assert client.appliance.apps.get("aegean").schema.validate(typed) == first["options"]
    assert "save-rmsmap" in fields and "save-bkgmap" not in fields  # the boxes as they were

    fields.update(app="aegean", tag="night 2", seedthr="7")  # change one option and run it
    rerun = client.post(f"/files/{file_uuid}/run", data=fields, follow_redirects=False)
    assert rerun.status_code == 303
    second = client.get(f"{API}/job/{rerun.headers['location'].rsplit('/', 1)[1]}").json()
    assert second["options"] == {**first["options"], "seedthr": 7.0} and second["tag"] == "night 2"
    assert second["data_inputs"] == file_uuid and second["job_id"] != first["job_id"]

    assert client.get(f"/files/{file_uuid}?again=nope", headers=HTML).status_code == 404
    for job in client.get(f"{API}/jobs").json():
        client.post(f"{API}/job/{job['job_id']}/cancel")
    client.get(f"{API}/delete/{file_uuid}")
    assert 'id="run-again"' not in client.get(f"/jobs/{second['job_id']}", headers=HTML).text  # its image is gone
