"""The daemon's configuration: one frozen dataclass, from flags > environment > file > defaults.

Every value is validated here, once, so the rest of the daemon can trust it; a bad value is a
ConfigError whose message names the setting and where it came from. The configuration file is
TOML with the flags' names as keys (``data-dir`` or ``data_dir``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import protocol

FSYNC_MODES = ("always", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
CONSOLE_MODES = ("on", "read-only", "off")
TOKEN_VARIABLE = "MQD_TOKEN"


class ConfigError(Exception):
    """A setting has a value mqd cannot use."""


@dataclasses.dataclass(frozen=True)
class Config:
    host: str = protocol.DEFAULT_HOST
    port: int = protocol.DEFAULT_PORT
    tcp: bool = True
    unix: Path | None = None
    data_dir: Path = Path(protocol.DEFAULT_DATA_DIR)
    store: str | None = None  # a postgresql:// URL; None: the embedded SQLite store in data_dir
    fsync: str = "always"
    min_free_bytes: int = 64 * 1024 * 1024
    repair: bool = False  # --repair only: never from the environment or a file
    log_level: str = "info"
    log_format: str = "text"
    max_body_bytes: int = protocol.DEFAULT_MAX_BODY_BYTES
    max_header_bytes: int = 8190
    max_headers: int = 100
    keepalive_timeout: float = 60.0
    max_waiters: int = 4096
    max_streams: int = protocol.DEFAULT_MAX_STREAMS
    max_wait: float = float(protocol.MAX_WAIT_SECONDS)
    shutdown_timeout: float = 10.0
    pidfile: Path | None = None
    token_file: Path | None = None
    insecure: bool = False
    console: str = "on"  # the web console at /console/: on, read-only or off
    token: str | None = dataclasses.field(default=None, repr=False)

    @property
    def url(self) -> str:
        if not self.tcp and self.unix is not None:
            return f"unix:{self.unix}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def loopback_only(self) -> bool:
        return not self.tcp or is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to anything


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("must be a number") from None


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _max_wait(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= protocol.MAX_WAIT_SECONDS:
        raise ValueError(f"must be from 0 to {protocol.MAX_WAIT_SECONDS}")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.lower()
        if value not in options:
            raise ValueError(f"must be one of: {', '.join(options)}")
        return value

    return parse


def _path(text: str) -> Path:
    if not text:
        raise ValueError("must not be empty")
    return Path(text)


def _store_url(text: str) -> str:
    if not text.startswith(protocol.STORE_URL_SCHEMES):
        raise ValueError("must be a postgresql:// URL (leave it unset for the embedded SQLite store)")
    return text


def _bool(text: str) -> bool:
    value = text.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


# setting -> (environment variable, parser); the flag is --setting-name, the file key setting-name
SETTINGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "host": ("MQD_HOST", str),
    "port": ("MQD_PORT", _port),
    "tcp": ("MQD_TCP", _bool),
    "unix": ("MQD_UNIX", _path),
    "data_dir": ("MQD_DATA_DIR", _path),
    "store": ("MQD_STORE", _store_url),
    "fsync": ("MQD_FSYNC", _choice(FSYNC_MODES)),
    "min_free_bytes": ("MQD_MIN_FREE_BYTES", _non_negative_int),
    "log_level": ("MQD_LOG_LEVEL", _choice(LOG_LEVELS)),
    "log_format": ("MQD_LOG_FORMAT", _choice(LOG_FORMATS)),
    "max_body_bytes": ("MQD_MAX_BODY_BYTES", _positive_int),
    "max_header_bytes": ("MQD_MAX_HEADER_BYTES", _positive_int),
    "max_headers": ("MQD_MAX_HEADERS", _positive_int),
    "keepalive_timeout": ("MQD_KEEPALIVE_TIMEOUT", _positive_float),
    "max_waiters": ("MQD_MAX_WAITERS", _positive_int),
    "max_streams": ("MQD_MAX_STREAMS", _positive_int),
    "max_wait": ("MQD_MAX_WAIT", _max_wait),
    "shutdown_timeout": ("MQD_SHUTDOWN_TIMEOUT", _positive_float),
    "pidfile": ("MQD_PIDFILE", _path),
    "token_file": ("MQD_TOKEN_FILE", _path),
    "insecure": ("MQD_INSECURE", _bool),
    "console": ("MQD_CONSOLE", _choice(CONSOLE_MODES)),
}


def read_file(path: Path) -> dict[str, Any]:
    """The settings of a TOML file, keyed like SETTINGS; unknown keys are errors."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    settings = {}
    for key, value in document.items():
        name = key.replace("-", "_")
        if name == "token":
            raise ConfigError(f"{path}: keep the token out of the configuration file; use token-file")
        if name not in SETTINGS:
            known = ", ".join(k.replace("_", "-") for k in SETTINGS)
            raise ConfigError(f"{path}: unknown setting '{key}' (known: {known})")
        if isinstance(value, dict | list):
            raise ConfigError(f"{path}: {key} must be a single value")
        settings[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return settings


def load(flags: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> Config:
    """Build the configuration; ``flags`` holds only the options given on the command line
    (plus ``config``, the file to read, if given)."""
    config_file = flags.get("config") or environ.get("MQD_CONFIG")
    from_file = read_file(Path(config_file)) if config_file else {}
    values: dict[str, Any] = {}
    for name, (variable, parse) in SETTINGS.items():
        if flags.get(name) is not None:
            source, raw = f"--{name.replace('_', '-')}", flags[name]
        elif variable in environ:
            source, raw = variable, environ[variable]
        elif name in from_file:
            source, raw = f"{config_file}: {name.replace('_', '-')}", from_file[name]
        else:
            continue
        try:
            values[name] = parse(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r}: {exc}") from None
    values["token"] = _token(values.get("token_file"), environ)
    values["repair"] = bool(flags.get("repair"))
    config = Config(**values)
    _check(config)
    return config


def _token(token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    if token_file is not None and environ.get(TOKEN_VARIABLE):
        raise ConfigError(f"give the access token in {TOKEN_VARIABLE} or --token-file, not both")
    if token_file is None:
        return environ.get(TOKEN_VARIABLE) or None
    try:
        info = token_file.stat()
        token = token_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the token file {token_file} can be read by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"make it readable by its owner only: chmod 600 {token_file}"
        )
    if not token:
        raise ConfigError(f"the token file {token_file} is empty")
    return token


def _check(config: Config) -> None:
    """Refuse settings that cannot work together, and Redis' protected mode."""
    if not config.tcp and config.unix is None:
        raise ConfigError("with --no-tcp, give --unix PATH: mqd must listen somewhere")
    if not config.loopback_only and config.token is None and not config.insecure:
        raise ConfigError(
            f"refusing to listen on {config.host} without an access token: anyone who can reach it "
            f"could read and write every queue. Set {TOKEN_VARIABLE} or --token-file, listen on "
            "127.0.0.1, or pass --insecure if the network is trusted"
        )


def describe(config: Config) -> str:
    """The configuration as a TOML file that ``--config`` reads back to the same settings (the
    token is never shown; ``--repair`` is for one start only and is not a setting)."""
    lines = []
    for name in SETTINGS:
        value = getattr(config, name)
        key = name.replace("_", "-")
        if value is None:
            lines.append(f"# {key} is not set")
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value!r}")
        else:  # a TOML basic string: JSON's escapes are TOML's
            lines.append(f"{key} = {json.dumps(str(value), ensure_ascii=False)}")
    lines.append(f"# access token: {'set' if config.token else 'none'}")
    return "\n".join(lines)
