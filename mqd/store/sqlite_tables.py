"""The SQLite schema, versioned with ``PRAGMA user_version`` and marked with our application id.

Message states live in two columns (see store/base.py): ``visible_at`` (0 = ready, otherwise
hidden until then) and ``lease_token`` (set while leased). The index on (queue_id, visible_at)
ends with the rowid, so "the oldest ready message of a queue" is a single seek, and so is "the
next hidden message to become visible".
"""

import dataclasses
import sqlite3

APPLICATION_ID = 0x6D710001  # "mq", format 1: tells our files from other SQLite databases
SCHEMA_VERSION = 3

_IMPORTS = """
CREATE TABLE imports (
    source   TEXT NOT NULL,
    queue_id INTEGER NOT NULL,
    last_id  INTEGER NOT NULL,
    PRIMARY KEY (source, queue_id)
) WITHOUT ROWID;
"""

# 3: the queue policies (docs/policies.md): a message's priority, group and expiry; a queue's
# settings for them and its bytes of content; exchanges (fan-out), as their bindings to queues.
# Ready messages are found by priority, then id; a group's next message by one seek; expired
# ones by one walk over those that can expire.
_POLICIES = """
ALTER TABLE queues ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN message_ttl REAL;
ALTER TABLE queues ADD COLUMN max_messages INTEGER;
ALTER TABLE queues ADD COLUMN max_bytes INTEGER;
ALTER TABLE queues ADD COLUMN overflow TEXT NOT NULL DEFAULT 'reject';
ALTER TABLE queues ADD COLUMN max_in_flight INTEGER;
ALTER TABLE queues ADD COLUMN max_rate REAL;
ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN grp TEXT;
ALTER TABLE messages ADD COLUMN expires_at REAL;
UPDATE queues SET bytes = (SELECT coalesce(sum(length(CAST(content AS BLOB))), 0) FROM messages m
                           WHERE m.queue_id = queues.id);
DROP INDEX messages_by_visibility;
CREATE INDEX messages_by_visibility ON messages (queue_id, visible_at, priority DESC);
CREATE INDEX messages_by_group ON messages (queue_id, grp) WHERE grp IS NOT NULL;
CREATE INDEX messages_by_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE exchange_bindings (
    exchange TEXT NOT NULL,
    queue_id INTEGER NOT NULL,
    PRIMARY KEY (exchange, queue_id)
) WITHOUT ROWID;
CREATE INDEX exchange_bindings_by_queue ON exchange_bindings (queue_id);
"""

SCHEMA_1 = """
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
"""  # the tables as version 1 made them
SCHEMA = SCHEMA_1 + _IMPORTS + _POLICIES

# version -> what brings a store of the version before it to it. 2: imports (mqctl import's
# progress per source and queue: the last exported id stored). 3: the policies.
UPGRADES = {2: _IMPORTS, 3: _POLICIES}

# A backup (sqlite_backup.py) carries one more table, removed at its first start: when it was
# taken and the highest message id in it.
MARK_TABLE = "mq_backup"


@dataclasses.dataclass(frozen=True)
class BackupMark:
    taken_at: float
    highest_id: int


def read_mark(connection: sqlite3.Connection) -> BackupMark | None:
    """The mark of a backup not yet started from, if this database is one."""
    found = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MARK_TABLE,))
    if found.fetchone() is None:
        return None
    row = connection.execute(f"SELECT taken_at, highest_id FROM {MARK_TABLE}").fetchone()
    return BackupMark(row[0], row[1]) if row else None
