"""The daemon's domain errors: one small flat family, raised by the store and the broker.

Each carries a sentence meant for the person at the other end of the API and a stable ``code``
(protocol.ERROR_CODES) for programs; the API maps the classes to HTTP statuses in one place
(api.py), so nothing below it knows about HTTP.
"""

from __future__ import annotations


class MqError(Exception):
    """Base of every error a client can be told about."""

    code = "internal_error"


class InvalidArgument(MqError):
    """A name, field or parameter the client sent is not acceptable."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code


class Unauthorized(MqError):
    """The request lacks the access token, or carries a wrong one."""

    code = "unauthorized"


class Forbidden(MqError):
    """The request bears a web browser's cross-site markers; a web page must not touch queues."""

    code = "forbidden"


class QueueNotFound(MqError):
    code = "queue_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"Queue '{name}' does not exist.")
        self.name = name


class ExchangeNotFound(MqError):
    code = "exchange_not_found"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Exchange '{name}' does not exist.")


class QueueGone(MqError):
    """A store was asked about a queue (by its id) that no longer exists: deleted, perhaps on
    another node. The broker looks the name up again; clients see QueueNotFound."""

    code = "queue_not_found"

    def __init__(self, queue_id: int) -> None:
        super().__init__(f"Queue {queue_id} no longer exists.")
        self.queue_id = queue_id


class QueueConflict(MqError):
    """The request contradicts the queue as it exists (other settings, a dead-letter link)."""

    code = "conflict"


class DeadLetterQueueInUse(QueueConflict):
    def __init__(self, name: str, users: list[str]) -> None:
        listed = ", ".join(f"'{user}'" for user in users)
        super().__init__(
            f"Queue '{name}' is the dead-letter queue of {listed}; delete or redeclare those first."
        )
        self.users = users


class ReceiptNotFound(MqError):
    code = "receipt_not_found"

    def __init__(self, receipt: str) -> None:
        super().__init__(
            f"Receipt '{receipt}' is unknown or its lease has ended; "
            "the message may have been acknowledged, released or leased again."
        )
        self.receipt = receipt


class TooManyWaiters(MqError):
    """The cap on concurrent long-poll receivers is reached; the client should retry later."""

    code = "too_many_waiters"


class TooManyStreams(MqError):
    """The cap on open streams is reached; the client should retry later."""

    code = "too_many_streams"


class SubscriptionNotFound(MqError):
    """A stream's request names a subscription it does not have (never made, or cancelled)."""

    code = "subscription_not_found"

    def __init__(self, number: int) -> None:
        super().__init__(f"This stream has no subscription {number}; subscribe first.")


class ShuttingDown(MqError):
    """The daemon is stopping and takes no new work."""

    code = "shutting_down"


class InternalError(MqError):
    """mqd itself failed to carry out this one operation (its log has the details); nothing of it
    was kept, and other clients' operations were not affected."""

    code = "internal_error"

    def __init__(self) -> None:
        super().__init__(
            "mqd failed to carry out this request and kept nothing of it; the error is in its log."
        )


class StorageFull(MqError):
    """The data directory has too little free space left to accept more messages."""

    code = "disk_full"


class QueueFull(MqError):
    """A send would take a bounded queue (max_messages, max_bytes) past its limit, and its
    overflow policy is to refuse: nothing of the send was stored."""

    code = "queue_full"

    def __init__(self, name: str, limit: str, *, never: bool = False) -> None:
        self.name = name
        self.never = never  # the send is larger than the limit itself: retrying cannot help
        if never:
            super().__init__(
                f"The send is larger than queue '{name}' may ever hold ({limit}); send less at once."
            )
        else:
            super().__init__(
                f"Queue '{name}' is full ({limit}); nothing was stored: retry after Retry-After, once "
                "consumers have made room."
            )


class StorageFailed(MqError):
    """The store could not confirm a write (an I/O error); its outcome is unknown."""

    code = "store_failed"


class NotSupported(MqError):
    """This mqd's store does not do that (a backup of PostgreSQL is PostgreSQL's own)."""

    code = "not_supported"


class StorageUnavailable(MqError):
    """The store cannot be reached right now (a lost database connection)."""

    code = "store_unavailable"


class DataDirectoryError(MqError):
    """The data directory cannot be used: missing permissions, or another mqd holds it."""

    def __init__(self, message: str, *, in_use: bool = False) -> None:
        super().__init__(message)
        self.in_use = in_use  # another mqd holds it (rather than: it cannot be used at all)


class DataCorrupt(MqError):
    """The data on disk is damaged or unreadable; raised at start-up, never repaired silently."""

    code = "data_corrupt"
