"""The HTTP edge: an aiohttp application whose resources are owned by `cleanup_ctx`."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
from aio_pika.abc import AbstractConnection
from aiohttp import web

from ingest import store
from ingest.broker import BrokerLink, close_connection_with, ensure_topology
from ingest.edge.connections import connection_cap, install_connection_limits, raise_open_file_limit
from ingest.edge.context import Edge, SourcesById, WorkflowsByToken
from ingest.edge.cursors import Cursors
from ingest.edge.gauges import OperatorGauges
from ingest.edge.inflight import BODY_BUDGET, BodyBudget, hold_bodies
from ingest.edge.keys import EDGE, METRICS, SETTINGS
from ingest.edge.ledger import ledger_context
from ingest.edge.metrics import EdgeMetrics
from ingest.edge.middleware import error_middleware, observe_requests
from ingest.edge.openapi import DOCUMENTS, Documents
from ingest.edge.openapi_terms import ROUTE_TABLE
from ingest.edge.publisher import Publisher
from ingest.edge.ratelimit import RateLimiter, SharedBuckets
from ingest.edge.replies import ReplyWaiters
from ingest.edge.request_ids import RequestIds
from ingest.edge.routes import add_routes
from ingest.logs import AccessLog, LogWriter
from ingest.notices import ChangeListener
from ingest.settings import Settings

log = logging.getLogger(__name__)


async def _request_id_key(settings: Settings, pool: asyncpg.Pool) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode()
    return await store.instance_secret(pool, "request_id_key")


async def edge_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    replies = ReplyWaiters(f"{settings.queue}.replies.{uuid.uuid4().hex[:16]}")
    publisher = Publisher(settings, replies.queue_name, app[METRICS])
    gauges = OperatorGauges(settings, app[METRICS])

    async def setup(connection: AbstractConnection) -> None:
        publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        reply_channel = await connection.channel(publisher_confirms=False)
        for channel in (publish_channel, reply_channel):
            close_connection_with(channel, connection)
        await ensure_topology(connection, settings)
        exchange = await publish_channel.get_exchange(settings.queue, ensure=True)
        await replies.attach(reply_channel)
        publisher.attach(publish_channel, exchange)
        gauges.attach(connection)

    def teardown() -> None:
        publisher.detach()
        replies.detach()
        gauges.detach()

    async with (
        store.open_pool(settings) as pool,
        BrokerLink(settings, f"ingest-edge-{os.getpid()}", setup, teardown) as link,
        publisher,
        gauges.polling(pool),
    ):
        key = await _request_id_key(settings, pool)
        app[EDGE] = Edge(
            settings=settings,
            metrics=app[METRICS],
            pool=pool,
            link=link,
            publisher=publisher,
            replies=replies,
            request_ids=RequestIds(key),
            cursors=Cursors(key),  # derives its own keys from the same secret
            workflows=WorkflowsByToken(pool, settings.workflow_cache_ttl),
            rate_limiter=RateLimiter(
                settings.rate_limit,
                settings.rate_burst,
                SharedBuckets(pool),
                settings.edges,
                on_local=lambda local: app[METRICS].rate_limit_local.set(int(local)),
            ),
            sources=SourcesById(pool, settings.workflow_cache_ttl),
        )
        edge = app[EDGE]
        try:
            # Changes of workflows, tokens and sources drop what the edge cached of them.
            async with ChangeListener(settings, "edge", edge.hear, edge.forget_everything):
                yield
        finally:
            replies.close()


def create_app(settings: Settings, log_lines: LogWriter | None = None) -> web.Application:
    """The edge's application; its access lines go to `log_lines` when given (see `AccessLog`)."""
    bodies = BodyBudget(settings.max_body_bytes_in_flight)
    metrics = EdgeMetrics()
    app = web.Application(
        middlewares=[
            observe_requests(metrics, AccessLog(log_lines) if settings.access_log else None),
            error_middleware,
            hold_bodies(bodies),
        ],
        client_max_size=settings.max_body_bytes,
    )
    install_connection_limits(app, settings)
    app[BODY_BUDGET] = bodies
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app.cleanup_ctx.append(edge_context)
    app.cleanup_ctx.append(ledger_context)  # uses the edge's pool: after it, stopped before it
    add_routes(app)
    routes = app[ROUTE_TABLE]
    app[DOCUMENTS] = Documents(settings.base_url, routes)
    return app


def serve(settings: Settings) -> None:
    """Run the edge until SIGTERM/SIGINT; in-flight requests finish before resources close, and
    every log line is written before the process exits."""
    from ingest.logs import log_writer, run_async

    with log_writer(settings) as log_lines:
        run_async(_serve(settings, log_lines))


async def _serve(settings: Settings, log_lines: LogWriter) -> None:
    import signal

    raise_open_file_limit(settings)
    app = create_app(settings, log_lines)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=settings.shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True)
    await site.start()
    # What start-up made (modules, the app, pools) lives as long as the process: out of the
    # collector's sight, so the collections that requests' garbage sets off scan only that.
    gc.freeze()
    log.info(
        "edge %d listening on %s:%d (at most %d connections)",
        os.getpid(),
        settings.host,
        settings.port,
        connection_cap(settings),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("edge %d stopping", os.getpid())
        await runner.cleanup()
