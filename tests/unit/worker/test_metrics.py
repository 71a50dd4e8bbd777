"""A worker's metrics: the age of the oldest request it holds."""

from __future__ import annotations

from worker.metrics import InHand, WorkerMetrics


def test_the_oldest_request_in_hand_ages_until_released():
    in_hand = InHand()
    assert in_hand.age(100.0) == 0.0
    in_hand.hold([95.0, 90.0, 99.0])
    assert in_hand.age(100.0) == 10.0
    assert in_hand.age(130.0) == 40.0  # still held: it keeps growing
    in_hand.release()
    assert in_hand.age(130.0) == 0.0


def test_requests_that_do_not_say_when_they_arrived_tell_nothing():
    in_hand = InHand()
    in_hand.hold([0.0, 0.0])
    assert in_hand.age(100.0) == 0.0
    in_hand.hold([0.0, 80.0])
    assert in_hand.age(100.0) == 20.0


def test_the_gauge_is_read_at_each_scrape():
    metrics = WorkerMetrics()
    name = "ingest_oldest_pending_request_age_seconds"
    assert metrics.registry.get_sample_value(name) == 0.0
    metrics.in_hand.hold([1.0])  # long ago
    value = metrics.registry.get_sample_value(name)
    assert value is not None
    assert value > 1_000_000
