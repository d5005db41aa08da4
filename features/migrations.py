"""Additive schema migrations, derived from the contract in schema.py.

A fresh database gets every table at the current version. An older one gets, for each version it lacks, an
``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` for each column whose ``since`` is that version. Nothing is ever dropped
or retyped. Applied versions are recorded in ``schema_migrations``.
"""

from __future__ import annotations

import logging

from .schema import SCHEMA_VERSION, TABLES, Table, _default_clause

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
SEGMENTS_TABLE = "spool_segments"


def migration_statements(table: Table, version: int) -> list[str]:
    """ALTERs that bring `table` from version-1 to `version` (empty for version 1: that is CREATE)."""
    return [
        f"ALTER TABLE {table.name} ADD COLUMN IF NOT EXISTS `{c.name}` {c.ch_type}{_default_clause(c)}"
        for c in table.columns_since(version)
    ] if version > 1 else []


def bookkeeping_ddl() -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version UInt16, applied_at DateTime64(3, 'UTC') "
        f"DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version",
        # Ledger of shipped spool segments: written after the segment's rows are acknowledged. The rows' own insert is
        # deduplicated by the segment id, so a crash between the two inserts can never double a segment.
        f"CREATE TABLE IF NOT EXISTS {SEGMENTS_TABLE} (segment_id String, target LowCardinality(String), "
        f"rows UInt64, shipped_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        f"ENGINE = ReplacingMergeTree ORDER BY segment_id",
    ]


def current_version(client) -> int:
    rows = client.query(f"SELECT max(version) FROM {MIGRATIONS_TABLE}").result_rows
    return int(rows[0][0] or 0) if rows else 0


def ensure_schema(client) -> int:
    """Create or migrate every contract table; return the version the database is now at. Idempotent."""
    for stmt in bookkeeping_ddl():
        client.command(stmt)
    have = current_version(client)
    if have > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database is at feature-schema version {have}, newer than this code's {SCHEMA_VERSION}: "
            f"upgrade aiobs before writing to it"
        )
    for t in TABLES.values():
        client.command(t.ddl())  # no-op when it exists
    if have == 0:  # a fresh database was just created at the current version: record it, nothing to migrate
        for version in range(1, SCHEMA_VERSION + 1):
            client.command(f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES ({version})")
        return SCHEMA_VERSION
    for version in range(max(have, 1), SCHEMA_VERSION + 1):
        if version <= have:
            continue
        for t in TABLES.values():
            for stmt in migration_statements(t, version):
                log.info("migrating to schema v%d: %s", version, stmt)
                client.command(stmt)
        client.command(f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES ({version})")
    return SCHEMA_VERSION
