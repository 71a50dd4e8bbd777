"""Typed keys of the aiohttp application and of its requests."""

from __future__ import annotations

from aiohttp import web

from ingest.edge.context import Edge
from ingest.edge.metrics import EdgeMetrics
from ingest.settings import Settings
from ingest.sources import Source

SETTINGS = web.AppKey("settings", Settings)
EDGE = web.AppKey("edge", Edge)
METRICS = web.AppKey("metrics", EdgeMetrics)

#: Per-request facts the access log reports.
REQUEST_ID = web.RequestKey("request_id", str)
WORKFLOW = web.RequestKey("workflow", str)
OUTCOME = web.RequestKey("outcome", str)
#: What the ledger of rejections records of a refused request (`ingest.edge.ledger`): the body
#: as read, and a hook delivery's source.
BODY = web.RequestKey("body", bytes)
SOURCE = web.RequestKey("source", Source)
