"""Tasks as stored, and their Flowdash shape (SPEC §4 "Response body").

Values are keyed by field id, in their stored form (`ingest.fields`: exact Decimals, canonical
date and date-time text, booleans, text, lists). Rendering turns them into Flowdash's JSON: numbers
and currency as decimal strings, unset fields as null.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Any

from ingest.fields import kind_of
from ingest.values import Stored
from ingest.workflows import ASSIGNED_TO, STAGE, TASK_URL, Workflow

#: A field's value as a task holds it (None: unset).
Value = Stored | None


@dataclass(slots=True)
class TaskRecord:
    """One task as stored: built-ins plus values by field id. `unique_value` is its Unique ID
    value in canonical text (its public id where the workflow has no Unique ID field); the
    column that holds it is named `unique_key`."""

    public_id: str
    unique_value: str
    stage: str
    assigned_to: str | None
    values: dict[int, Stored] = field(default_factory=dict)
    id: int | None = None


_ID_BYTES = 12


class TaskPublicIds:
    """Unguessable task ids (the Task URL doubles as a capability link and never carries the
    token): 12 random bytes each from the OS's generator, as `secrets.token_urlsafe` makes them,
    read `batch` ids at a time (a worker makes thousands a second: one system call, not one
    an id)."""

    def __init__(self, batch: int = 256) -> None:
        self._batch = batch
        self._pool = b""
        self._at = 0
        self._pid = 0

    def next(self) -> str:
        if self._at >= len(self._pool) or self._pid != os.getpid():  # a forked copy must not share
            self._pool, self._at, self._pid = os.urandom(_ID_BYTES * self._batch), 0, os.getpid()
        chunk = self._pool[self._at : self._at + _ID_BYTES]
        self._at += _ID_BYTES
        return base64.urlsafe_b64encode(chunk).decode()


def task_url(base_url: str, workflow_public_id: str, task_public_id: str) -> str:
    return f"{base_url}/workflows/{workflow_public_id}/tasks/{task_public_id}"


def render(workflow: Workflow, task: TaskRecord, base_url: str) -> dict[str, Any]:
    """The Flowdash JSON of one task: the built-ins first (as Flowdash orders them), then fields."""
    body: dict[str, Any] = {
        STAGE: task.stage,
        ASSIGNED_TO: task.assigned_to,
        TASK_URL: task_url(base_url, workflow.public_id, task.public_id),
    }
    for spec in workflow.definition.fields:
        value = task.values.get(spec.id)
        body[spec.name] = None if value is None else kind_of(spec.type).render(value)
    return body
