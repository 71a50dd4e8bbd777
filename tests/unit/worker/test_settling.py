"""How a micro-batch is cut into transactions when it holds batch imports (pure, no services)."""

from __future__ import annotations

from worker.settling import within_items


def test_parts_without_a_batch_import_are_left_as_they_are() -> None:
    parts = [[0, 1, 2], [3]]
    assert within_items(parts, [1, 1, 1, 1], most=2) == parts


def test_a_part_holding_batch_imports_is_cut_at_the_item_bound_in_order() -> None:
    items = [1, 300, 300, 1, 1, 200]
    assert within_items([list(range(6))], items, most=500) == [[0, 1], [2, 3, 4], [5]]


def test_a_batch_import_over_the_bound_is_a_part_of_its_own_never_cut() -> None:
    items = [1, 1000, 1]
    assert within_items([[0, 1, 2]], items, most=500) == [[0], [1], [2]]


def test_parts_already_cut_stay_apart() -> None:
    items = [400, 400, 1]
    assert within_items([[0], [1, 2]], items, most=500) == [[0], [1, 2]]
