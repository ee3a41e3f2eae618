"""The PostgreSQL schema: tables, and the functions that make each queue operation one round trip.

Receiving is the pattern of pgmq, Que and graphile-worker: ``SELECT … FOR UPDATE SKIP LOCKED``
takes the oldest ready rows no other transaction holds, so consumers on every node work side by
side without blocking each other and no two get the same message. Visibility times come from the
database's clock, the one clock all nodes share. Every change that makes messages ready (or due
later) sends a NOTIFY, delivered at commit, so long-polls on every node wake up.

Everything lives in one PostgreSQL schema (``mq`` unless the URL says ``?schema=``); migrations
run under an advisory lock, so nodes starting together do not race. Tables are created at version
1 and changed by TABLE_CHANGES; functions hold no data, so an upgrade drops and recreates them all
(every node of a deployment runs the same mqd version).
"""

from __future__ import annotations

import re

SCHEMA_VERSION = 2
# What each version changed in the tables; the functions are recreated on every upgrade.
TABLE_CHANGES: dict[int, str] = {2: ""}  # 2: receive() says where a dead letter came from
NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def channel(schema: str) -> str:
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


def drop_functions(schema: str) -> str:
    return f"""
DO $$ DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = '{schema}'::regnamespace LOOP
        EXECUTE 'DROP FUNCTION ' || f;
    END LOOP;
END $$;
"""


