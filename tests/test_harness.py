"""The fault-injection harness itself: private Postgres and RabbitMQ that really crash and recover,
and a proxy whose every fault mode does what it says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from tests.harness import FaultProxy, PrivatePostgres, PrivateRabbit
from tests.harness.postgres import StopMode

pytestmark = pytest.mark.chaos

#: What a client sees when its connection goes away under it.
CONNECTION_LOST = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InternalClientError,  # the server died between two protocol states
)
QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}


# --- Postgres ------------------------------------------------------------------------------------


async def test_postgres_keeps_committed_data_through_kill(tmp_path: Path) -> None:
    async with PrivatePostgres(tmp_path) as pg:
        conn = await asyncpg.connect(pg.dsn(), timeout=5)
        await conn.execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
        first = pg.pid

        await pg.kill()
        with pytest.raises(CONNECTION_LOST):
            await conn.fetchval("SELECT 1", timeout=5)
        conn.terminate()
        await pg.start()

        assert pg.pid not in (None, first)
        conn = await asyncpg.connect(pg.dsn(), timeout=5)
        try:
            assert await conn.fetchval("SELECT n FROM t", timeout=5) == 1
        finally:
            await conn.close(timeout=5)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart(tmp_path: Path, mode: StopMode) -> None:
    async with PrivatePostgres(tmp_path) as pg:
        conn = await asyncpg.connect(pg.dsn(), timeout=5)
        await conn.execute("CREATE TABLE t (n int); INSERT INTO t VALUES (2)")
        conn.terminate()

        await pg.restart(mode)

        conn = await asyncpg.connect(pg.dsn(), timeout=5)
        try:
            assert await conn.fetchval("SELECT n FROM t", timeout=5) == 2
        finally:
            await conn.close(timeout=5)


# --- RabbitMQ ------------------------------------------------------------------------------------


async def _declare(
    connection: aio_pika.abc.AbstractConnection, queue: str
) -> aio_pika.abc.AbstractChannel:
    channel = await connection.channel()  # publisher confirms on
    await channel.declare_queue(queue, durable=True, arguments=QUORUM, timeout=10)
    return channel


async def _publish(
    channel: aio_pika.abc.AbstractChannel, queue: str, body: bytes, within: float = 10
) -> None:
    message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    await channel.default_exchange.publish(message, routing_key=queue, timeout=within)


async def _get(url: str, queue: str) -> bytes:
    async with await aio_pika.connect(url, timeout=10) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, arguments=QUORUM, timeout=10)
        message = await declared.get(timeout=10, fail=True)
        assert message is not None
        await message.ack()
        return message.body


async def test_rabbit_keeps_confirmed_messages_through_kill_and_restart(tmp_path: Path) -> None:
    async with PrivateRabbit(tmp_path) as rabbit:
        async with await aio_pika.connect(rabbit.url, timeout=10) as connection:
            channel = await _declare(connection, "survivor")
            await rabbit.sync_metadata()  # see its docstring: the queue must predate the crash
            await _publish(channel, "survivor", b"confirmed just before the kill")
            await rabbit.kill()

        await rabbit.start()
        async with await aio_pika.connect(rabbit.url, timeout=10) as connection:
            channel = await _declare(connection, "survivor")
            await _publish(channel, "survivor", b"confirmed just before the clean restart")
            await rabbit.restart(clean=True)

        assert await _get(rabbit.url, "survivor") == b"confirmed just before the kill"
        assert await _get(rabbit.url, "survivor") == b"confirmed just before the clean restart"


async def test_rabbit_memory_alarm_blocks_publishers(tmp_path: Path) -> None:
    async with PrivateRabbit(tmp_path) as rabbit:
        async with await aio_pika.connect(rabbit.url, timeout=10) as connection:
            channel = await _declare(connection, "blocked")
            await _publish(channel, "blocked", b"before the alarm")

            await rabbit.ctl("set_vm_memory_high_watermark", "0")
            held = _publish(channel, "blocked", b"held back", within=60)
            publishing = asyncio.create_task(held)
            done, _ = await asyncio.wait({publishing}, timeout=2)
            assert not done, "a publish was confirmed under a memory alarm"

            await rabbit.ctl("set_vm_memory_high_watermark", "0.4")
            await asyncio.wait_for(publishing, 15)

        assert await _get(rabbit.url, "blocked") == b"before the alarm"
        assert await _get(rabbit.url, "blocked") == b"held back"


# --- FaultProxy ----------------------------------------------------------------------------------


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[PrivatePostgres]:
    async with PrivatePostgres(tmp_path) as pg:
        yield pg


@pytest.fixture
async def proxy(pg: PrivatePostgres) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(pg.port) as proxy:
        yield proxy


async def _connect(proxy: FaultProxy, within: float = 5) -> asyncpg.Connection:
    return await asyncpg.connect(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres", timeout=within
    )


async def _round_trip(conn: asyncpg.Connection) -> float:
    started = time.monotonic()
    assert await conn.fetchval("SELECT 1", timeout=5) == 1
    return time.monotonic() - started


async def _assert_healed(proxy: FaultProxy) -> None:
    await proxy.heal()
    conn = await _connect(proxy)
    try:
        assert await _round_trip(conn) < 0.5
    finally:
        await conn.close(timeout=5)


async def _raw_connection(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TCP connection through the proxy, returned once the proxy has linked it upstream."""
    before = proxy.connections
    streams = await asyncio.open_connection("127.0.0.1", proxy.port)
    for _ in range(500):
        if proxy.connections > before:
            return streams
        await asyncio.sleep(0.01)
    raise AssertionError("the proxy did not link the connection within 5 s")


async def test_proxy_cut_closes_and_refuses(proxy: FaultProxy) -> None:
    conn = await _connect(proxy)
    reader, writer = await _raw_connection(proxy)

    await proxy.cut()

    with pytest.raises(CONNECTION_LOST):
        await conn.fetchval("SELECT 1", timeout=5)
    assert await asyncio.wait_for(reader.read(1), 5) == b""  # a FIN, not a reset
    with pytest.raises(ConnectionRefusedError):
        await _connect(proxy)
    conn.terminate()
    writer.close()
    await _assert_healed(proxy)


async def test_proxy_blackhole_swallows_everything(proxy: FaultProxy) -> None:
    conn = await _connect(proxy)

    await proxy.blackhole()

    with pytest.raises(TimeoutError):
        await conn.fetchval("SELECT 1", timeout=0.5)
    with pytest.raises(TimeoutError):
        await _connect(proxy, within=0.5)
    conn.terminate()
    await _assert_healed(proxy)


async def test_proxy_delay_adds_latency(proxy: FaultProxy) -> None:
    conn = await _connect(proxy)
    try:
        assert await _round_trip(conn) < 0.1

        await proxy.delay(0.2)

        # A query and its answer each cross the proxy once: two delays per round trip.
        assert 0.4 <= await _round_trip(conn) < 1.5
    finally:
        await conn.close(timeout=5)
    await _assert_healed(proxy)


async def test_proxy_reset_aborts_connections(proxy: FaultProxy) -> None:
    conn = await _connect(proxy)
    reader, writer = await _raw_connection(proxy)

    await proxy.reset()

    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(1), 5)
    with pytest.raises(CONNECTION_LOST):
        await conn.fetchval("SELECT 1", timeout=5)
    conn.terminate()
    writer.close()
    # Unlike cut(), reset() goes on accepting.
    conn = await _connect(proxy)
    await conn.close(timeout=5)
    await _assert_healed(proxy)
