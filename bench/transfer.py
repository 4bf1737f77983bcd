"""Upload and download of a 1 GiB FITS image through a real appliance process, next to `cat` of the same file.

Clients are curl (`-T` raw body, `-F` multipart, `-o` download). Every step writes a new file on the same disk as the
appliance's home, as `cat src > new` does; before each timed step dirty pages are flushed and the step's input is
read once, untimed, so baseline and appliance both start with their input in the page cache. Each step runs ROUNDS
times, interleaved with its baselines; medians are compared. The server's RSS is sampled every 20 ms.

Targets, judged against `cat`: upload >= 50 % with server RSS growth < 64 MB, download >= 80 %. More reference rows
explain the gap. An upload is answered only once its bytes are hashed (sha256), fsynced and validated, so the durable
copy `cat` + fsync is shown. What curl costs on its own is shown by curl with a file:// URL for the upload, and for
the download by curl fetching the file from the least HTTP server there is (it reads the request, answers with the
length and sends the file in 1 MiB writes, which curl takes faster than sendfile). The two floors are the best this
machine does over a loopback TCP socket with no HTTP and no byte copied in user space (sendfile into the socket,
splice out of it into a new file): the download floor moves the bytes and nothing else; the upload floor also does
what an upload must, hashing every byte with sha256 beside the transfer and fsyncing the file. A bound whose fastest
run is below a target, against cat's median, puts that target out of reach: for the floors on this machine, for
curl from the bare server with curl as the client.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from astropy.io import fits

from appliance.testing import ServerProcess

SIDE = 16384  # 16384² float32 = 1 GiB of data
ROUNDS = 5
MB = 1e6
SOCKET_BYTES = 16 << 20  # receive buffer of the floors' sockets
PIPE_BYTES = 1 << 20  # the floors' splice pipe (the most an unprivileged process may ask for by default)
WRITEBACK_BYTES = 32 << 20  # the upload floor starts writing back to disk after every this many bytes


def make_fits(path: Path) -> int:
    header = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", SIDE), ("NAXIS2", SIDE)])
    rng = np.random.default_rng(20261128)
    with path.open("wb") as f:
        f.write(header.tostring().encode())
        for _ in range(16):
            f.write(rng.standard_normal((SIDE // 16, SIDE), dtype=np.float32).astype(">f4").tobytes())
        f.write(b"\0" * (-f.tell() % 2880))
    return path.stat().st_size


def command(argv: list[str], stdout: Path | None = None, durable: bool = False) -> Callable[[], None]:
    """A step running ``argv``, its standard output to a new file ``stdout`` (fsynced if ``durable``) if given."""

    def step() -> None:
        if stdout is None:
            subprocess.run(argv, check=True)
            return
        with stdout.open("xb") as f:
            subprocess.run(argv, check=True, stdout=f)
            if durable:
                os.fsync(f.fileno())

    return step


def timed(step: Callable[[], object], reads: Path, server: ServerProcess | None = None) -> tuple[float, int]:
    """Seconds taken by ``step`` and the server's peak RSS growth meanwhile.

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
    step()
    elapsed = time.perf_counter() - start
    done.set()
    if sampler:
        sampler.join()
    return elapsed, peak[0] - base


def floor_download(source: Path, dest: Path) -> None:
    """Move ``source`` into the new file ``dest`` over loopback TCP: sendfile into the socket, splice out of it."""
    sender, receiver = _tcp_pair()
    with sender, receiver, dest.open("xb") as out:
        thread = threading.Thread(target=_send, args=(sender, source))
        thread.start()
        _splice_from(receiver, out.fileno(), source.stat().st_size)
        thread.join()


