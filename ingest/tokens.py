"""Tokens of workflows (SPEC §8): a workflow has any number of them, each answered once when
issued, stored as its SHA-256, named by its first `PREFIX_CHARS` characters, and revoked on its
own. Revoking announces it (`ingest.notices`), so every edge forgets the token within a second.

Tokens issued before migration 0008 have no prefix on record (only a hash was kept): they are
revoked by giving the whole token, which is matched by its hash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from ingest import notices
from ingest.values import has_lone_surrogate
from ingest.workflows import hash_token, new_token

#: How many leading characters of a token name it (in clear, unique within its workflow).
PREFIX_CHARS = 8
#: A fresh token's prefix clashes with one of its workflow's one time in 64⁸ per token held.
_ISSUE_ATTEMPTS = 5

Pool = asyncpg.Pool
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class IssuedToken(BaseModel):
    """A new token of a workflow, shown this once."""

    model_config = ConfigDict(frozen=True)

    token: Annotated[
        str, Field(description="The token (only its SHA-256 is kept: save it now).", min_length=1)
    ]
    prefix: Annotated[
        str,
        Field(
            description=f"Its first {PREFIX_CHARS} characters, which name it to revoke it.",
            min_length=PREFIX_CHARS,
            max_length=PREFIX_CHARS,
        ),
    ]


class TokenSummary(BaseModel):
    """A token as the admin API lists it: never the token, only what names it."""

    model_config = ConfigDict(frozen=True)

    prefix: Annotated[
        str | None,
        Field(
            description="Its first characters; null for a token issued before tokens had "
            "prefixes (revoke it by giving the whole token)."
        ),
    ]
    created_at: datetime


def prefix_of(token: str) -> str:
    return token[:PREFIX_CHARS]


async def insert(conn: Pool | Connection, workflow_id: int, token: str) -> None:
    """Store `token` for the workflow; raises UniqueViolationError when its prefix is taken."""
    await conn.execute(
        "INSERT INTO workflow_tokens (workflow_id, token_hash, prefix) VALUES ($1, $2, $3)",
        workflow_id,
        hash_token(token),
        prefix_of(token),
    )


async def issue(pool: Pool, workflow_id: int) -> IssuedToken | None:
    """A new token for the workflow, valid beside its others; None when the workflow is gone."""
    for _ in range(_ISSUE_ATTEMPTS):
        token = new_token()
        try:
            await insert(pool, workflow_id, token)
        except asyncpg.UniqueViolationError:
            continue
        except asyncpg.ForeignKeyViolationError:
            return None
        return IssuedToken(token=token, prefix=prefix_of(token))
    raise RuntimeError(f"no free token prefix in {_ISSUE_ATTEMPTS} attempts")  # 1 in 2^240


async def revoke(pool: Pool, workflow_id: int, handle: str) -> bool:
    """Revoke the workflow's token named by `handle`: its prefix, or the whole token; False when
    the workflow has no such token. Edges are told on commit (`ingest.notices`)."""
    if "\x00" in handle or has_lone_surrogate(handle):
        return False  # no prefix holds them, and Postgres' text could not carry them
    async with pool.acquire() as conn, conn.transaction():
        revoked = await conn.fetch(
            "DELETE FROM workflow_tokens WHERE workflow_id = $1"
            " AND (prefix = $2 OR token_hash = $3) RETURNING id",
            workflow_id,
            handle,
            hash_token(handle),
        )
        if revoked:
            await notices.announce(conn, "tokens", workflow_id)
    return bool(revoked)


async def tokens_of(pool: Pool, workflow_id: int) -> list[TokenSummary]:
    """The workflow's tokens, oldest first."""
    rows = await pool.fetch(
        "SELECT prefix, created_at FROM workflow_tokens WHERE workflow_id = $1 ORDER BY id",
        workflow_id,
    )
    return [TokenSummary(prefix=row["prefix"], created_at=row["created_at"]) for row in rows]
