"""What the daemon and its clients agree on: addresses, limits and the shape of names.

Standard library only: mqctl imports this module on its fast start-up path.
"""

import re

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_DATA_DIR = "data"
PIDFILE_NAME = "mqd.pid"  # in the data directory, unless --pidfile says otherwise
STORE_URL_SCHEMES = ("postgresql://", "postgres://")  # --store: queues in PostgreSQL

# Queue names: what SQS and RabbitMQ users can type without quoting, safe in a URL path.
QUEUE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")
QUEUE_NAME_RULE = "1-128 characters of A-Z a-z 0-9 _ - . not starting with '.'"

MAX_BATCH = 1000  # messages in one batch send or one receive
MAX_WAIT_SECONDS = 60  # longest long-poll
MAX_LEASE_SECONDS = 43200  # 12 hours, as SQS's visibility timeout
MIN_LEASE_SECONDS = 1
MAX_DELAY_SECONDS = 7 * 24 * 3600
DEFAULT_DEDUP_WINDOW_SECONDS = 300
MAX_DEDUP_WINDOW_SECONDS = 7 * 24 * 3600
MAX_IDEMPOTENCY_KEY_LENGTH = 256
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"

# Streams (GET /stream, a WebSocket): docs/streams.md.
STREAM_PATH = "/stream"
DEFAULT_MAX_STREAMS = 1024  # open streams per mqd (--max-streams); beyond, 503 before the upgrade
STREAM_IN_FLIGHT = 1000  # requests of one stream the store is working on; beyond, mqd stops reading
STREAM_BYTES_IN_FLIGHT = 16 * 1024 * 1024  # the same, in bytes of frames
MAX_CREDIT = 1000  # messages a subscription may be owed at once
MAX_HELD = 10000  # leased messages one stream holds unacknowledged; beyond, deliveries pause
MAX_SUBSCRIPTIONS = 64  # per stream
STREAM_HEARTBEAT_SECONDS = 30.0  # mqd pings; a stream that does not answer is closed
MAX_SEQ = 2**53 - 1  # the largest seq a client may number its requests with (exact in every JSON)
MAX_ATTEMPTS = 1000  # the most a queue's max_attempts may be
MAX_PRIORITY = 9  # priorities are 0 (the default) to 9: higher first
MAX_GROUP_LENGTH = 256
MAX_TTL_SECONDS = 365 * 24 * 3600
MAX_RATE = 1_000_000  # deliveries per second a queue's max_rate may allow
MAX_QUEUE_MESSAGES = 2**53 - 1  # the most max_messages / max_bytes / max_in_flight may say
# The queue settings a change (PATCH, mqctl set --clear) may remove with null: the limits.
CLEARABLE_SETTINGS = (
    "max_attempts",
    "dead_letter_queue",
    "message_ttl",
    "max_messages",
    "max_bytes",
    "max_in_flight",
    "max_rate",
)
MAX_NESTING = 512  # levels of arrays and objects in a message's content

# Every error reply is {"error": "<a sentence for people>", "code": "<one of these, for programs>"}.
# Clients decide by the code: the sentence may be improved at any time.
ERROR_CODES = {
    "invalid_request": "a field, parameter or body is not acceptable (400)",
    "invalid_name": "a queue name breaks the naming rule (400)",
    "unauthorized": "the access token is missing or wrong (401)",
    "forbidden": "the request came from a web page of another site (403)",
    "queue_not_found": "no queue of that name (404)",
    "exchange_not_found": "no exchange of that name (404)",
    "receipt_not_found": "the receipt is unknown or its lease has ended (404)",
    "route_not_found": "no such route (404)",
    "method_not_allowed": "the route does not take this method (405)",
    "conflict": "the request contradicts the queue as it exists (409)",
    "not_supported": "this mqd's store does not do that: a PostgreSQL store is backed up with pg_dump (409)",
    "queue_full": "the queue is at its max_messages or max_bytes; retry after Retry-After (429)",
    "body_too_large": "the body is over the limit (413)",
    "unsupported_media_type": "the body is not JSON (415)",
    "upgrade_required": "GET /stream without a WebSocket upgrade (426)",
    "internal_error": "mqd failed at this one request and kept nothing of it (500)",
    "data_corrupt": "stored data is damaged (500)",
    "too_many_waiters": "too many long-polls are waiting; retry after Retry-After (503)",
    "too_many_streams": "too many streams are open; retry after Retry-After (503)",
    "subscription_not_found": "no subscription of that number on this stream (streams)",
    "shutting_down": "mqd is stopping; retry after Retry-After (503)",
    "store_unavailable": "the store cannot be reached right now; retry after Retry-After (503)",
    "store_failed": "the store failed; mqd takes no more work until it is restarted (503)",
    "disk_full": "the disk is (nearly) full; retry after Retry-After (507)",
}


def is_valid_queue_name(name: str) -> bool:
    return QUEUE_NAME_PATTERN.fullmatch(name) is not None


def url_file_for(pidfile: str) -> str:
    """Where mqd records the URL it serves, beside its pidfile (mqd.pid -> mqd.url)."""
    stem = pidfile[: -len(".pid")] if pidfile.endswith(".pid") else pidfile
    return stem + ".url"
