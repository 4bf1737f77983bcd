"""The caesar-appliance command: ``serve`` runs the appliance as one process in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from appliance import __version__, logs
from appliance.config import Settings, load_settings
from appliance.errors import AlreadyRunning, ConfigError

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
EXIT_CONFIG = 2
EXIT_ALREADY_RUNNING = 3
EXIT_PORT_UNAVAILABLE = 4

log = logging.getLogger("appliance.cli")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tool"]:
        return run_tool(argv[1:])
    parser = argparse.ArgumentParser(prog="caesar-appliance", description=__doc__)
    parser.add_argument("--version", action="version", version=f"caesar-appliance {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command")
    serve_parser = commands.add_parser("serve", help="run the appliance in the foreground")
    for p in (parser, serve_parser):
        _add_server_options(p)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(cli={"home": args.home, "host": args.host, "port": args.port}, config_file=args.config)
    except ConfigError as exc:
        print(f"caesar-appliance: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    return serve(settings)


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="folder for all data, database, queue and logs")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8765; 0 picks a free one)")
    parser.add_argument("--config", type=Path, help="settings file (default: the platform config dir)")


def serve(settings: Settings) -> int:
    """Lock the home folder, bind the socket, then run the server until SIGINT or SIGTERM."""
    # the heavy imports wait until the command line and settings are known to be good
    from appliance.core import Appliance
    from web.app import create_app
    from web.server import make_server

    appliance = Appliance(settings)
    try:
        appliance.lock.acquire()
    except AlreadyRunning as exc:
        print(f"caesar-appliance: {exc.message}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        appliance.lock.release()
        print(f"caesar-appliance: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return EXIT_PORT_UNAVAILABLE
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    appliance.lock.record(pid=os.getpid(), url=url)

    console = logs.console_handler(settings.log_level)
    logs.attach(console)
    server = make_server(create_app(appliance), settings.shutdown_grace_seconds)
    # uvicorn re-raises the signal that stopped it once it has shut down; a no-op handler makes that a clean exit.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    print(f"caesar-appliance {__version__} serving {url} (home {settings.home})", flush=True)
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn's way of reporting a failed lifespan startup
        pass
    finally:
        sock.close()
        appliance.stop()
        logs.detach(console)
    if not server.started:
        print(f"caesar-appliance: startup failed; see {settings.logs_dir / 'appliance.log'}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    return EXIT_OK


def run_tool(argv: list[str]) -> int:
    """``caesar-appliance tool NAME ARGS``: run a finder's console script (e.g. BANE, aegean) or a module of this
    appliance (e.g. appliance.apps.pybdsf_run) with this appliance's own Python, as jobs do. Not for people."""
    import runpy
    from importlib.metadata import entry_points

    if not argv:
        print("caesar-appliance tool: name a console script or module", file=sys.stderr)
        return EXIT_CONFIG
    name, args = argv[0], argv[1:]
    sys.argv = [name, *args]
    if "." in name:
        runpy.run_module(name, run_name="__main__", alter_sys=True)
        return EXIT_OK
    scripts = entry_points(group="console_scripts", name=name)
    if not scripts:
        print(f"caesar-appliance tool: no console script {name!r} installed", file=sys.stderr)
        return EXIT_CONFIG
    result = next(iter(scripts)).load()()
    return result if isinstance(result, int) else EXIT_OK


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
