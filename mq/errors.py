"""What can go wrong talking to mqd, as exceptions a program can catch by kind.

Every error mqd answers carries a stable code (docs/api.md); each code has its class here, and
the class is what to catch (``except mq.QueueNotFound``). The sentence is for people and may
change; ``code`` and ``status`` are the contract.
"""

from __future__ import annotations

from typing import Any


class MqError(Exception):
    """Anything the client library raises."""

    code: str = "client_error"


class BadUrl(MqError, ValueError):
    """A URL for mqd that is not ``http://host:port`` or ``unix:/path``."""

    code = "bad_url"


class ConnectionFailed(MqError):
    """mqd could not be reached, or the connection broke before its answer arrived (the request
    may or may not have been carried out: resend with an idempotency key)."""

    code = "connection_failed"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"mqd is not running at {url} ({reason})")
        self.url = url
        self.reason = reason


class Timeout(MqError):
    """mqd did not answer in time."""

    code = "timeout"


class BackupNotWritten(MqError):
    """A backup could not be written whole (the disk, or a transfer that did not match what
    mqd sent); nothing was left under the name asked for."""

    code = "backup_not_written"


class ApiError(MqError):
    """mqd refused a request: ``status`` (HTTP's, or None on a stream), ``code`` (stable),
    ``message`` (one sentence) and ``body`` (the whole reply)."""

    code = "api_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body
        if code is not None:
            self.code = code


class InvalidRequest(ApiError):
    """invalid_request, invalid_name: a field, parameter, name or body mqd does not accept."""


class Unauthorized(ApiError):
    """unauthorized: mqd wants an access token (token= or MQ_TOKEN), or another one."""


class Forbidden(ApiError):
    """forbidden: the request looked like a web page's of another site."""


class QueueNotFound(ApiError):
    """queue_not_found."""


class ReceiptNotFound(ApiError):
    """receipt_not_found: unknown, or its lease ended (acked, released, run out, or its stream
    closed); the message may be delivered again."""


class SubscriptionNotFound(ApiError):
    """subscription_not_found: a stream's subscription that is not (or no longer) there."""


class Conflict(ApiError):
    """conflict: the queue exists with other settings, or is another's dead-letter queue."""


class TooLarge(ApiError):
    """body_too_large."""


class Unavailable(ApiError):
    """mqd cannot take this now (stopping, too many waiters or streams, the store unreachable or
    failed): retry later."""


class DiskFull(ApiError):
    """disk_full: mqd's disk is (nearly) full; receives and acks still work."""


class QueueFull(ApiError):
    """queue_full: the queue is at its max_messages or max_bytes (overflow reject) and stored
    nothing of the send: retry once consumers have made room."""


class ServerError(ApiError):
    """internal_error, data_corrupt: mqd failed at this request (and kept nothing of it)."""


BY_CODE: dict[str, type[ApiError]] = {
    "invalid_request": InvalidRequest,
    "invalid_name": InvalidRequest,
    "unsupported_media_type": InvalidRequest,
    "route_not_found": InvalidRequest,
    "method_not_allowed": InvalidRequest,
    "upgrade_required": InvalidRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "queue_not_found": QueueNotFound,
    "exchange_not_found": QueueNotFound,
    "receipt_not_found": ReceiptNotFound,
    "subscription_not_found": SubscriptionNotFound,
    "conflict": Conflict,
    "not_supported": Conflict,
    "body_too_large": TooLarge,
    "too_many_waiters": Unavailable,
    "too_many_streams": Unavailable,
    "shutting_down": Unavailable,
    "store_unavailable": Unavailable,
    "store_failed": Unavailable,
    "disk_full": DiskFull,
    "queue_full": QueueFull,
    "internal_error": ServerError,
    "data_corrupt": ServerError,
}


def error_of(status: int | None, body: Any, fallback: str) -> ApiError:
    """The exception for mqd's error reply ``body`` ({"error", "code"}); ``fallback`` is the
    sentence when the reply is not mqd's JSON."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body.get("code")
        kind = BY_CODE.get(code, ServerError if (status or 0) >= 500 else ApiError)
        return kind(body["error"].rstrip("."), code=code, status=status, body=body)
    kind = ServerError if (status or 0) >= 500 else ApiError
    return kind(fallback, status=status, body=body)
