"""What a path names: the workflow behind a token, and public ids that may exist."""

from __future__ import annotations

from aiohttp import web

from ingest.edge.keys import EDGE, WORKFLOW
from ingest.errors import NotFound
from ingest.workflows import Workflow

#: Under the token prefix every miss looks alike, so guesses learn nothing from the answer.
UNKNOWN_TOKEN = "no workflow has this token"


async def workflow_of(request: web.Request) -> Workflow:
    """The workflow whose token the path carries; an unknown token is NotFound."""
    workflow = await request.app[EDGE].workflows.by_token(request.match_info["token"])
    if workflow is None:
        raise NotFound(UNKNOWN_TOKEN)
    request[WORKFLOW] = workflow.public_id
    return workflow


def path_id(request: web.Request, name: str) -> str:
    """A public id from the path; one that cannot exist (NUL, absurd length) is simply unknown."""
    value = request.match_info[name]
    if "\x00" in value or len(value) > 200:
        raise NotFound(f"no {name.removesuffix('_id')} has this id")
    return value