def floor_upload(source: Path, dest: Path) -> str:
    """As ``floor_download``, with what an upload must do besides: every byte hashed with sha256 while the next ones
    arrive (read through mmap from the page cache, a thread of its own), writeback to disk started as the bytes
    come, and the file fsynced at the end. Returns the hex digest."""
    size = source.stat().st_size
    sha = hashlib.sha256()
    sender, receiver = _tcp_pair()
    with sender, receiver, dest.open("xb+") as out:
        fd = out.fileno()
        os.ftruncate(fd, size)
        thread = threading.Thread(target=_send, args=(sender, source))
        thread.start()
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as pages:
            view = memoryview(pages)
            written_back = 0
            try:
                with ThreadPoolExecutor(max_workers=1) as hasher:  # one worker: the pieces are hashed in order

                    def received(start: int, end: int) -> None:
                        nonlocal written_back
                        hasher.submit(sha.update, view[start:end])
                        if end - written_back >= WRITEBACK_BYTES or end == size:
                            os.posix_fadvise(fd, written_back, end - written_back, os.POSIX_FADV_DONTNEED)
                            written_back = end

                    _splice_from(receiver, fd, size, received)
            finally:
                view.release()
        os.fsync(fd)
        thread.join()
    return sha.hexdigest()


def curl_from_bare_server(source: Path, dest: Path) -> None:
    """``curl -o dest`` fetching ``source`` from a server that answers one request with the file."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)
        server = threading.Thread(target=_answer_with_file, args=(listener, source))
        server.start()
        port = listener.getsockname()[1]
        try:
            command(["curl", "-sS", "-f", "-o", str(dest), f"http://127.0.0.1:{port}/"])()
        finally:
            server.join()


def _answer_with_file(listener: socket.socket, path: Path) -> None:
    conn, _ = listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % path.stat().st_size)
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                conn.sendall(block)


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of loopback TCP sockets, (sender, receiver), the receiver with a large buffer."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        receiver = socket.socket()
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BYTES)
        receiver.connect(listener.getsockname())
        sender, _ = listener.accept()
    return sender, receiver


def _send(sock: socket.socket, path: Path) -> None:
    """Send the file and close the socket, also on failure, so that the receiving side sees the end."""
    with path.open("rb") as f, sock:
        sock.sendfile(f)


def _splice_from(sock: socket.socket, fd: int, size: int, received: Callable[[int, int], None] | None = None) -> None:
    """Splice ``size`` bytes from ``sock`` into ``fd`` at offset 0 onwards, calling ``received(start, end)`` after
    each piece lands in the file."""
    pipe_out, pipe_in = os.pipe()
    try:
        fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        done = 0
        while done < size:
            n = os.splice(sock.fileno(), pipe_in, size - done)
            if n == 0:
                raise RuntimeError("the sending side closed before the whole file came")
            moved = 0
            while moved < n:
                moved += os.splice(pipe_out, fd, n - moved, offset_dst=done + moved)
            if received is not None:
                received(done, done + n)
            done += n
    finally:
        os.close(pipe_out)
        os.close(pipe_in)


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


KEYS = (
    "cat",
    "cat-fsync",
    "curl-alone-up",
    "floor-up",
    "raw",
    "multipart",
    "cat-stored",
    "curl-alone-down",
    "floor-down",
    "download",
)


def measure(server: ServerProcess, source: Path, work: Path) -> dict[str, list[tuple[float, int]]]:
    """Each step's product is removed before the next step, so every step starts from the same disk state."""
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in KEYS}
    copy = work / "copy.fits"
    digest: list[str] = []
    for _ in range(ROUNDS):
        results["cat"].append(timed(command(["cat", str(source)], stdout=copy), source))
        copy.unlink()
        results["cat-fsync"].append(timed(command(["cat", str(source)], stdout=copy, durable=True), source))
        copy.unlink()
        results["curl-alone-up"].append(timed(command(["curl", "-sS", "-T", str(source), copy.as_uri()]), source))
        copy.unlink()
        results["floor-up"].append(timed(lambda: digest.append(floor_upload(source, copy)), source))
        copy.unlink()
        uuid = _upload(results["raw"], server, source, ["-T", str(source), f"{server.api}/upload/"])
        _delete(server, uuid)
        uuid = _upload(results["multipart"], server, source, ["-F", f"file=@{source}", f"{server.api}/upload"])
        stored = next((server.home / "data").glob(f"*/{uuid}.fits"))
        results["cat-stored"].append(timed(command(["cat", str(stored)], stdout=copy), stored))
        copy.unlink()
        results["curl-alone-down"].append(timed(partial(curl_from_bare_server, stored, copy), stored))
        copy.unlink()
        results["floor-down"].append(timed(partial(floor_download, stored, copy), stored))
        _same_size(copy, source)
        copy.unlink()
        results["download"].append(
            timed(command([*_curl(server), "-o", str(copy), f"{server.api}/download/{uuid}"]), stored, server)
        )
        _same_size(copy, source)
        copy.unlink()
        if set(digest) != {_sha256(server, uuid)}:
            raise RuntimeError("the upload floor hashed other bytes than the appliance stored")
        _delete(server, uuid)
    return results


