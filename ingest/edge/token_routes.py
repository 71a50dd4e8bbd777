"""The admin routes of the tokens of workflows (SPEC §8), as `ingest.edge.routes` declares every
route; `ingest.edge.routes` lists them in its table."""

from __future__ import annotations

from ingest.edge.openapi_terms import Route

TOKEN_ROUTES: tuple[Route, ...] = ()
