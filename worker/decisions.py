"""What becomes of the messages a worker holds, decided once, as a type.

Settling a micro-batch (`worker.settling`) comes to one of three decisions, which
`worker.consumer.Consumer._conclude` alone turns into what the broker is told:

- `Ack` (returned): every request of the messages has a final result committed (an answer that is
  an error included: a 422, a 404 for a workflow the database does not have, a dead-lettered
  request's own 500) → ack;
- `Retry` (raised): the messages go back to the broker to be delivered again → nack with requeue.
  The worker stops or lost its channel before they were settled, or not even a culprit's own
  verdict could be stored (then the queue's delivery limit decides);
- `Reject` (raised): a message can never be applied (it cannot be decoded) → reject without
  requeue: the broker dead-letters it at once.

Failures that are no request's fault (the database down, races lost) never come to a decision:
they are retried in place, so an outage never spends the queue's delivery limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.errors import IngestError
from ingest.results import Result


@dataclass(frozen=True, slots=True)
class Ack:
    """The messages are settled: these are the final results of their requests, committed."""

    results: list[Result] = field(default_factory=list)


class Retry(IngestError):
    """Raised when messages must go back to the broker, to be delivered again."""


class Reject(IngestError):
    """Raised when a message can never be applied: it is dead-lettered without another try."""


#: What the consumer does with messages: ack, nack with requeue, or reject to the dead letters.
Decision = Ack | Retry | Reject
