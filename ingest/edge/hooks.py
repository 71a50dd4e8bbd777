"""Sources' deliveries (SPEC §6): a webhook is verified, filtered and mapped here, then submitted
exactly as a task request is (`ingest.edge.submit`): the same queue, worker, results and status
URLs. A delivery's id is its Idempotency-Key, so a sender's retry has one effect.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from multidict import istr

from ingest.edge.bodies import (
    EXACT_PARSE_ON_LOOP_BYTES,
    accept_json_object,
    check_content_type,
    read_within_deadline,
)
from ingest.edge.documents import Accepted, Ignored
from ingest.edge.keys import EDGE, OUTCOME, SOURCE, WORKFLOW
from ingest.edge.paths import path_id
from ingest.edge.preferences import parse_prefer
from ingest.edge.responses import final_response, json_response
from ingest.edge.status import status_of
from ingest.edge.submit import Final, submit
from ingest.edge.writes import admit
from ingest.errors import InvalidSignature, NotFound
from ingest.messages import Operation, TaskRequest, idempotent_request_id, parse_payload
from ingest.results import RequestStatus
from ingest.signatures import Verification, verify
from ingest.sources import Source, SourceDefinition, source_url
from ingest.workflows import Workflow

_PREFER = istr("Prefer")
IGNORED: Ignored = {"status": "ignored"}
UNKNOWN_SOURCE = "no source has this id"


async def receive(request: web.Request) -> web.Response:
    """One delivery: verified before its body is parsed; a handshake answered, a filtered one
    ignored, and the rest submitted as a task request."""
    edge = request.app[EDGE]
    source, workflow = await _source_of(request)
    check_content_type(request)
    body = await read_within_deadline(request, edge.settings)
    headers = _signed_headers(request, source.definition.verify)
    return await deliver(request, source, workflow, Delivery(headers, body, time.time()))


#: Keys a replay of a delivery whose id a worker answered: no printable ASCII, so no sender's
#: delivery id can be it.
REPLAY_MARKER = "\x00replay/"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery as its source reads it: headers by lower-case name, the body as received, and
    when it arrived (seconds since the epoch), which is when its signature is checked."""

    headers: Mapping[str, str]
    body: bytes
    at: float
    #: A replay's key (`ingest.edge.rejections_admin`) when the sender gave no delivery id.
    replay_key: str | None = None
    #: A replay of a delivery whose id keys a worker's stored refusal (which the sender's retries
    #: are answered from, and recorded again): the replay takes the id behind `REPLAY_MARKER`,
    #: so every rejection of one delivery replays as one request, whichever is clicked.
    id_spent: bool = False

    def key(self, delivery_id: str | None) -> str | None:
        """What keys the delivery's request, as an Idempotency-Key does (None: nothing)."""
        if delivery_id is None:
            return self.replay_key
        return REPLAY_MARKER + delivery_id if self.id_spent else delivery_id


async def deliver(
    request: web.Request, source: Source, workflow: Workflow, delivery: Delivery
) -> web.Response:
    """Verify a delivery, then answer its handshake, filter it out, or map and submit it: what
    `receive` does once the delivery is read, and what a replay of a rejected one does."""
    edge = request.app[EDGE]
    verified = verify(source.definition.verify, delivery.headers, delivery.body, delivery.at)
    # Only a verified delivery spends the workflow's rate limit: whoever knows the source URL
    # without its secret cannot starve the real sender (or the task API) of it.
    await admit(request, workflow)
    if verified.handshake is not None:
        request[OUTCOME] = "handshake"
        return json_response(verified.handshake)
    task_body = await _task_body(source.definition, delivery.body, edge.settings.max_body_bytes)
    if task_body is None:
        request[OUTCOME] = "ignored"
        return json_response(IGNORED)
    return await _submit(request, source, workflow, task_body, delivery.key(verified.delivery_id))


#: Headers the schemes read (signatures, timestamps, delivery ids, events), by prefix.
_SCHEME_HEADERS = ("x-hub-", "x-github-", "stripe-", "x-shopify-", "x-slack-", "webhook-")


