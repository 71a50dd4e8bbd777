"""The worker's side of replies: after commit, wake the edges whose clients wait.

A reply is only a wake-up (`ingest.edge.replies`): every result is already committed, so sending
is best effort and bounded, and never holds up an ack.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import aio_pika
from aio_pika.abc import AbstractChannel

from ingest.messages import CONTENT_TYPE, REPLIES_MESSAGE_TYPE, Reply, TaskRequest, encode_replies
from ingest.results import Result
from worker.deliveries import Delivery

log = logging.getLogger(__name__)

#: Seconds a reply may take to publish: a broker alarm blocks publishers.
_PUBLISH_TIMEOUT = 1.0


async def send_replies(
    channel: AbstractChannel | None, deliveries: list[Delivery], results: list[Result]
) -> None:
    """Reply to every waiting client of these deliveries (`results` in their request order)."""
    if channel is None:
        return
    for reply_to, replies in _replies_by_edge(deliveries, results).items():
        message = aio_pika.Message(
            encode_replies(replies), content_type=CONTENT_TYPE, type=REPLIES_MESSAGE_TYPE
        )
        try:
            await asyncio.wait_for(
                channel.default_exchange.publish(message, reply_to, mandatory=False),
                _PUBLISH_TIMEOUT,
            )
        except Exception as exc:
            log.info("could not reply to %s: %r", reply_to, exc)


def _replies_by_edge(deliveries: list[Delivery], results: list[Result]) -> dict[str, list[Reply]]:
    by_edge: dict[str, list[Reply]] = defaultdict(list)
    position = 0
    for delivery in deliveries:
        requests = delivery.batch.requests
        answers = results[position : position + len(requests)]
        position += len(requests)
        if delivery.batch.reply_to:
            by_edge[delivery.batch.reply_to].extend(
                Reply(r.request_id, r.http_status, r.body, _routing_fingerprint(request, r))
                for request, r in zip(requests, answers, strict=True)
                if request.wants_reply
            )
    return {edge: replies for edge, replies in by_edge.items() if replies}


def _routing_fingerprint(request: TaskRequest, result: Result) -> bytes:
    """What the edge routes a reply by (`ingest.edge.replies`): only an idempotent request's id
    can be shared, by requests with other bodies; any other reply is for every waiter of its id."""
    if result.fingerprint is not None:
        return result.fingerprint
    return request.fingerprint if request.idempotent else b""
