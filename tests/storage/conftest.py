"""Fixtures of the storage tests: a PostgreSQL database with no tables yet."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from support import missing

POSTGRES_URL = os.environ.get("RLM_TEST_POSTGRES_URL", "")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The test server's URL (.ci/postgres.sh starts one), its checkpoint tables dropped."""
    if not POSTGRES_URL:
        missing("no PostgreSQL: RLM_TEST_POSTGRES_URL is not set (make test starts a server)")
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        for table in ("store", "checkpoints", "checkpoint_writes", "checkpoint_blobs"):
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        conn.execute("DROP TABLE IF EXISTS checkpoint_migrations, store_migrations CASCADE")
    yield POSTGRES_URL
