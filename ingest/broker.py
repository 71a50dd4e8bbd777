"""RabbitMQ: the topology, and a connection that heals itself (the edge publishes through
`ingest.edge.publisher`).

Task requests go to a direct exchange bound to one durable quorum queue. The queue has a delivery
limit (poison stops there and is dead-lettered, at-least-once) and a max length that rejects
publishes when full, which the edge turns into 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
)

from ingest.settings import Settings

log = logging.getLogger(__name__)

_INITIAL_BACKOFF = 0.2
_MAX_BACKOFF = 5.0


@dataclass(frozen=True, slots=True)
class Topology:
    """Names of everything declared on the broker for one deployment."""

    exchange: str
    queue: str
    dead_exchange: str
    dead_queue: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            exchange=settings.queue,
            queue=settings.queue,
            dead_exchange=f"{settings.queue}.dead",
            dead_queue=settings.dead_letter_queue,
        )


def task_queue_arguments(settings: Settings) -> dict[str, Any]:
    names = Topology.from_settings(settings)
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": names.dead_exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-max-length": settings.queue_max_length,
    }


async def ensure_topology(connection: AbstractConnection, settings: Settings) -> None:
    """Declare the task exchange and queue and the dead-letter pair; idempotent.

    Queue arguments cannot change once a queue exists. When the existing queue was declared with
    other ones (a changed INGEST_DELIVERY_LIMIT, say) it is used as it is, with a warning: better
    a running service than one that refuses to start; a policy or a new queue name changes them.
    """
    names = Topology.from_settings(settings)
    channel = await connection.channel(publisher_confirms=False)
    try:
        dead_exchange = await channel.declare_exchange(
            names.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_queue = await channel.declare_queue(
            names.dead_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(dead_exchange)
        exchange = await channel.declare_exchange(
            names.exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        try:
            queue = await channel.declare_queue(
                names.queue, durable=True, arguments=task_queue_arguments(settings)
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            log.warning(
                "queue %s exists with other arguments; using it as it is: %s", names.queue, exc
            )
            channel = await connection.channel(publisher_confirms=False)
            queue = await channel.get_queue(names.queue, ensure=True)
            exchange = await channel.get_exchange(names.exchange, ensure=True)
        await queue.bind(exchange, routing_key=names.queue)
    finally:
        if not channel.is_closed:
            await channel.close()


Setup = Callable[[AbstractConnection], Awaitable[None]]
Teardown = Callable[[], None]


class BrokerLink:
    """An AMQP connection that comes back after the broker or the network went away.

    aio-pika's robust connection restores channels but is known to come back with no consumers; so
    this link owns the reconnect loop and runs `setup` from scratch on every new connection (open
    channels, declare, consume). `teardown` runs when a connection is lost, before the next one.
    A channel closed by the broker closes the whole connection, so setup always starts clean.
    """

    def __init__(self, settings: Settings, name: str, setup: Setup, teardown: Teardown) -> None:
        self._settings = settings
        self._name = name
        self._setup = setup
        self._teardown = teardown
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self.connected = asyncio.Event()
        self.connects = 0

    async def __aenter__(self) -> BrokerLink:
        self._task = asyncio.create_task(self._run(), name=f"broker-link-{self._name}")
        # Start serving even when the broker is down: requests get 503 until it is back.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), self._settings.publish_timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_current()

    async def _run(self) -> None:
        backoff = _INITIAL_BACKOFF
        while True:
            lost = asyncio.Event()
            try:
                await self._connect(lost)
                backoff = _INITIAL_BACKOFF
                await lost.wait()
                log.warning("broker connection %s lost; reconnecting", self._name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "broker connection %s failed: %r; retry in %.1fs", self._name, exc, backoff
                )
            finally:
                self.connected.clear()
                self._teardown()
            await self._close_current()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _connect(self, lost: asyncio.Event) -> None:
        connection = await aio_pika.connect(
            self._settings.amqp_url,
            heartbeat=self._settings.amqp_heartbeat,
            client_properties={"connection_name": self._name},
            timeout=self._settings.publish_timeout,
        )
        self._connection = connection
        connection.close_callbacks.add(lambda *_: lost.set())
        await asyncio.wait_for(self._setup(connection), self._settings.publish_timeout * 2)
        self.connects += 1
        self.connected.set()

    async def _close_current(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(connection.close()), 5)


def close_connection_with(channel: AbstractChannel, connection: AbstractConnection) -> None:
    """When `channel` closes (a broker error, say), close its connection so the link reconnects."""

    def close_connection(*_: object) -> None:
        if not connection.is_closed:
            asyncio.get_running_loop().create_task(connection.close())

    channel.close_callbacks.add(close_connection)
