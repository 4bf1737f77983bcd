"""Upload and download of a 1 GiB FITS image through a real appliance process, next to `cat` of the same file.

Clients are curl (`-T` raw body, `-F` multipart, `-o` download). Every step writes a new file on the same disk as the
appliance's home, as `cat src > new` does; before each timed step dirty pages are flushed and the step's input is
read once, untimed, so baseline and appliance both start with their input in the page cache. Each step runs ROUNDS
times, interleaved with its baselines; medians are compared. The server's RSS is sampled every 20 ms.

Targets, judged against `cat`: upload >= 50 % with server RSS growth < 64 MB, download >= 80 %. Two more reference
rows explain the gap: an upload is answered only once its bytes are hashed (sha256), fsynced and validated, so the
durable copy `cat` + fsync is shown; and curl with a file:// URL instead of the appliance shows what the client
costs on its own (curl writes a download in 8 KiB pieces where cat writes 128 KiB).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from appliance.testing import ServerProcess

SIDE = 16384  # 16384² float32 = 1 GiB of data
ROUNDS = 5
MB = 1e6


def make_fits(path: Path) -> int:
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", SIDE), ("NAXIS2", SIDE)])
    rng = np.random.default_rng(20261128)
    with path.open("wb") as f:
        f.write(header.tostring().encode())
        for _ in range(16):
            f.write(rng.standard_normal((SIDE // 16, SIDE), dtype=np.float32).astype(">f4").tobytes())
        f.write(b"\0" * (-f.tell() % 2880))
    return path.stat().st_size


def timed(
    argv: list[str],
    reads: Path,
    server: ServerProcess | None = None,
    shell_out: Path | None = None,
    durable: bool = False,
) -> tuple[float, int]:
    """Seconds taken by argv (stdout to ``shell_out`` if given) and the server's peak RSS growth meanwhile.

    Dirty pages are flushed first and the file the step reads is read once untimed, so that every step, baseline
    or not, starts with its input in the page cache (this VM's host reclaims page cache at will)."""
    os.sync()
    with reads.open("rb") as f:
        while f.read(1 << 24):
            pass
    base = server.rss() if server else 0
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], server.rss())

    sampler = threading.Thread(target=sample, daemon=True) if server else None
    if sampler:
        sampler.start()
    start = time.perf_counter()
    if shell_out is None:
        subprocess.run(argv, check=True)
    else:
        with shell_out.open("xb") as f:
            subprocess.run(argv, check=True, stdout=f)
            if durable:
                os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    done.set()
    if sampler:
        sampler.join()
    return elapsed, peak[0] - base


def run() -> None:
    if not shutil.which("curl"):
        raise SystemExit("the transfer benchmark needs curl (apt-get install curl)")
    work = Path(tempfile.mkdtemp(prefix="caesar-bench-"))
    try:
        source = work / "image.fits"
        size = make_fits(source)
        print(f"file: {size} bytes; work folder {work} (same disk as the appliance's home)")
        with ServerProcess(work / "home") as server:
            results = measure(server, source, work)
            server.stop()
        report(results, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(server: ServerProcess, source: Path, work: Path) -> dict[str, list[tuple[float, int]]]:
    """Each step's product is removed before the next step, so every step starts from the same disk state."""
    keys = ("cat", "cat-fsync", "curl-alone-up", "raw", "multipart", "cat-stored", "curl-alone-down", "download")
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in keys}
    copy = work / "copy.fits"
    for _ in range(ROUNDS):
        results["cat"].append(timed(["cat", str(source)], source, shell_out=copy))
        copy.unlink()
        results["cat-fsync"].append(timed(["cat", str(source)], source, shell_out=copy, durable=True))
        copy.unlink()
        results["curl-alone-up"].append(timed(["curl", "-sS", "-T", str(source), copy.as_uri()], source))
        copy.unlink()
        uuid = _upload(results["raw"], server, source, ["-T", str(source), f"{server.api}/upload/"])
        _delete(server, uuid)
        uuid = _upload(results["multipart"], server, source, ["-F", f"file=@{source}", f"{server.api}/upload"])
        stored = next((server.home / "data").glob(f"*/{uuid}.fits"))
        results["cat-stored"].append(timed(["cat", str(stored)], stored, shell_out=copy))
        copy.unlink()
        results["curl-alone-down"].append(timed(["curl", "-sS", "-o", str(copy), stored.as_uri()], stored))
        copy.unlink()
        results["download"].append(
            timed([*_curl(server), "-o", str(copy), f"{server.api}/download/{uuid}"], stored, server)
        )
        if copy.stat().st_size != source.stat().st_size:
            raise RuntimeError("the downloaded file differs in size from the upload")
        copy.unlink()
        _delete(server, uuid)
    return results


def _curl(server: ServerProcess) -> list[str]:
    return ["curl", "-sS", "-f", "-H", f"Authorization: Bearer {server.token}"]


def _upload(results: list[tuple[float, int]], server: ServerProcess, source: Path, curl_args: list[str]) -> str:
    reply = server.home / "reply.json"
    results.append(timed([*_curl(server), "-o", str(reply), *curl_args], source, server))
    uuid = json.loads(reply.read_text())["uuid"]
    reply.unlink()
    return uuid


def _delete(server: ServerProcess, uuid: str) -> None:
    subprocess.run([*_curl(server), "-o", os.devnull, f"{server.api}/delete/{uuid}"], check=True)


def report(results: dict[str, list[tuple[float, int]]], size: int) -> None:
    def rate(key: str) -> float:
        return size / statistics.median(t for t, _ in results[key]) / MB

    # label, key, {column: baseline key}, target (judged against the "cat" column)
    upload_columns = {"vs cat": "cat", "vs cat+fsync": "cat-fsync", "vs curl alone": "curl-alone-up"}
    rows = [
        ("cat file > new file", "cat", {}, None),
        ("cat file > new file, fsync", "cat-fsync", {}, None),
        ("curl -T file file://new (client alone)", "curl-alone-up", {}, None),
        ("upload, raw body (curl -T)", "raw", upload_columns, 0.5),
        ("upload, multipart (curl -F)", "multipart", upload_columns, 0.5),
        ("cat stored > new file", "cat-stored", {}, None),
        ("curl -o new file://stored (client alone)", "curl-alone-down", {}, None),
        ("download (curl -o new file)", "download", {"vs cat": "cat-stored", "vs curl alone": "curl-alone-down"}, 0.8),
    ]
    columns = ("vs cat", "vs cat+fsync", "vs curl alone")
    print(
        f"{'step':42} {'MB/s':>6}  {'runs (s)':29}" + "".join(f" {c:>13}" for c in columns) + f" {'RSS +MB':>8}  target"
    )
    verdicts = []
    for label, key, baselines, target in rows:
        runs = " ".join(f"{t:5.2f}" for t, _ in results[key])
        line = f"{label:42} {rate(key):6.0f}  {runs:29}"
        for column in columns:
            line += f" {rate(key) / rate(baselines[column]):13.0%}" if column in baselines else " " * 14
        if target is not None:
            growth = max(r for _, r in results[key]) / MB
            ok = rate(key) / rate(baselines["vs cat"]) >= target and (key == "download" or growth < 64)
            verdicts.append(ok)
            memory = ", RSS < 64 MB" if key != "download" else ""
            line += f" {growth:8.1f}  >= {target:.0%} of cat{memory}: {'met' if ok else 'MISSED'}"
        print(line, flush=True)
    print("all targets met" if all(verdicts) else "NOT all targets met")
