"""What the daemon and its clients agree on: addresses, limits and the shape of names.

Standard library only: mqctl imports this module on its fast start-up path.
"""

import re

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_DATA_DIR = "data"

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
MAX_NESTING = 512  # levels of arrays and objects in a message's content

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"


def is_valid_queue_name(name: str) -> bool:
    return QUEUE_NAME_PATTERN.fullmatch(name) is not None


def url_file_for(pidfile: str) -> str:
    """Where mqd records the URL it serves, beside its pidfile (mqd.pid -> mqd.url)."""
    stem = pidfile[: -len(".pid")] if pidfile.endswith(".pid") else pidfile
    return stem + ".url"
