"""Versioned schema migrations: `NNNN_name.sql` files applied in order, each once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import asyncpg

from ingest.errors import MigrationError

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every process that migrates.
_MIGRATION_LOCK = 0x1D6E57


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def apply(conn: asyncpg.Connection, up_to: int | None = None) -> list[Migration]:
    """Bring the schema up to date (or up to version `up_to`); returns what was applied
    (nothing on a second run)."""
    applied: list[Migration] = []
    async with conn.transaction():
        # Serialises concurrent migrators (compose's migrate job beside `ingest run`).
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in available():
            if migration.version in done or (up_to is not None and migration.version > up_to):
                continue
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {migration.version} failed: {exc}") from exc
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            applied.append(migration)
    return applied


async def ensure_database(dsn: str, connect_timeout: float) -> None:
    """Create the database named in `dsn` when it does not exist yet."""
    try:
        conn = await asyncpg.connect(dsn, timeout=connect_timeout)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return
    name = dsn.rsplit("/", 1)[-1].split("?", 1)[0]
    admin_dsn = dsn.rsplit("/", 1)[0] + "/postgres"
    conn = await asyncpg.connect(admin_dsn, timeout=connect_timeout)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await conn.execute(f"CREATE DATABASE {quoted}")
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await conn.close()
