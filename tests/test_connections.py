"""What one client can hold of the edge: connections, time, bytes of bodies in flight; and the
answers aiohttp's own parser gives, in JSON like every other error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.edge.app import create_app
from ingest.edge.inflight import BODY_BUDGET, BodyBudget
from ingest.edge.keys import METRICS
from ingest.settings import Settings
from tests.conftest import SEED_REQUEST, service_env, spawn, wait_until

#: The most an edge's RSS may grow while 400 clients each send it a 1 MB body at once (the README
#: states it). Unbounded, it grew by ~420 MiB (to 483 MB). With the default 16 MiB of bodies in
#: flight, counted as they arrive, it grows by about 100-160 MiB: ~5 MiB for each of the ~16 bodies
#: held whole at a time (as bytes, text and broker frames while parsed and published), and what
#: the edge reads ahead on the other connections (its read buffer, and the parts of bodies it reads
#: before a chunk does not fit) before answering them 503 and draining them.
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
            await _holding(budget, 10)  # the busy request is reading its body
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


async def test_a_request_whose_next_body_bytes_do_not_fit_is_503_at_once(settings, make_workflow):
    """Bytes are held as they arrive: a request that sent part of its body holds that part, and
    the request whose next bytes would pass the cap is refused at once, mid-body."""
    _, token = await make_workflow()
    head = _post_head(token, "Content-Length: 3000")
    body = json.dumps({"Company ID": "1", "Company Name": "x" * 2950}).encode().ljust(3000)
    async with await _edge(settings, max_body_bytes_in_flight=4096) as client:
        budget = client.server.app[BODY_BUDGET]
        first_reader, first = await asyncio.open_connection("127.0.0.1", settings.port)
        second_reader, second = await asyncio.open_connection("127.0.0.1", settings.port)
        try:
            first.write(head + body[:2000])
            await _holding(budget, 2000)
            second.write(head + body[:1500])  # 3,500 bytes held: it fits
            await _holding(budget, 3500)
            second.write(body[1500:])  # 5,000 would not
            status, headers, answer = await asyncio.wait_for(read_response(second_reader), 5)
            assert status == 503
            assert int(headers["retry-after"]) >= 1
            assert set(json.loads(answer)) == {"error", "message"}
            await _holding(budget, 2000)  # the refused request let go of what it held
            first.write(body[2000:])
            assert (await asyncio.wait_for(read_response(first_reader), 10))[0] == 202
        finally:
            first.close()
            second.close()
        await _holding(budget, 0)
        status, _, _ = await exchange(settings.port, head + body)
        assert status == 202


async def test_a_body_that_arrived_whole_is_refused_when_it_does_not_fit(settings, make_workflow):
    _, token = await make_workflow()
    head = _post_head(token, "Content-Length: 3000")
    body = json.dumps({"Company ID": "1", "Company Name": "x" * 2950}).encode().ljust(3000)
    async with await _edge(settings, max_body_bytes_in_flight=4096) as client:
        budget = client.server.app[BODY_BUDGET]
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        try:
            writer.write(head + body[:2000])
            await _holding(budget, 2000)
            status, headers, _ = await exchange(settings.port, head + body)
            assert status == 503
            assert int(headers["retry-after"]) >= 1
            writer.write(body[2000:])
            assert (await asyncio.wait_for(read_response(reader), 10))[0] == 202
        finally:
            writer.close()


async def test_stalled_uploads_do_not_turn_other_clients_requests_into_503s(
    settings, make_workflow
):
    """16 uploads that declare a compressed body and never send it once held the whole budget
    (16 times the body limit) until their 408: every other write was a 503 for 30 seconds."""
    _, token = await make_workflow()
    _, other_token = await make_workflow()
    head = (
        f"POST /api/v1/workflows/{token}/tasks HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 20\r\n\r\n"
    ).encode()
    async with await _edge(settings) as client:
        assert settings.max_body_bytes_in_flight <= 16 * settings.max_body_bytes
        stalled = [await asyncio.open_connection("127.0.0.1", settings.port) for _ in range(16)]
        try:
            for _, writer in stalled:
                writer.write(head)
            await wait_until(_handling(client, 16), within=5, interval=0.01)
            assert client.server.app[BODY_BUDGET].held == 0
            for path_token in (other_token, token):
                response = await client.post(
                    f"/api/v1/workflows/{path_token}/tasks",
                    json=SEED_REQUEST,
                    headers={"Prefer": "respond-async"},
                )
                assert response.status == 202, await response.text()
            assert not any(reader.at_eof() for reader, _ in stalled)  # still waiting, unanswered
        finally:
            for _, writer in stalled:
                writer.close()


def _handling(client: TestClient[aiohttp.web.Request, object], count: int) -> Any:
    """A predicate: the edge has started handling at least `count` requests."""
    server = client.server.runner.server
    assert server is not None

    async def started() -> bool:
        return server.requests_count >= count

    return started


async def test_a_chunked_body_holds_its_real_size_never_the_body_limit(settings, make_workflow):
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
    assert status == 415
    assert headers["accept-encoding"] == "gzip, deflate"
    assert json.loads(body)["error"] == "unsupported_content_encoding"


async def test_a_request_line_over_8190_bytes_gets_a_json_414(client, make_workflow, settings):
    _, token = await make_workflow()
    query = "Company%20ID=" + "x" * 9000
    status, headers, body = await exchange(
        settings.port,
        f"GET /api/v1/workflows/{token}/tasks?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    )
    assert status == 414
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {
        "error": "uri_too_long",
        "message": "the request line is longer than 8190 bytes",
    }


@pytest.mark.parametrize(
    "headers",
    [
        "".join(f"X-Header-{n}: {n}\r\n" for n in range(200)),
        f"X-Long: {'t' * 9000}\r\n",
        f"X-{'t' * 9000}: 1\r\n",
    ],
    ids=["200 headers", "a 9 KB header value", "a 9 KB header name"],
)
async def test_too_many_or_too_long_headers_get_a_json_431_that_quotes_nothing(
    client, make_workflow, settings, headers
):
    _, token = await make_workflow()
    status, _, body = await exchange(
        settings.port,
        f"GET /api/v1/workflows/{token}/tasks HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode(),
    )
    assert status == 431
    answer = json.loads(body)
    assert answer["error"] == "request_header_fields_too_large"
    assert "ttt" not in answer["message"]
    assert "X-Header" not in answer["message"]
    assert token not in body.decode()


async def test_a_body_that_does_not_decode_closes_the_connection_with_its_400(
    client, make_workflow, settings, caplog
):
    """aiohttp's parser stops at a body it cannot decode and drops what follows on the
    connection: the 400 says `Connection: close`, so that a client or proxy does not send its next
    request into the void. Nothing is logged as an unhandled error."""
    _, token = await make_workflow()
    plain = json.dumps(SEED_REQUEST).encode()
    bad = (
        f"POST /api/v1/workflows/{token}/tasks HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(plain)}\r\n\r\n"
    ).encode() + plain
    reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
    try:
        writer.write(bad + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await asyncio.wait_for(read_response(reader), 5)
        assert status == 400
        assert headers["connection"] == "close"
        answer = json.loads(body)
        assert answer["error"] == "malformed_body"
        assert "Can not decode" not in answer["message"]  # aiohttp's own words stay inside
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    errors = [r for r in _edge_records(caplog) if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_body_read_deadline_closes_the_connection_with_its_408(settings, make_workflow):
    _, token = await make_workflow()
    async with await _edge(settings, body_read_timeout=0.5):
        reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        try:
            writer.write(_post_head(token, "Content-Length: 100") + b"{")
            status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
            assert (status, headers["connection"]) == (408, "close")
        finally:
            writer.close()


async def test_a_client_that_leaves_mid_body_is_not_a_database_outage(
    settings, make_workflow, caplog
):
    """Served as `ingest serve` serves (aiohttp's test server cancels the handler instead)."""
    _, token = await make_workflow()
    app = create_app(settings)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await aiohttp.web.TCPSite(runner, "127.0.0.1", settings.port).start()
        body = json.dumps(SEED_REQUEST).encode()
        _, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        writer.write(_post_head(token, f"Content-Length: {len(body)}") + body[:20])
        await _holding(app[BODY_BUDGET], 20)
        writer.close()
        await _holding(app[BODY_BUDGET], 0)
    finally:
        await runner.cleanup()
    registry = app[METRICS].registry
    answered = {
        sample.labels["status"]
        for metric in registry.collect()
        if metric.name == "ingest_http_requests"
        for sample in metric.samples
        if sample.labels.get("route") == "/api/v1/workflows/{token}/tasks"
    }
    assert answered == {"400"}
    warnings = [r for r in _edge_records(caplog) if r.levelno >= logging.WARNING]
    assert not warnings, [r.getMessage() for r in warnings]


def _edge_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the edge and aiohttp's server logged (not the broker client's chatter)."""
    return [r for r in caplog.records if r.name.split(".")[0] in ("ingest", "aiohttp")]


async def test_an_unknown_expectation_gets_a_json_417(client, settings):
    status, headers, body = await exchange(
        settings.port, b"POST /healthz HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n"
    )
    assert status == 417
    assert headers["content-type"].startswith("application/json")
    assert set(json.loads(body)) == {"error", "message"}