def _same_size(copy: Path, source: Path) -> None:
    if copy.stat().st_size != source.stat().st_size:
        raise RuntimeError(f"{copy} differs in size from {source}")


def _curl(server: ServerProcess) -> list[str]:
    return ["curl", "-sS", "-f", "-H", f"Authorization: Bearer {server.token}"]


def _upload(results: list[tuple[float, int]], server: ServerProcess, source: Path, curl_args: list[str]) -> str:
    reply = server.home / "reply.json"
    results.append(timed(command([*_curl(server), "-o", str(reply), *curl_args]), source, server))
    uuid = json.loads(reply.read_text())["uuid"]
    reply.unlink()
    return uuid


def _sha256(server: ServerProcess, uuid: str) -> str:
    reply = subprocess.run([*_curl(server), f"{server.api}/file/{uuid}"], check=True, capture_output=True, text=True)
    return json.loads(reply.stdout)["sha256"]


def _delete(server: ServerProcess, uuid: str) -> None:
    subprocess.run([*_curl(server), "-o", os.devnull, f"{server.api}/delete/{uuid}"], check=True)


def report(results: dict[str, list[tuple[float, int]]], size: int) -> None:
    def rate(key: str) -> float:
        return size / statistics.median(t for t, _ in results[key]) / MB

    # label, key, {column: baseline key}, target (judged against the "vs cat" column)
    upload_columns = {
        "vs cat": "cat",
        "vs cat+fsync": "cat-fsync",
        "vs curl alone": "curl-alone-up",
        "vs floor": "floor-up",
    }
    download_columns = {"vs cat": "cat-stored", "vs curl alone": "curl-alone-down", "vs floor": "floor-down"}
    rows = [
        ("cat file > new file", "cat", {}, None),
        ("cat file > new file, fsync", "cat-fsync", {}, None),
        ("curl -T file file://new (client alone)", "curl-alone-up", {}, None),
        ("floor: socket, sha256, fsync, no HTTP", "floor-up", {"vs cat": "cat"}, None),
        ("upload, raw body (curl -T)", "raw", upload_columns, 0.5),
        ("upload, multipart (curl -F)", "multipart", upload_columns, 0.5),
        ("cat stored > new file", "cat-stored", {}, None),
        ("curl -o new from bare HTTP (client alone)", "curl-alone-down", {}, None),
        ("floor: socket, no HTTP", "floor-down", {"vs cat": "cat-stored"}, None),
        ("download (curl -o new file)", "download", download_columns, 0.8),
    ]
    columns = ("vs cat", "vs cat+fsync", "vs curl alone", "vs floor")
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
    # what bounds each target, in its fastest run against cat's median: below the target, the target is out of reach
    bounds = (
        ("upload", "cat", 0.5, "floor-up", "this machine (no HTTP, zero copies, sha256 + fsync)"),
        ("download", "cat-stored", 0.8, "curl-alone-down", "curl as the client (from a bare HTTP server)"),
        ("download", "cat-stored", 0.8, "floor-down", "this machine (no HTTP, zero copies)"),
    )
    for name, cat, target, key, what in bounds:
        best = min(t for t, _ in results[key])
        share = statistics.median(t for t, _ in results[cat]) / best
        reach = "out of reach" if share < target else "within reach"
        print(f"{name} target {target:.0%} of cat with {what}: fastest run {best:.2f} s = {share:.0%} of cat, {reach}")
