"""The admin routes of the tokens of workflows (SPEC §8), as `ingest.edge.routes` declares every
route; `ingest.edge.routes` lists them in its table."""

from __future__ import annotations

from ingest.edge import tokens_admin
from ingest.edge.openapi_shared import ADMIN_ANSWERS, WORKFLOW_ID
from ingest.edge.openapi_terms import Answer, Operation, Parameter, Route, failure
from ingest.errors import NotFound
from ingest.tokens import PREFIX_CHARS, IssuedToken, TokenSummary

TOKENS = "/api/v1/admin/workflows/{workflow_id}/tokens"
ONE_TOKEN = f"{TOKENS}/{{prefix}}"

TOKEN_PREFIX = Parameter(
    "TokenPrefix",
    "prefix",
    "path",
    f"The token's first {PREFIX_CHARS} characters (its `prefix`), or the whole token: a token "
    "issued before tokens had prefixes is named by itself.",
    {"type": "string", "minLength": 1},
)
_NO_SUCH_WORKFLOW = failure("No workflow has this id", NotFound)

TOKEN_ROUTES = (
    Route(
        "POST",
        TOKENS,
        tokens_admin.issue_token,
        Operation(
            "issueToken",
            "admin",
            "Issue a token",
            "A new token for the workflow, shown only this once (a SHA-256 of it is kept, and "
            "its prefix, which names it). The workflow's other tokens keep working until revoked. "
            "Any request body is ignored.",
            (
                Answer(201, "The token was issued.", IssuedToken),
                _NO_SUCH_WORKFLOW,
                *ADMIN_ANSWERS,
            ),
            (WORKFLOW_ID,),
            admin=True,
        ),
    ),
    Route(
        "GET",
        TOKENS,
        tokens_admin.list_tokens,
        Operation(
            "listTokens",
            "admin",
            "List a workflow's tokens",
            "The prefix and issue time of every token the workflow has, oldest first; never the "
            "tokens (only hashes of them are kept).",
            (
                Answer(200, "The tokens.", list[TokenSummary]),
                _NO_SUCH_WORKFLOW,
                *ADMIN_ANSWERS,
            ),
            (WORKFLOW_ID,),
            admin=True,
        ),
    ),
    Route(
        "DELETE",
        ONE_TOKEN,
        tokens_admin.revoke_token,
        Operation(
            "revokeToken",
            "admin",
            "Revoke a token",
            "Every edge answers the token like any unknown token within a second. Revoking the "
            "workflow's last token is allowed: no token reaches it until one is issued.",
            (
                Answer(204, "The token was revoked."),
                failure("No workflow has this id, or it has no such token", NotFound),
                *ADMIN_ANSWERS,
            ),
            (WORKFLOW_ID, TOKEN_PREFIX),
            admin=True,
        ),
    ),
)
