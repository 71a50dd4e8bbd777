"""Typed keys of the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ingest.metrics import EdgeMetrics
from ingest.settings import Settings

if TYPE_CHECKING:
    from ingest.app import Edge

SETTINGS = web.AppKey("settings", Settings)
EDGE: web.AppKey[Edge] = web.AppKey("edge")
METRICS = web.AppKey("metrics", EdgeMetrics)
