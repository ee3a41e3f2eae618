"""The typed keys under which the application holds the daemon's objects (aiohttp AppKeys)."""

from typing import Any

from aiohttp import web

from .broker import Broker
from .config import Config
from .metrics import Metrics
from .model import Clock
from .store.base import Store

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
BROKER = web.AppKey("broker", Broker)
METRICS = web.AppKey("metrics", Metrics)
CLOCK = web.AppKey("clock", Clock)
STREAMS = web.AppKey("streams", set[Any])  # the open streams (streams.Stream)
