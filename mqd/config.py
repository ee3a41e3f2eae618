"""The daemon's configuration: one frozen dataclass, from flags > environment > defaults.

Every value is validated here, once, so the rest of the daemon can trust it; a bad value is a
ConfigError whose message names the setting and where it came from.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import protocol

FSYNC_MODES = ("always", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A setting has a value mqd cannot use."""


@dataclasses.dataclass(frozen=True)
class Config:
    host: str = protocol.DEFAULT_HOST
    port: int = protocol.DEFAULT_PORT
    data_dir: Path = Path(protocol.DEFAULT_DATA_DIR)
    fsync: str = "always"
    log_level: str = "info"
    max_body_bytes: int = protocol.DEFAULT_MAX_BODY_BYTES
    keepalive_timeout: float = 60.0
    max_waiters: int = 4096
    shutdown_timeout: float = 10.0
    pidfile: Path | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


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


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise ValueError("must be greater than 0")
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


# setting -> (environment variable, parser)
SETTINGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "host": ("MQD_HOST", str),
    "port": ("MQD_PORT", _port),
    "data_dir": ("MQD_DATA_DIR", _path),
    "fsync": ("MQD_FSYNC", _choice(FSYNC_MODES)),
    "log_level": ("MQD_LOG_LEVEL", _choice(LOG_LEVELS)),
    "max_body_bytes": ("MQD_MAX_BODY_BYTES", _positive_int),
    "keepalive_timeout": ("MQD_KEEPALIVE_TIMEOUT", _positive_float),
    "max_waiters": ("MQD_MAX_WAITERS", _positive_int),
    "shutdown_timeout": ("MQD_SHUTDOWN_TIMEOUT", _positive_float),
    "pidfile": ("MQD_PIDFILE", _path),
}


def load(flags: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> Config:
    """Build the configuration; ``flags`` holds only the options given on the command line."""
    values: dict[str, Any] = {}
    for name, (variable, parse) in SETTINGS.items():
        if flags.get(name) is not None:
            source, raw = f"--{name.replace('_', '-')}", flags[name]
        elif variable in environ:
            source, raw = variable, environ[variable]
        else:
            continue
        try:
            values[name] = parse(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r}: {exc}") from None
    return Config(**values)
