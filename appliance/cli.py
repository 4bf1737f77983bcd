"""The caesar-appliance command. Alone it is the desktop launcher (dashboard in the browser, tray icon when there is
a display); ``serve`` runs the server in the foreground without either; ``token`` prints the API token."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance import __version__
from appliance.config import Settings, default_home, load_settings
from appliance.errors import ConfigError
from appliance.launcher import EXIT_CONFIG, EXIT_OK, run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tool"]:
        return run_tool(argv[1:])
    parser = argparse.ArgumentParser(prog="caesar-appliance", description=__doc__)
    parser.add_argument("--version", action="version", version=f"caesar-appliance {__version__}")
    _add_server_options(parser)
    parser.add_argument("--no-browser", action="store_true", help="do not open the dashboard in the browser")
    commands = parser.add_subparsers(dest="command", metavar="command")
    _add_server_options(commands.add_parser("serve", help="run the server in the foreground (no browser, no tray)"))
    token_parser = commands.add_parser("token", help="print the API token for scripts (made on first use)")
    token_parser.add_argument("--home", help="the appliance's home folder")
    token_parser.add_argument("--config", type=Path, help="settings file (default: the platform config dir)")
    args = parser.parse_args(argv)
    cli = {"home": args.home, "host": getattr(args, "host", None), "port": getattr(args, "port", None)}
    if args.no_browser:
        cli["open_browser"] = False
    try:
        settings = load_settings(cli=cli, config_file=args.config)
    except ConfigError as exc:
        print(f"caesar-appliance: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "token":
        return print_token(settings, home_given=settings.home != default_home())
    return run(settings, desktop=args.command is None)


def print_token(settings: Settings, home_given: bool) -> int:
    """The API token of the appliance that is running, so that scripts reach it whatever --home it was started
    with; of the home named, when one is. What the token belongs to is said on stderr whenever it could surprise."""
    from appliance.access import Access
    from appliance.lock import running_appliances

    home = settings.home
    if not home_given:
        running = running_appliances()
        homes = [Path(info["home"]) for info in running]
        if len(homes) == 1:
            home = homes[0]
        elif len(homes) > 1 and home not in homes:
            listed = "; ".join(f"{info['home']} at {info.get('url', '?')}" for info in running)
            print(f"caesar-appliance: several appliances are running, say which with --home: {listed}", file=sys.stderr)
            return EXIT_CONFIG
        elif not homes:
            print(f"caesar-appliance: no appliance is running; this is the token of {home}", file=sys.stderr)
    token_path = home / settings.token_path.name
    if not token_path.exists():
        print(f"caesar-appliance: {home} had no token (no appliance has run there): made one", file=sys.stderr)
    print(Access(token_path, required=True).api_token)
    return EXIT_OK


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="folder for all data, database, queue and logs")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8765; 0 picks a free one)")
    parser.add_argument("--config", type=Path, help="settings file (default: the platform config dir)")


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
