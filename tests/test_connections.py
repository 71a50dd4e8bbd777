"""What one client can hold of the edge: connections, time, bytes of bodies in flight; and the
answers aiohttp's own parser gives, in JSON like every other error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.app import create_app
from ingest.inflight import BODY_BUDGET, BodyBudget
from ingest.settings import Settings
from tests.conftest import SEED_REQUEST, service_env, spawn, wait_until

#: The most an edge's RSS may grow while 400 clients each send it a 1 MB body at once. Unbounded,
#: it grew by ~420 MiB (to 483 MB). With the default 16 MiB of bodies in flight we measured growths
#: of 107-161 MiB (peaks of 167-221 MiB): ~5 MiB for each of the ~16 bodies admitted at a time
#: (held as bytes, text and broker frames while parsed and published), and what the edge reads
#: ahead on the other connections (up to ~256 KiB each) before answering them 503 and draining them.
RSS_GROWTH_BOUND_MIB = 224


async def _edge(settings: Settings, **changes: object) -> TestClient[aiohttp.web.Request, object]:
    server = TestServer(create_app(settings.model_copy(update=changes)), port=settings.port)
    return TestClient(server)


@contextlib.asynccontextmanager
async def running_edge(
    settings: Settings, log: Path, open_files: int | None = None, **env: str
) -> AsyncIterator[int]:
    """`ingest serve` as its own process, ready; yields its pid. `open_files` caps its
    descriptors (soft and hard), as a small container would."""
    argv = ["-m", "ingest", "serve"]
    if open_files is not None:
        argv = [
            "-c",
            "import resource, runpy, sys; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({open_files}, {open_files})); "
            "sys.argv = ['ingest', 'serve']; runpy.run_module('ingest', run_name='__main__')",
        ]
    edge = spawn(argv, service_env(settings, **env), log)
    try:

        async def ready() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{settings.public_url}/readyz") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(ready, within=30)
        yield edge.pid
    finally:
        edge.send_signal(signal.SIGTERM)
        edge.wait(20)


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` on a new connection; the status, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _open_descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _open_files_at_least(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# -------------------------------------------------------------------------------------- timeouts


async def test_headers_sent_slowly_are_cut_within_the_header_timeout(settings, make_workflow):
    _, token = await make_workflow()
    async with await _edge(settings, header_read_timeout=1.0, idle_timeout=30.0):
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        started = time.monotonic()

        async def trickle() -> None:
            writer.write(f"POST /api/v1/workflows/{token}/tasks HTTP/1.1\r\n".encode())
            for _ in range(100):
                writer.write(b"X-Slow: 1\r\n")
                await asyncio.sleep(0.1)

        sending = asyncio.create_task(trickle())
        try:
            status, _, body = await asyncio.wait_for(read_response(reader), 5)
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            sending.cancel()
            writer.close()
        assert status == 408
        assert json.loads(body)["error"] == "request_timeout"
        assert time.monotonic() - started < 2.5


async def test_an_idle_connection_that_never_sends_is_closed(settings):
    async with await _edge(settings, idle_timeout=1.0):
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        started = time.monotonic()
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()
        assert 0.9 < time.monotonic() - started < 3


async def test_a_keep_alive_connection_is_closed_after_the_idle_timeout(settings):
    async with await _edge(settings, idle_timeout=1.0):
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = await asyncio.wait_for(read_response(reader), 5)
            answered = time.monotonic()
            assert status == 200
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()
        assert 0.9 < time.monotonic() - answered < 3


# ----------------------------------------------------------------------------------- connections


async def test_past_the_connection_cap_the_longest_idle_connection_is_closed(
    settings, make_workflow
):
    """Not the oldest connection, which has a request in progress: the oldest idle one."""
    _, token = await make_workflow()
    body = json.dumps(SEED_REQUEST).encode()
    async with await _edge(settings, max_connections=10, idle_timeout=60.0) as client:
        budget = client.server.app[BODY_BUDGET]
        held = [await asyncio.open_connection("127.0.0.1", settings.port) for _ in range(10)]
        try:
            (busy_reader, busy), (idle_reader, _) = held[0], held[1]
            busy.write(_post_head(token, f"Content-Length: {len(body)}") + body[:10])
            await _holding(budget, len(body))
            response = await client.get("/healthz")  # the eleventh connection
            assert response.status == 200
            assert await asyncio.wait_for(idle_reader.read(), 5) == b""
            busy.write(body[10:])
            assert (await asyncio.wait_for(read_response(busy_reader), 10))[0] == 202
            for reader, _ in held[2:]:
                assert not reader.at_eof()
        finally:
            for _, writer in held:
                writer.close()


@pytest.mark.slow
async def test_two_thousand_idle_connections_do_not_stop_a_normal_request(
    settings, make_workflow, tmp_path
):
    """The edge runs with 256 descriptors: 2,000 idle sockets would have locked it out."""
    _open_files_at_least(2_500)
    _, token = await make_workflow()
    async with running_edge(settings, tmp_path / "edge.log", open_files=256) as pid:
        idle = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", settings.port) for _ in range(2_000))
        )
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{settings.public_url}/api/v1/workflows/{token}/tasks",
                    json=SEED_REQUEST,
                    headers={"Prefer": "respond-async"},
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as response,
            ):
                assert response.status == 202
            assert _open_descriptors(pid) < 256
        finally:
            for _, writer in idle:
                writer.close()


# -------------------------------------------------------------------------------- bodies in flight


def _post_head(token: str, length: str, prefer: str = "respond-async") -> bytes:
    return (
        f"POST /api/v1/workflows/{token}/tasks HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nPrefer: {prefer}\r\n{length}\r\n\r\n"
    ).encode()


async def _holding(budget: BodyBudget, size: int) -> None:
    async def held() -> bool:
        return budget.held == size

    await wait_until(held, within=5, interval=0.01)


async def test_past_the_bytes_in_flight_cap_a_request_is_503_at_once(settings, make_workflow):
    _, token = await make_workflow()
    head = _post_head(token, "Content-Length: 3000")
    body = json.dumps({"Company ID": "1", "Company Name": "x" * 2950}).encode().ljust(3000)
    async with await _edge(settings, max_body_bytes_in_flight=4096) as client:
        budget = client.server.app[BODY_BUDGET]
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        try:
            writer.write(head + body[:100])  # holds 3,000 bytes while the rest is awaited
            await _holding(budget, 3000)
            status, headers, answer = await exchange(settings.port, head)  # no body sent
            assert status == 503
            assert int(headers["retry-after"]) >= 1
            assert set(json.loads(answer)) == {"error", "message"}
            writer.write(body[100:])
            assert (await asyncio.wait_for(read_response(reader), 10))[0] == 202
        finally:
            writer.close()
        await _holding(budget, 0)
        status, _, _ = await exchange(settings.port, head + body)
        assert status == 202


async def test_a_chunked_body_holds_only_its_real_size_once_read(settings, make_workflow):
    """Before reading, a chunked body holds the body limit; once read, only its own size."""
    _, token = await make_workflow()
    small = json.dumps(SEED_REQUEST).encode()
    chunked = f"{len(small):x}\r\n".encode() + small + b"\r\n0\r\n\r\n"
    large = json.dumps({"Company ID": "2", "Company Name": "x" * 2950}).encode()
    changes = {"max_body_bytes": 4096, "max_body_bytes_in_flight": 4096, "sync_timeout": 2.0}
    async with await _edge(settings, **changes) as client:
        budget = client.server.app[BODY_BUDGET]
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        try:
            # No worker runs: this request waits its whole sync budget, holding its body.
            writer.write(_post_head(token, "Transfer-Encoding: chunked", "wait=2") + chunked)
            await _holding(budget, len(small))
            length = f"Content-Length: {len(large)}"
            status, _, _ = await exchange(settings.port, _post_head(token, length) + large)
            assert status == 202
            assert (await asyncio.wait_for(read_response(reader), 10))[0] == 202
        finally:
            writer.close()


@pytest.mark.slow
async def test_four_hundred_concurrent_one_megabyte_bodies_keep_the_edge_rss_bounded(
    settings, make_workflow, tmp_path
):
    _open_files_at_least(1_000)
    _, token = await make_workflow()
    body = json.dumps({"Company ID": "1", "Company Name": "x" * 1_000_000}).encode()
    url = f"{settings.public_url}/api/v1/workflows/{token}/tasks"
    headers = {"Content-Type": "application/json", "Prefer": "respond-async"}
    async with running_edge(settings, tmp_path / "edge.log") as pid:
        before = peak = _rss_mib(pid)
        sending = True

        async def sample() -> None:
            nonlocal peak
            while sending:
                peak = max(peak, _rss_mib(pid))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def post() -> tuple[int, str | None, bytes]:
                async with session.post(url, data=body, headers=headers) as response:
                    return (
                        response.status,
                        response.headers.get("Retry-After"),
                        await response.read(),
                    )

            answers = await asyncio.gather(*(post() for _ in range(400)))
        sending = False
        await sampler
    statuses = [status for status, _, _ in answers]
    print(f"\nrss {before:.0f} -> peak {peak:.0f} MiB; {statuses.count(202)} accepted")
    assert set(statuses) <= {202, 503}, statuses
    assert statuses.count(202) > 0
    for status, retry_after, answer in answers:
        if status == 503:
            assert retry_after is not None
            assert json.loads(answer)["error"] == "unavailable"
    assert peak - before < RSS_GROWTH_BOUND_MIB, (before, peak)


# ------------------------------------------------------------------------- aiohttp's own answers


@pytest.mark.parametrize("coding", ["br", "zstd"])
async def test_a_body_in_an_unsupported_content_encoding_gets_a_json_answer(
    client, make_workflow, settings, coding
):
    _, token = await make_workflow()
    status, headers, body = await exchange(
        settings.port,
        (
            f"POST /api/v1/workflows/{token}/tasks HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Encoding: {coding}\r\n"
            "Content-Length: 4\r\n\r\nxxxx"
        ).encode(),
    )
    assert status in (400, 415)
    assert headers["content-type"].startswith("application/json")
    assert set(json.loads(body)) == {"error", "message"}


async def test_a_request_line_over_8190_bytes_gets_a_json_400(client, make_workflow, settings):
    _, token = await make_workflow()
    query = "Company%20ID=" + "x" * 9000
    status, headers, body = await exchange(
        settings.port,
        f"GET /api/v1/workflows/{token}/tasks?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    )
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert set(json.loads(body)) == {"error", "message"}


async def test_an_unknown_expectation_gets_a_json_417(client, settings):
    status, headers, body = await exchange(
        settings.port, b"POST /healthz HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n"
    )
    assert status == 417
    assert headers["content-type"].startswith("application/json")
    assert set(json.loads(body)) == {"error", "message"}