def functions(schema: str) -> str:
    """The functions of the current version, for ``schema`` (a validated identifier)."""
    s = schema
    notify = f"'{channel(s)}'"
    return f"""
CREATE FUNCTION {s}.epoch() RETURNS double precision LANGUAGE sql VOLATILE
AS $$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;

-- The queue by name, or SQLSTATE P0002 (no_data_found): mqd turns it into "queue not found".
CREATE FUNCTION {s}.queue(p_name text) RETURNS {s}.queues LANGUAGE plpgsql STABLE AS $$
DECLARE q {s}.queues;
BEGIN
    SELECT * INTO q FROM {s}.queues WHERE name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = p_name;
    END IF;
    RETURN q;
END $$;

-- Leases and delays that have run out: ready again, in their original place (by id).
CREATE FUNCTION {s}.promote(p_queue bigint, p_now double precision) RETURNS void LANGUAGE sql AS $$
    UPDATE {s}.messages SET visible_at = 0, lease_token = NULL
    WHERE queue_id = p_queue AND visible_at > 0 AND visible_at <= p_now
$$;

CREATE FUNCTION {s}.send(p_node text, p_queue text, p_contents text[], p_delays double precision[],
                         p_checksums bigint[], p_keys text[])
RETURNS TABLE (id bigint, duplicate boolean, visible_at double precision) LANGUAGE plpgsql AS $$
DECLARE
    q {s}.queues := {s}.queue(p_queue);
    now_e double precision := {s}.epoch();
    new_id bigint;
    earlier bigint;
    claimed integer;
    ready integer := 0;
    due double precision;
BEGIN
    IF array_remove(p_keys, NULL) = '{{}}' THEN
        -- No idempotency keys: one set-based insert, ids in the order given.
        RETURN QUERY
            INSERT INTO {s}.messages AS m (queue_id, visible_at, attempts, enqueued_at, checksum, content)
            SELECT q.id, CASE WHEN u.d > 0 THEN now_e + u.d ELSE 0 END, 0, now_e, u.c, u.t
            FROM unnest(p_contents, p_delays, p_checksums) WITH ORDINALITY AS u(t, d, c, n)
            ORDER BY u.n
            RETURNING m.id, false, m.visible_at;
    ELSE
        FOR i IN 1 .. cardinality(p_contents) LOOP
            IF p_keys[i] IS NOT NULL THEN
                SELECT k.message_id INTO earlier FROM {s}.idempotency_keys k
                WHERE k.queue_id = q.id AND k.key = p_keys[i] AND k.expires_at > now_e;
                IF FOUND THEN
                    id := earlier; duplicate := true; visible_at := NULL; RETURN NEXT; CONTINUE;
                END IF;
            END IF;
            INSERT INTO {s}.messages AS m (queue_id, visible_at, attempts, enqueued_at, checksum, content)
            VALUES (q.id, CASE WHEN p_delays[i] > 0 THEN now_e + p_delays[i] ELSE 0 END, 0, now_e,
                    p_checksums[i], p_contents[i])
            RETURNING m.id, m.visible_at INTO new_id, visible_at;
            IF p_keys[i] IS NOT NULL THEN
                -- Claim the key; a live claim by a concurrent sender (on any node) wins.
                INSERT INTO {s}.idempotency_keys AS k VALUES (q.id, p_keys[i], new_id, now_e + q.dedup_window)
                ON CONFLICT (queue_id, key) DO UPDATE
                    SET message_id = EXCLUDED.message_id, expires_at = EXCLUDED.expires_at
                    WHERE k.expires_at <= now_e;
                GET DIAGNOSTICS claimed = ROW_COUNT;
                IF claimed = 0 THEN
                    DELETE FROM {s}.messages m WHERE m.id = new_id;
                    SELECT k.message_id INTO earlier FROM {s}.idempotency_keys k
                    WHERE k.queue_id = q.id AND k.key = p_keys[i];
                    id := earlier; duplicate := true; visible_at := NULL; RETURN NEXT; CONTINUE;
                END IF;
            END IF;
            id := new_id; duplicate := false; RETURN NEXT;
        END LOOP;
    END IF;
    SELECT count(*) FILTER (WHERE d <= 0), min(now_e + d) FILTER (WHERE d > 0)
    INTO ready, due FROM unnest(p_delays) AS d;
    IF ready > 0 THEN
        PERFORM pg_notify({notify}, concat_ws(' ', 'ready', p_node, p_queue, ready));
    END IF;
    IF due IS NOT NULL THEN
        PERFORM pg_notify({notify}, concat_ws(' ', 'due', p_node, p_queue, due));
    END IF;
END $$;

-- Take up to p_count ready messages, oldest first: removed (p_lease NULL) or leased. A message
-- that has used up the queue's max_attempts moves to the dead-letter queue instead; a row with
-- a NULL id reports how many did.
CREATE FUNCTION {s}.receive(p_node text, p_queue text, p_count integer, p_lease double precision)
RETURNS TABLE (id bigint, content text, attempts integer, enqueued_at double precision, checksum bigint,
               lease_token text, lease_expires_at double precision, dead_lettered integer,
               dead_letter_source text)
LANGUAGE plpgsql AS $$
DECLARE
    q {s}.queues := {s}.queue(p_queue);
    now_e double precision := {s}.epoch();
    picked bigint[];
    exhausted bigint[];
    taken integer := 0;
    moved integer := 0;
    dlq text;
BEGIN
    PERFORM {s}.promote(q.id, now_e);
    LOOP
        picked := ARRAY(
            SELECT m.id FROM {s}.messages m
            WHERE m.queue_id = q.id AND m.visible_at = 0
            ORDER BY m.id LIMIT p_count - taken
            FOR UPDATE SKIP LOCKED);
        EXIT WHEN cardinality(picked) = 0;
        exhausted := '{{}}';
        IF q.max_attempts IS NOT NULL THEN
            WITH dead AS (
                UPDATE {s}.messages m
                SET queue_id = q.dead_letter_queue_id, dead_letter_source_id = q.id, attempts = 0,
                    visible_at = 0, lease_token = NULL
                WHERE m.id = ANY (picked) AND m.attempts >= q.max_attempts
                RETURNING m.id)
            SELECT coalesce(array_agg(dead.id), '{{}}') INTO exhausted FROM dead;
            moved := moved + cardinality(exhausted);
            picked := ARRAY(SELECT unnest(picked) EXCEPT SELECT unnest(exhausted));
        END IF;
        IF p_lease IS NULL THEN
            RETURN QUERY
                DELETE FROM {s}.messages m WHERE m.id = ANY (picked)
                RETURNING m.id, m.content, m.attempts + 1, m.enqueued_at, m.checksum,
                          NULL::text, NULL::double precision, 0,
                          (SELECT x.name FROM {s}.queues x WHERE x.id = m.dead_letter_source_id);
        ELSE
            RETURN QUERY
                UPDATE {s}.messages m
                SET visible_at = now_e + p_lease, lease_token = md5(random()::text || m.id), attempts = m.attempts + 1
                WHERE m.id = ANY (picked)
                RETURNING m.id, m.content, m.attempts, m.enqueued_at, m.checksum,
                          m.lease_token, m.visible_at, 0, NULL::text;
        END IF;
        taken := taken + cardinality(picked);
        EXIT WHEN taken >= p_count OR cardinality(exhausted) = 0;
    END LOOP;
    IF moved > 0 THEN
        SELECT name INTO dlq FROM {s}.queues WHERE queues.id = q.dead_letter_queue_id;
        PERFORM pg_notify({notify}, concat_ws(' ', 'ready', p_node, dlq, moved));
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::integer, NULL::double precision, NULL::bigint,
                            NULL::text, NULL::double precision, moved, NULL::text;
    END IF;
    IF p_lease IS NOT NULL AND taken > 0 THEN
        PERFORM pg_notify({notify}, concat_ws(' ', 'due', p_node, p_queue, now_e + p_lease));
    END IF;
END $$;

CREATE FUNCTION {s}.peek(p_queue text, p_count integer)
RETURNS TABLE (id bigint, content text, attempts integer, enqueued_at double precision, checksum bigint)
LANGUAGE plpgsql AS $$
DECLARE q {s}.queues := {s}.queue(p_queue);
BEGIN
    PERFORM {s}.promote(q.id, {s}.epoch());
    RETURN QUERY SELECT m.id, m.content, m.attempts, m.enqueued_at, m.checksum FROM {s}.messages m
                 WHERE m.queue_id = q.id AND m.visible_at = 0 ORDER BY m.id LIMIT p_count;
END $$;

-- Ack, release and extend: only the current holder of a live lease may; returns the new
-- visible_at (NULL for an ack), or no row at all for a stale or unknown receipt.
CREATE FUNCTION {s}.settle(p_node text, p_queue text, p_id bigint, p_token text, p_action text,
                           p_seconds double precision)
RETURNS TABLE (visible_at double precision) LANGUAGE plpgsql AS $$
DECLARE
    q {s}.queues := {s}.queue(p_queue);
    now_e double precision := {s}.epoch();
BEGIN
    IF p_action = 'ack' THEN
        RETURN QUERY DELETE FROM {s}.messages m
            WHERE m.id = p_id AND m.queue_id = q.id AND m.lease_token = p_token AND m.visible_at > now_e
            RETURNING NULL::double precision;
    ELSIF p_action = 'release' THEN
        RETURN QUERY UPDATE {s}.messages m
            SET visible_at = CASE WHEN p_seconds > 0 THEN now_e + p_seconds ELSE 0 END, lease_token = NULL
            WHERE m.id = p_id AND m.queue_id = q.id AND m.lease_token = p_token AND m.visible_at > now_e
            RETURNING m.visible_at;
        IF FOUND THEN
            PERFORM pg_notify({notify}, CASE WHEN p_seconds > 0
                THEN concat_ws(' ', 'due', p_node, p_queue, now_e + p_seconds)
                ELSE concat_ws(' ', 'ready', p_node, p_queue, 1) END);
        END IF;
    ELSE
        RETURN QUERY UPDATE {s}.messages m SET visible_at = now_e + p_seconds
            WHERE m.id = p_id AND m.queue_id = q.id AND m.lease_token = p_token AND m.visible_at > now_e
            RETURNING m.visible_at;
    END IF;
END $$;
"""
