"""What the ledger records and what a replay makes of a rejection, without services."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.edge.hooks import Delivery
from ingest.edge.ledger import HOOK_DELIVERY, RECORDED_ROUTES, RecordingBudget
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
    assert spent.key("d-1") == "\x00replay/d-1"  # d-1's request has a stored 422 already
    assert spent.key(None) == "\x00rejection/5"


def test_every_rejection_of_one_spent_delivery_id_replays_as_one_request() -> None:
    """The sender's retry of a delivery a worker refused is answered from the stored refusal and
    recorded again: both rejections replay under one key."""
    first = replayable(_rejection(id=5, reached_worker=True))
    retried = replayable(_rejection(id=9, reached_worker=True))
    assert first.key("d-1") == retried.key("d-1") != "d-1"
    assert first.key("d-2") != first.key("d-1")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_budget_records_a_burst_then_its_rate_and_counts_what_it_left_out() -> None:
    clock = _Clock()
    budget = RecordingBudget(rate=2.0, burst=3, clock=clock)
    taken = [budget.take("workflow/w", 400) for _ in range(10)]
    assert taken == [0, 0, 0] + [None] * 7
    assert budget.take("workflow/other", 400) == 0  # every workflow has its own
    clock.now += 0.5  # one rejection's worth at 2 a second
    assert budget.take("workflow/w", 422) == 7  # the seven left out since the last recorded
    assert budget.take("workflow/w", 422) is None
    clock.now += 60  # refilled up to the burst, no further
    assert [budget.take("workflow/w", 400) for _ in range(4)] == [1, 0, 0, None]


def test_a_429_is_recorded_once_per_interval_whatever_the_budget() -> None:
    clock = _Clock()
    budget = RecordingBudget(rate=2.0, burst=3, rate_limited_every=5.0, clock=clock)
    assert [budget.take("source/1", 429) for _ in range(50)] == [0] + [None] * 49
    assert budget.take("source/1", 400) == 49  # 429s spend none of the bucket
    clock.now += 4.9
    assert budget.take("source/1", 429) is None
    clock.now += 0.1
    assert budget.take("source/1", 429) == 1
    assert budget.take("source/2", 429) == 0


def test_a_budget_forgets_those_at_rest_once_it_remembers_many() -> None:
    clock = _Clock()
    budget = RecordingBudget(rate=0.1, burst=2, rate_limited_every=5.0, clock=clock, max_budgets=4)
    for number in range(4):
        budget.take(f"workflow/{number}", 400)
    budget.take("workflow/busy", 400)
    budget.take("workflow/busy", 400)
    assert budget.remembered == 5  # none was at rest
    clock.now += 4.0
    budget.take("workflow/soon", 400)
    assert budget.remembered == 6  # not looked at again so soon
    clock.now += 6.0  # the first four are full again; busy has one of two
    budget.take("workflow/new", 400)
    assert budget.remembered == 3  # busy, soon and new
    assert budget.take("workflow/busy", 400) == 0
    assert budget.take("workflow/busy", 400) is None
