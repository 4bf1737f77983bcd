"""Settings: appliance.toml documents every setting; CLI > environment > user file > defaults."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import psutil
import pytest

from appliance.config import DEFAULTS_FILE, TABLES_OF_TABLES, Settings, load_settings
from appliance.errors import ConfigError
from tests.conftest import REPO


def test_appliance_toml_documents_every_setting_with_a_comment():
    defaults = tomllib.loads(DEFAULTS_FILE.read_text())
    assert set(defaults) == {f.name for f in dataclasses.fields(Settings)}
    lines = DEFAULTS_FILE.read_text().splitlines()
    for key in defaults:
        if key in TABLES_OF_TABLES:  # [runners.<name>], [apps.<name>]: each table explained
            for name in defaults[key]:
                index = lines.index(f"[{key}.{name}]")
                assert lines[index - 1].startswith("#"), f"[{key}.{name}] is not explained by a comment"
            continue
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
        while index > 0 and "=" in lines[index - 1] and not lines[index - 1].startswith("#"):
            index -= 1  # keys grouped under one comment
        assert lines[index - 1].startswith("#"), f"{key} is not explained by a comment"
    assert (REPO / "appliance.toml").resolve() == DEFAULTS_FILE.resolve()


def test_defaults_bind_loopback_and_use_the_platform_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    settings = load_settings(env={})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8765
    assert settings.home == tmp_path / "xdg-data" / "caesar-appliance"
    assert settings.upload_max_bytes == 20 * 2**30
    assert settings.decompressed_limit == psutil.virtual_memory().total // 4
    assert settings.replace(decompressed_max_bytes=2**30).decompressed_limit == 2**30


def test_precedence_cli_over_env_over_user_file_over_defaults(tmp_path):
    user_file = tmp_path / "appliance.toml"
    user_file.write_text('port = 9001\nlog_level = "DEBUG"\nqueue_workers = 3\nhome = "/srv/from-file"\n')
    env = {"CAESAR_APPLIANCE_PORT": "9002", "CAESAR_APPLIANCE_QUEUE_WORKERS": "4"}
    settings = load_settings(cli={"port": 9003, "host": None}, env=env, config_file=user_file)
    assert settings.port == 9003  # cli
    assert settings.queue_workers == 4  # env
    assert settings.log_level == "DEBUG"  # user file
    assert settings.home == Path("/srv/from-file")
    assert settings.host == "127.0.0.1"  # default; a None flag means "not given"


def test_config_file_from_environment_and_lists_from_comma_separated_env(tmp_path):
    user_file = tmp_path / "lab.toml"
    user_file.write_text('allowed_hosts = ["astro-lab.example.org"]\n')
    settings = load_settings(env={"CAESAR_APPLIANCE_CONFIG": str(user_file)})
    assert settings.allowed_hosts == ("astro-lab.example.org",)
    settings = load_settings(env={"CAESAR_APPLIANCE_ALLOWED_HOSTS": "a.example, b.example"})
    assert settings.allowed_hosts == ("a.example", "b.example")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("prot = 1\n", "unknown setting 'prot'"),
        ('port = "eighty"\n', "'port' must be an integer"),
        ("port = 70000\n", "port must be between 0 and 65535"),
        ("decompressed_max_bytes = -1\n", "decompressed_max_bytes must not be negative"),
        ("header_max_cards = 0\n", "header_max_cards must be positive"),
        ('log_level = "LOUD"\n', "log_level must be"),
        ("port = [\n", "cannot read"),
    ],
)
def test_bad_user_file_is_a_clear_error(tmp_path, content, message):
    user_file = tmp_path / "appliance.toml"
    user_file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, config_file=user_file)


def test_bad_environment_value_and_missing_explicit_file_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="CAESAR_APPLIANCE_PORT must be an integer"):
        load_settings(env={"CAESAR_APPLIANCE_PORT": "http"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={}, config_file=tmp_path / "missing.toml")
