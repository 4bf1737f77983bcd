"""Settings: the defaults in appliance.toml, overridden by the user's file, the environment and the command line."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import psutil

from appliance.errors import ConfigError

APP_NAME = "caesar-appliance"
LOCK_NAME = "appliance.lock"
ENV_PREFIX = "CAESAR_APPLIANCE_"
DEFAULTS_FILE = Path(__file__).with_name("appliance.toml")


@dataclass(frozen=True)
class Settings:
    home: Path
    host: str
    port: int
    allowed_hosts: tuple[str, ...]
    user: str
    upload_max_bytes: int
    disk_reserve_bytes: int
    decompressed_max_bytes: int
    header_max_cards: int
    runner: str
    caesar_findsource: str
    job_cores: int
    job_walltime_seconds: float
    job_cancel_grace_seconds: float
    queue_workers: int
    queue_poll_seconds: float
    log_level: str
    log_max_bytes: int
    log_backups: int
    shutdown_grace_seconds: float
    require_login: bool
    open_browser: bool
    tray: bool
    inbox: bool
    inbox_dir: str
    inbox_settle_seconds: float
    inbox_tag: str
    inbox_app: str
    inbox_options: dict[str, Any]
    runners: dict[str, dict[str, Any]]  # [runners.<name>]: each runner's own settings
    apps: dict[str, dict[str, Any]]  # [apps.<name>]: each app's runner and image

    @property
    def db_path(self) -> Path:
        return self.home / "appliance.db"

    @property
    def queue_path(self) -> Path:
        return self.home / "queue.db"

    @property
    def lock_path(self) -> Path:
        return self.home / LOCK_NAME

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def tmp_dir(self) -> Path:
        """Scratch space on the same file system as data/, so a finished upload is renamed, not copied."""
        return self.home / "tmp"

    @property
    def cache_dir(self) -> Path:
        """What is made once per file or job and kept for the browser: viewer copies, quicklooks, plots."""
        return self.home / "cache"

    @property
    def token_path(self) -> Path:
        return self.home / "api-token"

    @property
    def inbox_path(self) -> Path:
        return Path(self.inbox_dir).expanduser().resolve() if self.inbox_dir else self.home / "inbox"

    @property
    def cores(self) -> int:
        """Cores jobs may use at once."""
        return self.job_cores or os.cpu_count() or 1

    @property
    def decompressed_limit(self) -> int:
        """Largest size a gzipped upload may decompress to, in bytes."""
        return self.decompressed_max_bytes or psutil.virtual_memory().total // 4

    @property
    def workers(self) -> int:
        """Queue worker threads: enough to fill every core with 1-core jobs."""
        return self.queue_workers or max(2, self.cores)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "appliance.toml"


def load_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the four sources, highest first: cli > env > user config file > appliance.toml.

    ``cli`` holds only the flags the user actually gave (None values are ignored). The user config file is
    ``config_file``, else ``$CAESAR_APPLIANCE_CONFIG``, else the platform config dir; a missing default file is fine,
    a missing file named explicitly is an error.
    """
    env = os.environ if env is None else env
    defaults = _read_toml(DEFAULTS_FILE)
    values: dict[str, Any] = dict(defaults)

    explicit = config_file or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    user_file = explicit or default_config_file()
    if user_file.exists():
        _merge(values, _checked(_read_toml(user_file), defaults, f"config file {user_file}"))
    elif explicit:
        raise ConfigError(f"config file {explicit} does not exist")

    for key, default in defaults.items():
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None:
            _merge(values, {key: _from_env(key, raw, default)})

    _merge(values, _checked({k: v for k, v in (cli or {}).items() if v is not None}, defaults, "command line"))
    return _build(values)


TABLES_OF_TABLES = ("runners", "apps")  # merged key by key: a user file sets one runner's setting, not all of them


def _merge(values: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if key in TABLES_OF_TABLES:
            merged = {name: dict(table) for name, table in values.get(key, {}).items()}
            for name, table in value.items():
                if not isinstance(table, Mapping):
                    raise ConfigError(f"[{key}.{name}] must be a table, got {table!r}")
                merged[name] = {**merged.get(name, {}), **table}
            values[key] = merged
        else:
            values[key] = value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _checked(values: Mapping[str, Any], defaults: Mapping[str, Any], source: str) -> dict[str, Any]:
    for key, value in values.items():
        if key not in defaults:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        if not _same_kind(value, defaults[key]):
            raise ConfigError(f"{source}: setting {key!r} must be {_kind(defaults[key])}, got {value!r}")
    return dict(values)


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return isinstance(value, type(default))


def _kind(default: Any) -> str:
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list of strings",
        dict: "a table",
    }[type(default)]


def _from_env(key: str, raw: str, default: Any) -> Any:
    name = ENV_PREFIX + key.upper()
    try:
        if isinstance(default, bool):
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list):
            return [part.strip() for part in raw.split(",") if part.strip()]
        if isinstance(default, dict):
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError(raw)
            return value
        return raw
    except ValueError:
        raise ConfigError(f"environment {name} must be {_kind(default)}, got {raw!r}") from None


def default_home() -> Path:
    """Where everything lives unless --home, CAESAR_APPLIANCE_HOME or the settings file say otherwise."""
    return Path(platformdirs.user_data_dir(APP_NAME)).resolve()


def _build(values: dict[str, Any]) -> Settings:
    home = Path(values["home"]).expanduser() if values["home"] else default_home()
    settings = Settings(
        **{
            **values,
            "home": home.resolve(),
            "allowed_hosts": tuple(values["allowed_hosts"]),
            "queue_poll_seconds": float(values["queue_poll_seconds"]),
            "job_walltime_seconds": float(values["job_walltime_seconds"]),
            "job_cancel_grace_seconds": float(values["job_cancel_grace_seconds"]),
            "shutdown_grace_seconds": float(values["shutdown_grace_seconds"]),
            "inbox_settle_seconds": float(values["inbox_settle_seconds"]),
        }
    )
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, got {settings.port}")
    for name in ("upload_max_bytes", "header_max_cards", "log_max_bytes", "job_walltime_seconds"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(settings, name)}")
    for name in (
        "decompressed_max_bytes",
        "job_cores",
        "queue_workers",
        "job_cancel_grace_seconds",
        "inbox_settle_seconds",
    ):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{name} must not be negative, got {getattr(settings, name)}")
    if settings.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {settings.log_level!r}")
    return settings
