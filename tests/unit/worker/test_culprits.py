"""Bisection over dry runs: pure, no services."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from ingest.messages import Operation, TaskRequest
from worker.culprits import DEATHS_TO_CONVICT, commit_parts, find_culprits, verdict


def _dry_run_failing_on(bad: set[int], tried: list[list[int]]):
    async def dry_run(positions: list[int]) -> BaseException | None:
        tried.append(positions)
        hit = sorted(bad.intersection(positions))
        return ValueError(f"poison {hit}") if hit else None

    return dry_run


async def test_every_request_that_fails_alone_is_found_and_no_other():
    bad = {3, 17, 18, 99}
    tried: list[list[int]] = []
    found = await find_culprits(_dry_run_failing_on(bad, tried), list(range(100)), ValueError())
    assert set(found) == bad
    assert all(str(found[p]) == f"poison [{p}]" for p in bad)
    # Bisection: a handful of dry runs per culprit, not one per request.
    assert len(tried) < 4 * 2 * 7


async def test_a_lone_failing_request_is_its_own_culprit_without_a_dry_run():
    tried: list[list[int]] = []
    failure = RuntimeError("boom")
    found = await find_culprits(_dry_run_failing_on({5}, tried), [5], failure)
    assert found == {5: failure}
    assert tried == []


async def test_a_failure_only_a_combination_causes_yields_no_culprit():
    async def together_only(positions: list[int]) -> BaseException | None:
        return ValueError() if {0, 1} <= set(positions) else None

    assert await find_culprits(together_only, [0, 1], ValueError()) == {}


def _request() -> TaskRequest:
    return TaskRequest(uuid.uuid4(), 1, 1, Operation.UPSERT, "{}", 0.0)


def test_a_value_postgres_refuses_is_the_clients_422():
    judged = verdict(_request(), asyncpg.NumericValueOutOfRangeError("numeric field overflow"))
    assert judged.dead_reason is None
    assert judged.result.http_status == 422
    assert "unstorable_value" in judged.result.body
    assert "overflow" not in judged.result.body  # the database's words are for operators


def test_any_other_failure_is_dead_lettered_alone_with_its_own_500():
    request = _request()
    judged = verdict(request, RuntimeError("bug " + "x" * 2000))
    assert judged.result.http_status == 500
    assert judged.result.request_id == request.id
    assert judged.result.outcome == "dead"
    assert judged.dead_reason is not None
    assert judged.dead_reason.startswith("RuntimeError: bug")
    assert len(judged.dead_reason) <= 500
    assert "RuntimeError" not in judged.result.body  # the reason is for operators


def test_a_batch_is_committed_whole_until_a_worker_died_holding_a_message():
    assert commit_parts([(3, 0), (2, 0)], 10) == [[0, 1, 2, 3, 4]]


def test_a_redelivered_message_is_cut_finer_at_every_delivery_keeping_its_order():
    assert commit_parts([(8, 1)], 10) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert commit_parts([(8, 2)], 10) == [[n] for n in range(8)]
    # Messages around it keep their order and stay whole.
    assert commit_parts([(2, 0), (4, 1), (1, 0)], 10) == [[0, 1], [2], [3], [4], [5], [6]]


@pytest.mark.parametrize(("size", "limit"), [(256, 10), (1000, 10), (100, 6), (7, 4)])
def test_by_the_delivery_limit_the_killer_is_convicted_alone_wherever_it_sits(size, limit):
    """Simulates the consumer: parts in order, each committed; a lone part is marked before it
    runs and convicted once DEATHS_TO_CONVICT other processes marked it; the killer kills the
    worker. The broker delivers a message `limit` times at least."""
    for killer in range(size):
        finished: set[int] = set()
        marks = 0
        convicted = False
        for deaths in range(limit):
            died = False
            for part in commit_parts([(size, deaths)], limit):
                todo = [p for p in part if p not in finished]
                if killer in todo and len(part) == 1 and deaths:
                    if marks >= DEATHS_TO_CONVICT:
                        convicted = True
                        continue
                    marks += 1
                if killer in todo:
                    died = True
                    break
                finished.update(todo)
            if not died:
                break
        assert convicted, killer
        assert finished == set(range(size)) - {killer}, killer