def _signed_headers(request: web.Request, verification: Verification) -> dict[str, str]:
    """The delivery's headers by lower-case name. One the scheme reads may come only once: with
    two, which one the verifier took would be a guess (a proxy may add one)."""
    headers: dict[str, str] = {}
    read = {h.lower() for h in (verification.header, verification.delivery_id_header) if h}
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered in headers and (lowered in read or lowered.startswith(_SCHEME_HEADERS)):
            raise InvalidSignature(f"send one {name} header, not several")
        headers[lowered] = value
    return headers


async def _source_of(request: web.Request) -> tuple[Source, Workflow]:
    try:
        public_id = path_id(request, "source_id")
    except NotFound:
        raise NotFound(UNKNOWN_SOURCE) from None
    found = await request.app[EDGE].sources.by_public_id(public_id)
    if found is None:
        raise NotFound(UNKNOWN_SOURCE)
    request[WORKFLOW] = found[1].public_id
    request[SOURCE] = found[0]
    return found


async def _task_body(definition: SourceDefinition, body: bytes, limit: int) -> str | None:
    """The task body a delivery becomes, None when the filter leaves it out. The body is checked
    exactly as a task body is (the same 400s); an expression that cannot be applied is a 422."""
    text = await accept_json_object(body)
    if definition.filter is None and definition.map is None:
        return text
    if len(body) > EXACT_PARSE_ON_LOOP_BYTES:  # see EXACT_PARSE_ON_LOOP_BYTES: not on the loop
        return await asyncio.to_thread(_mapped, definition, text, limit)
    return _mapped(definition, text, limit)


def _mapped(definition: SourceDefinition, text: str, limit: int) -> str | None:
    delivery = parse_payload(text)  # exactly: its numbers stay as they were written
    if not definition.admits(delivery):
        return None
    return definition.task_body(delivery, text, limit)


async def _submit(
    request: web.Request,
    source: Source,
    workflow: Workflow,
    body: str,
    delivery_id: str | None,
) -> web.Response:
    edge = request.app[EDGE]
    budget = 0.0
    if source.definition.respond == "sync":
        budget = parse_prefer(request.headers.getall(_PREFER, ())).budget(
            edge.settings.sync_timeout
        )
    task_request = TaskRequest(
        id=_request_id(source, workflow, delivery_id),
        workflow_id=workflow.id,
        workflow_version=workflow.version,
        operation=Operation.UPSERT,
        body=body,
        received_at=time.time(),
        idempotent=delivery_id is not None,
        wants_reply=budget > 0,
    )
    # An async source answers every delivery, a sender's retry too, with its status URL (the
    # worker applies one delivery id once): no look-up of an earlier result on the way.
    submitted = await submit(edge, task_request, budget, replay=budget > 0)
    if isinstance(submitted, Final):
        request[OUTCOME] = submitted.how
        return final_response(submitted.http_status, submitted.body)
    request[OUTCOME] = "accepted"
    return _accepted(request, source, task_request)


def _request_id(source: Source, workflow: Workflow, delivery_id: str | None) -> uuid.UUID:
    """A delivery's id keys its request, as an Idempotency-Key does; within its source, since
    two senders may number their deliveries alike."""
    if delivery_id is None:
        return uuid.uuid4()
    # "source/" keeps these keys apart from the task API's Idempotency-Keys of the same workflow.
    return idempotent_request_id(workflow.id, f"source/{source.public_id}:{delivery_id}")


def _accepted(request: web.Request, source: Source, task_request: TaskRequest) -> web.Response:
    edge = request.app[EDGE]
    public_id = edge.request_ids.of(task_request)
    url = f"{source_url(edge.settings.base_url, source.public_id)}/requests/{public_id}"
    body: Accepted = {"id": public_id, "status": RequestStatus.PENDING, "status_url": url}
    return json_response(body, 202, {"Location": url})


async def delivery_status(request: web.Request) -> web.Response:
    """The status URL of a delivery answered 202: where its task request stands."""
    _, workflow = await _source_of(request)
    public_id = request.match_info["request_id"]
    return json_response(await status_of(request.app[EDGE], public_id, workflow.id))
