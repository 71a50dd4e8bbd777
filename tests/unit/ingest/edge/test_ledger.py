"""What the ledger records and what a replay makes of a rejection, without services."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.edge.hooks import Delivery
from ingest.edge.ledger import HOOK_DELIVERY, RECORDED_ROUTES
from ingest.edge.rejections_admin import replayable
from ingest.edge.routes import ROUTES
from ingest.errors import Conflict
from ingest.rejections import BODY_LIMIT, REDACTED, Rejection


def test_the_recorded_routes_are_task_writes_and_hook_deliveries_of_the_route_table() -> None:
    routed = {f"{route.method} {route.path}" for route in ROUTES}
    assert routed >= RECORDED_ROUTES
    assert HOOK_DELIVERY in RECORDED_ROUTES
    assert not any(route.startswith("GET ") or "/admin/" in route for route in RECORDED_ROUTES)


def _rejection(**overrides: object) -> Rejection:
    given: dict[str, object] = {
        "id": 5,
        "at": datetime(2024, 1, 31, 12, tzinfo=UTC),
        "route": HOOK_DELIVERY,
        "workflow": "w",
        "source": "s",
        "status": 401,
        "error": "invalid_signature",
        "message": None,
        "headers": {"x-hub-signature-256": REDACTED, "authorization": REDACTED, "x-a": "1"},
        "body": b"{}",
        "body_size": 2,
        "signed_headers": {"x-hub-signature-256": "sha256=ab"},
        "reached_worker": False,
    }
    return Rejection(**{**given, **overrides})  # type: ignore[arg-type]


def test_a_replay_is_the_delivery_as_it_arrived_with_its_kept_signature() -> None:
    delivery = replayable(_rejection())
    assert delivery.headers == {"x-hub-signature-256": "sha256=ab", "x-a": "1"}
    assert delivery.body == b"{}"
    assert delivery.at == datetime(2024, 1, 31, 12, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"route": "POST /api/v1/workflows/{token}/tasks"}, "only hook deliveries"),
        ({"body": None, "body_size": None}, "never read"),
        ({"body": b"x" * BODY_LIMIT, "body_size": BODY_LIMIT + 1}, "larger than"),
    ],
)
def test_what_cannot_be_replayed_is_a_conflict_saying_why(
    overrides: dict[str, object], said: str
) -> None:
    with pytest.raises(Conflict, match=said):
        replayable(_rejection(**overrides))


def test_a_replay_is_keyed_by_the_delivery_id_unless_it_has_none_or_spent_it() -> None:
    plain = Delivery({}, b"{}", 0.0)
    assert (plain.key("d-1"), plain.key(None)) == ("d-1", None)
    replay = replayable(_rejection())
    assert replay.key("d-1") == "d-1"  # the sender's retry and the replay are one request
    assert replay.key(None) == "\x00rejection/5"
    spent = replayable(_rejection(reached_worker=True))
    assert spent.key("d-1") == "\x00rejection/5"  # d-1's request has a stored 422 already
