"""Starting and stopping the appliance as one process: lock the home folder, bind the socket, serve HTTP in a thread,
and wait in the main thread (on the tray icon when there is one) until SIGINT, SIGTERM or the tray's Quit.

``serve`` is this without a browser or tray; the desktop launch (``caesar-appliance`` alone) adds them, and a second
desktop launch on the same home folder only opens the running one's dashboard."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import sys
import threading
import webbrowser

from appliance import __version__, logs
from appliance.config import Settings
from appliance.errors import AlreadyRunning, ConfigError

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
EXIT_CONFIG = 2
EXIT_ALREADY_RUNNING = 3
EXIT_PORT_UNAVAILABLE = 4

log = logging.getLogger(__name__)


def run(settings: Settings, desktop: bool = False) -> int:
    """Run until asked to stop; returns the process's exit code. The heavy imports wait until the command line and
    settings are known to be good."""
    from appliance.core import Appliance
    from web.app import create_app
    from web.server import make_server

    appliance = Appliance(settings)
    try:
        appliance.check()
        appliance.lock.acquire()
    except ConfigError as exc:
        return _fail(exc.message, EXIT_CONFIG)
    except AlreadyRunning as exc:
        running = appliance.lock.holder().get("url")
        if desktop and running:
            print(f"caesar-appliance is already running at {running}", flush=True)
            if _may_open_browser(settings):
                webbrowser.open(_login_link_of(running, appliance))
            return EXIT_OK
        return _fail(exc.message, EXIT_ALREADY_RUNNING)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        appliance.lock.release()
        return _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}", EXIT_PORT_UNAVAILABLE)
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    login_url = appliance.access.login_link(url)
    appliance.lock.record(pid=os.getpid(), url=url)

    console = logs.console_handler(settings.log_level)
    logs.attach(console)
    server = make_server(create_app(appliance), settings.shutdown_grace_seconds)
    stop = threading.Event()
    tray = None
    if desktop and settings.tray:
        tray = _tray(appliance, lambda: appliance.access.login_link(url), stop.set)

    def request_stop(*_: object) -> None:
        stop.set()
        if tray is not None:
            tray.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    thread = threading.Thread(target=_serve, args=(server, sock, request_stop), name="http-server")
    print(f"caesar-appliance {__version__} serving {url} (home {settings.home})", flush=True)
    if settings.require_login:
        print(f"log in at {login_url}", flush=True)
    try:
        thread.start()
        while not server.started and thread.is_alive():
            thread.join(0.05)
        if server.started:
            # what start-up made (astropy, SQLAlchemy, Litestar: ~190k objects) lives as long as the process: out of
            # the collector's sight, a full collection no longer walks it, which took 100-200 ms each time under load
            # and held every request in flight meanwhile
            gc.collect()
            gc.freeze()
        if server.started and desktop and _may_open_browser(settings):
            threading.Thread(target=webbrowser.open, args=(login_url,), name="browser", daemon=True).start()
        if server.started and tray is not None:
            try:
                tray.run()  # until Quit, a signal, or the server ending
            except Exception as exc:  # e.g. DISPLAY names a display we cannot open: go on headless
                log.warning("no tray icon", extra={"reason": f"{type(exc).__name__}: {exc}"})
        while not stop.wait(0.2) and thread.is_alive():
            pass
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
        appliance.stop()
        logs.detach(console)
    if not server.started:
        return _fail(f"startup failed; see {settings.logs_dir / 'appliance.log'}", EXIT_STARTUP_FAILED)
    return EXIT_OK


def _serve(server, sock: socket.socket, finished) -> None:  # type: ignore[no-untyped-def]
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn's way of reporting a failed lifespan startup
        pass
    finally:
        finished()  # the server ended (a failed start, or a stop): the main thread stops waiting


def _tray(appliance, dashboard_link, quit):  # type: ignore[no-untyped-def]
    """The tray icon when a display exists, else None (the appliance then runs headless)."""
    from appliance.tray import Tray, display_available

    if not display_available():
        log.info("no display: running without a tray icon")
        return None
    return Tray(appliance, dashboard_link, quit)


def _login_link_of(url: str, appliance) -> str:  # type: ignore[no-untyped-def]
    """A fresh login link from the appliance running at ``url``, asked for with this home's API token (login keys
    are used up by one login). Never through a proxy: the token must not leave the machine."""
    import urllib.request

    from appliance.access import LOGIN_LINK_ROUTE

    request = urllib.request.Request(
        f"{url}{LOGIN_LINK_ROUTE}", method="POST", headers={"Authorization": f"Bearer {appliance.access.api_token}"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as reply:
            return json.load(reply)["login"]
    except (OSError, ValueError, KeyError) as exc:
        log.warning("no login link from the running appliance", extra={"reason": str(exc)})
        return f"{url}/"


def _may_open_browser(settings: Settings) -> bool:
    """Only a graphical browser, or the one the user named in BROWSER: without a display Python's webbrowser would
    start a text browser (lynx, w3m) on the terminal the appliance logs to."""
    from appliance.tray import display_available

    return settings.open_browser and (display_available() or bool(os.environ.get("BROWSER")))


def _fail(message: str, code: int) -> int:
    print(f"caesar-appliance: {message}", file=sys.stderr)
    return code


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen before the app starts, so a busy port fails fast with nothing started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock
