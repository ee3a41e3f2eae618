"""The SQLite schema, versioned with ``PRAGMA user_version`` and marked with our application id.

Message states live in two columns (see store/base.py): ``visible_at`` (0 = ready, otherwise
hidden until then) and ``lease_token`` (set while leased). The index on (queue_id, visible_at)
ends with the rowid, so "the oldest ready message of a queue" is a single seek, and so is "the
next hidden message to become visible".
"""

APPLICATION_ID = 0x6D710001  # "mq", format 1: tells our files from other SQLite databases
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE queues (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    name                 TEXT NOT NULL UNIQUE,
    created_at           REAL NOT NULL,
    max_attempts         INTEGER,
    dead_letter_queue_id INTEGER,
    dedup_window         REAL NOT NULL,
    depth                INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE messages (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id              INTEGER NOT NULL,
    visible_at            REAL NOT NULL,
    lease_token           TEXT,
    attempts              INTEGER NOT NULL,
    enqueued_at           REAL NOT NULL,
    dead_letter_source_id INTEGER,
    checksum              INTEGER NOT NULL,
    content               TEXT NOT NULL
);
CREATE INDEX messages_by_visibility ON messages (queue_id, visible_at);
CREATE INDEX messages_by_dead_letter_source ON messages (dead_letter_source_id)
    WHERE dead_letter_source_id IS NOT NULL;
CREATE TABLE idempotency_keys (
    queue_id   INTEGER NOT NULL,
    key        TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (queue_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
"""
