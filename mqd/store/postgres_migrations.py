"""The PostgreSQL tables, version by version, and how to bring an older database up to date.

Everything lives in one PostgreSQL schema (``mq`` unless the URL says ``?schema=``); migrations
run under an advisory lock, so nodes starting together do not race, and the version reached is
recorded. Every node of a deployment runs the same mqd version: stop them all to upgrade.

- 1: queues, messages (with the index that makes "the oldest ready message" one seek) and
  idempotency keys; the operations were PL/pgSQL functions.
- 2: receive() said where a dead letter came from.
- 3: the functions are gone (the queue semantics live in the broker; the store's statements are
  in postgres_writes.py); queue depths are counters (queue_depths, a few rows per queue that
  changes add to, so nodes do not queue behind one row), so stats and totals never count
  messages.
- 4: imports (mqctl import's progress per source and queue: the last exported id stored).
- 5: the queue policies (docs/policies.md): a message's priority, group and expiry, a queue's
  settings for them, its bytes of content (beside its depth), max_rate's token buckets, and
  exchanges (fan-out), as their bindings to queues.
"""

from __future__ import annotations

import re

SCHEMA_VERSION = 5
NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel nodes tell each other of changes on."""
    return f"mq_{schema}"


def tables(schema: str) -> str:
    """The tables as version 1 created them, for ``schema`` (a validated identifier)."""
    s = schema
    return f"""
CREATE TABLE {s}.queues (
    id                   bigserial PRIMARY KEY,
    name                 text NOT NULL UNIQUE,
    created_at           double precision NOT NULL,
    max_attempts         integer,
    dead_letter_queue_id bigint REFERENCES {s}.queues (id),
    dedup_window         double precision NOT NULL
);
CREATE TABLE {s}.messages (
    id                    bigserial PRIMARY KEY,
    queue_id              bigint NOT NULL,
    visible_at            double precision NOT NULL,
    lease_token           text,
    attempts              integer NOT NULL DEFAULT 0,
    enqueued_at           double precision NOT NULL,
    dead_letter_source_id bigint,
    checksum              bigint NOT NULL,
    content               text NOT NULL
);
CREATE INDEX messages_by_visibility ON {s}.messages (queue_id, visible_at, id);
CREATE INDEX messages_by_dead_letter_source ON {s}.messages (dead_letter_source_id)
    WHERE dead_letter_source_id IS NOT NULL;
CREATE TABLE {s}.idempotency_keys (
    queue_id   bigint NOT NULL,
    key        text NOT NULL,
    message_id bigint NOT NULL,
    expires_at double precision NOT NULL,
    PRIMARY KEY (queue_id, key)
);

"""


def _drop_functions(schema: str) -> str:
    return f"""
DO $$ DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = '{schema}'::regnamespace LOOP
        EXECUTE 'DROP FUNCTION ' || f;
    END LOOP;
END $$;
"""


def _depth_counters(schema: str) -> str:
    s = schema
    return f"""
{_drop_functions(s)}
CREATE TABLE {s}.queue_depths (
    queue_id bigint NOT NULL,
    shard    integer NOT NULL,
    depth    bigint NOT NULL,
    PRIMARY KEY (queue_id, shard)
);
INSERT INTO {s}.queue_depths SELECT queue_id, 0, count(*) FROM {s}.messages GROUP BY queue_id;
"""


def _imports(schema: str) -> str:
    return f"""
CREATE TABLE {schema}.imports (
    source   text NOT NULL,
    queue_id bigint NOT NULL,
    last_id  bigint NOT NULL,
    PRIMARY KEY (source, queue_id)
);
"""


def _policies(schema: str) -> str:
    s = schema
    return f"""
ALTER TABLE {s}.queues ADD COLUMN message_ttl double precision, ADD COLUMN max_messages bigint,
    ADD COLUMN max_bytes bigint, ADD COLUMN overflow text NOT NULL DEFAULT 'reject',
    ADD COLUMN max_in_flight bigint, ADD COLUMN max_rate double precision;
ALTER TABLE {s}.messages ADD COLUMN priority smallint NOT NULL DEFAULT 0, ADD COLUMN grp text,
    ADD COLUMN expires_at double precision;
ALTER TABLE {s}.queue_depths ADD COLUMN bytes bigint NOT NULL DEFAULT 0;
DELETE FROM {s}.queue_depths;
INSERT INTO {s}.queue_depths
    SELECT queue_id, 0, count(*), sum(octet_length(content)) FROM {s}.messages GROUP BY queue_id;
DROP INDEX {s}.messages_by_visibility;
CREATE INDEX messages_by_visibility ON {s}.messages (queue_id, visible_at, priority DESC, id);
CREATE INDEX messages_by_group ON {s}.messages (queue_id, grp, id) WHERE grp IS NOT NULL;
CREATE INDEX messages_by_expiry ON {s}.messages (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE {s}.queue_buckets (
    queue_id bigint PRIMARY KEY,
    tokens   double precision NOT NULL,
    at       double precision NOT NULL
);
CREATE TABLE {s}.exchange_bindings (
    exchange text NOT NULL,
    queue_id bigint NOT NULL,
    PRIMARY KEY (exchange, queue_id)
);
CREATE INDEX exchange_bindings_by_queue ON {s}.exchange_bindings (queue_id);
"""


# version -> the statements that bring a database of the version before it to it
UPGRADES = {2: lambda schema: "", 3: _depth_counters, 4: _imports, 5: _policies}
