"""mq's client library: every operation of mqd, synchronous (``Client``) or asyncio
(``AsyncClient``), and streams (``AsyncClient.publisher()``, ``AsyncClient.consume()``).

    import mq
    with mq.Client("http://127.0.0.1:8000") as client:
        client.create_queue("jobs")
        client.send("jobs", {"n": 1})
        for message in client.receive("jobs", count=10, lease=30):
            ...
            message.ack()

``import mq`` stays light (the standard library and click's neighbours only): the asyncio
client and aiohttp load on first use of ``mq.AsyncClient``. The guide is docs/client.md.
"""

from mqd import __version__

from .errors import (
    ApiError,
    BackupNotWritten,
    BadUrl,
    Conflict,
    ConnectionFailed,
    DiskFull,
    Forbidden,
    InvalidRequest,
    MqError,
    QueueFull,
    QueueNotFound,
    ReceiptNotFound,
    ServerError,
    SubscriptionNotFound,
    Timeout,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from .messages import JsonNumber, Message
from .sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "BackupNotWritten",
    "BadUrl",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "DiskFull",
    "Forbidden",
    "InvalidRequest",
    "JsonNumber",
    "Message",
    "MqError",
    "QueueFull",
    "QueueNotFound",
    "ReceiptNotFound",
    "ServerError",
    "SubscriptionNotFound",
    "Timeout",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "__version__",
]


def __getattr__(name: str):
    if name == "AsyncClient":  # aiohttp is imported only by those who use it
        from .aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'mq' has no attribute {name!r}")
