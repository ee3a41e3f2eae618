"""A real PostgreSQL for the tests of the shared store: each test gets a schema of its own.

The server is the one at MQ_TEST_POSTGRES_URL (default: 127.0.0.1:5432, trust authentication,
database ``test``); tests that need it are skipped, with the reason, where none answers.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import uuid

URL = os.environ.get("MQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _run(coroutine):
    """Run a coroutine to completion on a loop of its own (callers may be inside another loop)."""
    result: list = []

    def target() -> None:
        result.append(asyncio.run(coroutine))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return result[0] if result else None


async def _probe() -> str | None:
    import asyncpg

    try:
        connection = await asyncpg.connect(URL, timeout=3)
    except Exception as exc:  # any failure is a reason to skip
        return f"no PostgreSQL answers at {URL} ({exc})"
    await connection.close()
    return None


@functools.cache
def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[test]')"
    return _run(_probe())


def new_schema_url() -> tuple[str, str]:
    schema = f"mq_test_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in URL else "?"
    return f"{URL}{separator}schema={schema}", schema


async def _drop(schema: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(URL)
    try:
        await connection.execute("SET lock_timeout = '10s'")  # a test that left a node running
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await connection.close()


def drop_schema(schema: str) -> None:
    _run(_drop(schema))


async def _execute(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def execute(statement: str) -> None:
    """Run one statement on the test server, outside any store (to damage or inspect it)."""
    _run(_execute(statement))
