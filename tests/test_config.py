"""Configuration: flags > environment > file > defaults, validated once, shown by --print-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mqd import config


def load(flags=None, environ=None):
    return config.load(flags or {}, environ or {})


def test_defaults():
    settings = load()
    assert (settings.host, settings.port, settings.data_dir, settings.fsync) == (
        "127.0.0.1",
        8000,
        Path("data"),
        "always",
    )


def test_flags_win_over_environment_which_wins_over_the_file(tmp_path):
    file = tmp_path / "mqd.toml"
    file.write_text('port = 7000\nfsync = "off"\ndata-dir = "/srv/mq"\nlog_level = "debug"\n')
    settings = load(
        {"config": str(file), "port": "9000"},
        {"MQD_PORT": "8000", "MQD_FSYNC": "always"},
    )
    assert settings.port == 9000  # flag
    assert settings.fsync == "always"  # environment over file
    assert settings.data_dir == Path("/srv/mq")  # file, with a dashed key
    assert settings.log_level == "debug"  # file, with an underscored key


def test_the_file_can_come_from_the_environment(tmp_path):
    file = tmp_path / "mqd.toml"
    file.write_text("max-waiters = 12\ninsecure = true\n")
    settings = load({}, {"MQD_CONFIG": str(file)})
    assert settings.max_waiters == 12 and settings.insecure is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 8000\n", "unknown setting 'prot'"),
        ('port = "http"\n', "must be a whole number"),
        ("port = 70000\n", "between 0 and 65535"),
        ('fsync = "sometimes"\n', "must be one of: always, off"),
        ("port = [1]\n", "single value"),
        ('token = "x"\n', "keep the token out"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_bad_files_are_reported_clearly(tmp_path, text, message):
    file = tmp_path / "mqd.toml"
    file.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        load({"config": str(file)})


def test_a_missing_file_is_reported():
    with pytest.raises(config.ConfigError, match="cannot read the configuration file"):
        load({"config": "/nonexistent/mqd.toml"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MQD_PORT": "x"}, "MQD_PORT='x': must be a whole number"),
        ({"MQD_KEEPALIVE_TIMEOUT": "0"}, "greater than 0"),
        ({"MQD_TCP": "maybe"}, "true or false"),
        ({"MQD_TCP": "false"}, "give --unix PATH"),
    ],
)
def test_bad_environment_values_name_the_variable(environ, message):
    with pytest.raises(config.ConfigError, match=message):
        load({}, environ)


def test_print_config_shows_the_result_without_the_token(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mqd", "--print-config", "--port", "1234"],
        capture_output=True,
        text=True,
        env={"MQD_FSYNC": "off", "MQD_TOKEN": "hidden-value", "PATH": ""},
    )
    assert result.returncode == 0
    assert "port = 1234" in result.stdout and 'fsync = "off"' in result.stdout
    assert "hidden-value" not in result.stdout and "access token: set" in result.stdout


def test_what_print_config_prints_loads_back_to_the_same_settings(tmp_path):
    printed = tmp_path / "mqd.toml"
    odd_directory = tmp_path / 'a "quoted" and \\ back-slashed dir'
    flags = ["--port", "8300", "--data-dir", str(odd_directory), "--fsync", "off", "--max-wait", "5"]
    first = subprocess.run(
        [sys.executable, "-m", "mqd", "--print-config", *flags], capture_output=True, text=True
    )
    printed.write_text(first.stdout)
    again = subprocess.run(
        [sys.executable, "-m", "mqd", "--config", str(printed), "--print-config"],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert load({"config": str(printed)}, {}) == load(
        {"port": "8300", "data_dir": str(odd_directory), "fsync": "off", "max_wait": "5"}, {}
    )


def test_json_logs_are_one_object_per_line(mqd):
    import json

    daemon = mqd("--log-format", "json")
    daemon.call("POST", "/queues", {"name": "q"})
    daemon.terminate()
    entries = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    messages = [entry["message"] for entry in entries]
    assert any("listening on" in m for m in messages) and "queue 'q' created" in messages
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
