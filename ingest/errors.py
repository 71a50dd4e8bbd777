"""The one error tree of ingest.

    IngestError
    ├── ConfigError            settings or environment unusable at start-up
    ├── DefinitionError        a workflow definition is invalid (carries every problem)
    ├── RequestError           a client request is unacceptable at the edge
    │   ├── MalformedBody      not JSON, not an object, bad encoding, too deep
    │   │   └── UnreadableBody the body stream broke (framing, Content-Encoding)
    │   ├── BodyTooLarge       over the body limit
    │   │   └── TooManyItems   a batch import over its item limit
    │   ├── UnsupportedMediaType
    │   │   └── UnsupportedContentEncoding
    │   ├── InvalidHeader      a header the request depends on is malformed
    │   ├── RateLimited        over the workflow's request rate
    │   ├── MappingFailed      a source's filter or map cannot be applied to a delivery
    │   ├── BodyTimeout        the body did not arrive within the read deadline
    │   └── ClientDisconnected the client went away before its body arrived
    ├── NotFound               unknown token, workflow, task or request id
    ├── PreconditionFailed     a change was made from another version than the stored one
    ├── Unauthorized           the admin token is missing or wrong
    ├── Forbidden              the admin API is closed (no admin token configured)
    ├── InvalidSignature       a webhook delivery fails its source's verification
    ├── Unavailable            a backend cannot take the request now (retry later)
    │   ├── PublishFailed      broker nack, return, timeout or closed channel
    │   └── Backlogged         the edge's publish backlog is full
    ├── DecodeError            a wire message cannot be decoded (poison)
    ├── ValueRefused           the database driver cannot encode a value of a request
    ├── MigrationError         the database schema cannot be brought up to date
    │
    │   raised in the worker (`worker/`), never seen by a client:
    ├── Retry                  messages go back to the broker (nack, requeue)   worker.decisions
    ├── Reject                 a message can never be applied (dead-lettered)   worker.decisions
    ├── RetryBatch             a batch lost a race and runs again              worker.upsert
    ├── UnknownWorkflow        a request names a workflow version not stored    worker.upsert
    └── WorkerKilled           a worker died applying this request alone        worker.culprits

Errors become HTTP statuses only in `ingest.edge.middleware`; ack/nack/reject only in
`worker.consumer` (`Consumer._conclude`).
"""

from __future__ import annotations


class IngestError(Exception):
    """Raised for every failure ingest itself recognises."""


class ConfigError(IngestError):
    """Raised when settings or the environment are unusable at start-up."""


class DefinitionError(IngestError):
    """Raised when a workflow definition is invalid; `problems` lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class RequestError(IngestError):
    """Raised when a client request cannot be accepted as sent."""


class MalformedBody(RequestError):
    """Raised when a body is not a well-formed JSON object."""


class UnreadableBody(MalformedBody):
    """Raised when the body stream itself cannot be read (broken framing, a Content-Encoding its
    bytes do not decode from); the connection cannot carry another request."""


class BodyTooLarge(RequestError):
    """Raised when a body exceeds the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class TooManyItems(BodyTooLarge):
    """Raised when a batch import holds more task bodies than `INGEST_BATCH_MAX_ITEMS`."""

    def __init__(self, items: int, limit: int) -> None:
        RequestError.__init__(self, f"a batch holds at most {limit} items; this one holds {items}")
        self.items = items
        self.limit = limit


class UnsupportedMediaType(RequestError):
    """Raised when a body is sent with a content type other than JSON."""


class UnsupportedContentEncoding(UnsupportedMediaType):
    """Raised when a body is sent in a Content-Encoding the edge does not decode; `accepted`
    names those it does."""

    accepted = ("gzip", "deflate")

    def __init__(self) -> None:
        super().__init__(
            "the body's Content-Encoding cannot be decoded; send it as is, gzip or deflate"
        )


class InvalidHeader(RequestError):
    """Raised when a header ingest acts on (Idempotency-Key, say) is malformed."""


class RateLimited(RequestError):
    """Raised when a workflow sends faster than its rate limit; `retry_after` is in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after}s")
        self.retry_after = retry_after


class MappingFailed(RequestError):
    """Raised when a source's filter or map cannot be applied to a delivery (a function given the
    wrong type, a value JSON cannot write, a task too large); names where, the expression, why."""

    def __init__(self, where: str, expression: str, reason: str) -> None:
        super().__init__(f"{where} {expression!r} cannot be applied to this delivery: {reason}")
        self.where = where
        self.expression = expression
        self.reason = reason


class BodyTimeout(RequestError):
    """Raised when a request body does not arrive within the read deadline."""


class ClientDisconnected(RequestError):
    """Raised when the client closes its connection before its request body has arrived."""


class NotFound(IngestError):
    """Raised when a token, workflow, task or request id names nothing we know."""


class PreconditionFailed(IngestError):
    """Raised when a change names the versions it was made from (If-Match, `--if-version`) and
    the stored version is none of them; `current` is the stored version."""

    def __init__(self, current: int) -> None:
        super().__init__(
            f"the workflow is at version {current} now, not the version this change was made "
            "from: read it again, make the change to what it is now, and send that as made from "
            f'version {current} (If-Match: "{current}", or --if-version {current})'
        )
        self.current = current


class Conflict(IngestError):
    """Raised when a request cannot be carried out in the state the target is in (a change the
    stored data forbids, a rejection that cannot be replayed); the message says why."""


class Unauthorized(IngestError):
    """Raised when a request to the admin API lacks the right bearer token."""


class Forbidden(IngestError):
    """Raised when the admin API is used while no admin token is configured."""


class InvalidSignature(IngestError):
    """Raised when a delivery to a source fails its verification: a header missing or malformed,
    a timestamp stale or in the future, or no secret matching; the message says which."""


class Unavailable(IngestError):
    """Raised when a backend cannot take the request now; `retry_after` is in seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PublishFailed(Unavailable):
    """Raised when the broker did not confirm a publish (nack, return, timeout, closed)."""


class Backlogged(Unavailable):
    """Raised when the edge already holds as many unpublished requests as it may."""


class DecodeError(IngestError):
    """Raised when a wire message cannot be decoded; such a message is poison."""


class ValueRefused(IngestError):
    """Raised when the database driver refuses to encode a value of a request."""


class MigrationError(IngestError):
    """Raised when the database schema cannot be brought up to date."""
