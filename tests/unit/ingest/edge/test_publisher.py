"""The publisher's messages (ingest.edge.publisher): requests waiting together leave together, but
a batch import leaves alone."""

from __future__ import annotations

import asyncio
import uuid

from ingest.edge.metrics import EdgeMetrics
from ingest.edge.publisher import Publisher, _Pending
from ingest.messages import Operation, TaskRequest
from ingest.settings import Settings


def _waiting(publisher: Publisher, *operations: Operation) -> None:
    loop = asyncio.get_running_loop()
    for operation in operations:
        request = TaskRequest(uuid.uuid4(), 1, 1, operation, "{}", 0.0)
        publisher._backlog.append(_Pending(request, 2, loop.create_future()))


def _messages(publisher: Publisher) -> list[list[Operation]]:
    sent = []
    while publisher._backlog:
        sent.append([p.request.operation for p in publisher._next_batch()])
    return sent


async def test_requests_waiting_together_leave_in_one_message() -> None:
    publisher = Publisher(Settings(), None, EdgeMetrics())
    _waiting(publisher, Operation.UPSERT, Operation.UPDATE, Operation.DELETE)
    assert _messages(publisher) == [[Operation.UPSERT, Operation.UPDATE, Operation.DELETE]]


async def test_a_batch_import_leaves_in_a_message_of_its_own() -> None:
    """One message per batch; a worker too old to read one dead-letters only that message."""
    publisher = Publisher(Settings(), None, EdgeMetrics())
    upsert, batch = Operation.UPSERT, Operation.BATCH
    _waiting(publisher, upsert, upsert, batch, batch, upsert)
    assert _messages(publisher) == [[upsert, upsert], [batch], [batch], [upsert]]
