"""The fault suite: every scenario runs concurrent load through real processes against a private
Postgres and RabbitMQ, injects its fault, heals, and checks the history (tests/harness/history.py):
0 lost, 0 duplicated, 0 unexpected, every 202 final, no request past its bounded timeouts.

`make chaos` runs all of it; tests marked `ci` also run in `make test`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
import aiohttp
import orjson
import pytest

from ingest import store
from ingest.messages import Operation, TaskBatch, TaskRequest
from ingest.workflows import WorkflowDefinition
from tests.harness.cluster import Cluster
from tests.harness.history import LEDGER, History, Report, check, load, settle

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

Fault = Callable[[Cluster], Awaitable[None]]
#: Publish and database waits are a few seconds in these tests; nothing may take much longer.
MAX_REQUEST_SECONDS = 16.0


async def run_scenario(
    tmp_path,
    fault: Fault,
    *,
    count: int = 20_000,
    concurrency: int = 16,
    edges: int = 1,
    workers: int = 2,
    retries: int = 0,
    prefer: str = "wait=2",
    worker_settings: dict | None = None,
    cluster_settings: dict | None = None,
) -> Report:
    async with Cluster(tmp_path, **(cluster_settings or {})) as cluster:
        urls = [await cluster.start_edge(i) for i in range(edges)]
        for index in range(workers):
            await cluster.start_worker(index, **(worker_settings or {}))
        await cluster.wait_consumers(1)
        # RabbitMQ 3.10 writes a new quorum queue's metadata lazily; a kill before that loses it.
        await cluster.rabbit.sync_metadata()
        history = History()
        assert cluster.workflow is not None
        healed = asyncio.Event()
        loading = asyncio.create_task(
            load(
                urls,
                cluster.token,
                history,
                until=healed,
                count=count,
                concurrency=concurrency,
                retries=retries,
                prefer=prefer,
            )
        )
        await asyncio.sleep(1)
        await fault(cluster)
        await asyncio.sleep(2)  # load goes on a little after the fault heals
        healed.set()
        await asyncio.wait_for(loading, 120)
        await cluster.wait_consumers(1)
        await settle(cluster.pool, cluster.workflow.id, history, within=90)
        report = await check(cluster.pool, cluster.workflow.id, history)
        print(f"\n{tmp_path.name}: {report}")
        assert report.ok, f"{report}\n{cluster.logs()}"
        assert report.acknowledged > 0, report
        assert report.slowest < MAX_REQUEST_SECONDS, report
        return report


# ------------------------------------------------------------------------------------- workers


@pytest.mark.ci
async def test_worker_killed_after_commit_before_ack(tmp_path):
    async def fault(cluster: Cluster) -> None:
        # The armed worker commits its first batch, then SIGKILLs itself before acking.
        await cluster.start_worker(9, fault_points="exit-after-commit")
        await cluster.wait_exit(cluster.workers[9], within=30)

    await run_scenario(tmp_path, fault, workers=1)


async def test_worker_killed_before_commit(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await cluster.start_worker(9, fault_points="exit-before-commit")
        await cluster.wait_exit(cluster.workers[9], within=30)

    await run_scenario(tmp_path, fault, workers=1)


async def test_workers_killed_hard_under_load(tmp_path):
    async def fault(cluster: Cluster) -> None:
        for _ in range(3):
            await asyncio.sleep(1)
            cluster.kill(cluster.workers[0])
            await cluster.start_worker(0)

    await run_scenario(tmp_path, fault)


# --------------------------------------------------------------------------------------- edges


async def test_edge_killed_between_publish_and_answer_clients_retry(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await asyncio.sleep(1)
        cluster.kill(cluster.edges[0])
        await cluster.start_edge(0)

    report = await run_scenario(tmp_path, fault, retries=8)
    assert report.attempts.get("None", 0) > 0, report  # the kill cut requests off


async def test_edge_restart_while_clients_wait_synchronously(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await cluster.stop_workers_for(2.0)
        assert await cluster.terminate(cluster.edges[0]) == 0
        await cluster.start_edge(0)

    await run_scenario(tmp_path, fault, retries=8, prefer="wait=5")


# -------------------------------------------------------------------------------------- broker


@pytest.mark.ci
async def test_broker_killed_and_restarted(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await asyncio.sleep(1)
        await cluster.rabbit.kill()
        await asyncio.sleep(1)
        await cluster.rabbit.restart(clean=False)
        await cluster.wait_consumers(1)

    await run_scenario(tmp_path, fault, retries=8)


async def test_broker_clean_restart(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await asyncio.sleep(1)
        await cluster.rabbit.restart(clean=True)
        await cluster.wait_consumers(1)

    await run_scenario(tmp_path, fault, retries=8)


async def test_broker_memory_alarm_blocks_publishes_without_loss(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await asyncio.sleep(1)
        await cluster.rabbit.ctl("set_vm_memory_high_watermark", "0")
        await asyncio.sleep(5)
        await cluster.rabbit.ctl("set_vm_memory_high_watermark", "0.4")

    await run_scenario(tmp_path, fault, retries=8)


async def test_queue_full_rejects_with_503_and_loses_nothing(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await cluster.stop_workers_for(4.0)

    report = await run_scenario(
        tmp_path,
        fault,
        retries=3,
        prefer="respond-async",
        cluster_settings={"queue_max_length": 30},
    )
    assert report.statuses.get("503", 0) > 0 or report.recovered > 0, report


async def test_unroutable_publish_is_503_until_the_binding_returns(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await asyncio.sleep(1)
        connection = await aio_pika.connect(cluster.rabbit.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue("fault.tasks", ensure=True)
            await queue.unbind("fault.tasks", routing_key="fault.tasks")
        await asyncio.sleep(2)
        # A restarted worker declares the topology again, binding included.
        cluster.kill(cluster.workers[0])
        await cluster.start_worker(0)

    report = await run_scenario(tmp_path, fault, retries=8)
    assert report.attempts.get("503", 0) > 0, report


# ----------------------------------------------------------------------------------- databases


@pytest.mark.ci
async def test_postgres_immediate_stop_and_restart(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await asyncio.sleep(1)
        await cluster.pg.stop("immediate")
        await asyncio.sleep(3)
        await cluster.pg.start()

    await run_scenario(tmp_path, fault, retries=8)


async def test_database_stall_longer_than_the_consumer_timeout(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await cluster.rabbit.ctl("eval", "application:set_env(rabbit, consumer_timeout, 4000).")
        await asyncio.sleep(1)
        await cluster.worker_db.blackhole()
        await asyncio.sleep(10)
        await cluster.worker_db.heal()

    await run_scenario(tmp_path, fault, retries=8)


# ------------------------------------------------------------------------------------- network


@pytest.mark.ci
async def test_network_blackhole_between_edge_and_broker(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await asyncio.sleep(1)
        await cluster.edge_amqp.blackhole()
        await asyncio.sleep(6)
        await cluster.edge_amqp.heal()

    report = await run_scenario(tmp_path, fault, retries=8)
    assert report.attempts.get("503", 0) > 0, report


async def test_network_blackhole_between_workers_and_broker_and_database(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await asyncio.sleep(1)
        await cluster.worker_amqp.blackhole()
        await cluster.worker_db.blackhole()
        await asyncio.sleep(6)
        await cluster.worker_amqp.heal()
        await cluster.worker_db.heal()

    await run_scenario(tmp_path, fault, retries=8)


async def test_network_resets_and_delays(tmp_path):
    async def fault(cluster: Cluster) -> None:
        await cluster.worker_db.delay(0.2)
        await cluster.edge_amqp.reset()
        await asyncio.sleep(2)
        await cluster.worker_amqp.reset()
        await asyncio.sleep(2)
        await cluster.worker_db.heal()

    await run_scenario(tmp_path, fault, retries=8)


# ---------------------------------------------------------------------------------------- soak


async def test_bounded_random_fault_soak(tmp_path):
    rng = random.Random(20261129)

    async def fault(cluster: Cluster) -> None:
        actions = [
            lambda: cluster.worker_db.blackhole(),
            lambda: cluster.worker_amqp.reset(),
            lambda: cluster.edge_amqp.blackhole(),
            lambda: cluster.edge_db.delay(0.1),
            lambda: cluster.rabbit.restart(clean=False),
            lambda: cluster.pg.restart("immediate"),
        ]
        for _ in range(6):
            await rng.choice(actions)()
            await asyncio.sleep(rng.uniform(1, 3))
            for proxy in (
                cluster.worker_db,
                cluster.worker_amqp,
                cluster.edge_amqp,
                cluster.edge_db,
            ):
                await proxy.heal()
            await asyncio.sleep(rng.uniform(0.5, 2))

    await run_scenario(tmp_path, fault, retries=10, edges=2)


# ------------------------------------------------------------------------------------ overload


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def test_overload_gets_503s_and_the_edge_memory_stays_flat(tmp_path):
    """Far more offered load than a slowed broker takes: the edge answers 503 at once for what
    its bounded publish backlog cannot hold, rather than buffering; its RSS barely moves."""
    overrides = {"publish_backlog": 200, "publish_concurrency": 2, "publish_batch_max": 8}
    async with Cluster(tmp_path, **overrides) as cluster:
        url = await cluster.start_edge(0)
        await cluster.start_worker(0)
        await cluster.wait_consumers(1)
        await cluster.edge_amqp.delay(0.05)
        edge = cluster.edges[0].pid
        before = _rss_mib(edge)
        history = History()
        done = asyncio.Event()
        loading = asyncio.create_task(
            load(
                [url],
                cluster.token,
                history,
                until=done,
                count=20_000,
                concurrency=256,
                prefer="respond-async",
            )
        )
        peak = before
        for _ in range(16):
            await asyncio.sleep(0.5)
            peak = max(peak, _rss_mib(edge))
        done.set()
        await asyncio.wait_for(loading, 60)
        await cluster.edge_amqp.heal()
        assert cluster.workflow is not None
        await settle(cluster.pool, cluster.workflow.id, history, within=90)
        report = await check(cluster.pool, cluster.workflow.id, history)
        print(f"\n{tmp_path.name}: {report} rss {before:.0f} -> peak {peak:.0f} MiB")
        assert report.ok, report
        assert report.statuses.get("503", 0) > 0, report
        assert peak - before < 48, (before, peak)


# -------------------------------------------------------------------------------------- poison

#: A workflow with a text Unique ID, for poison that targets the index on it.
KEYED = {
    "name": "Keyed",
    "fields": [{"name": "Ref", "type": "text", "required": True}],
    "unique_id": "Ref",
}


def _poison_bodies(marker: str) -> dict[str, tuple[str, bytes, set[int]]]:
    """Poison kinds: (workflow to send to, raw body, the final statuses it may get)."""
    return {
        "tiny exponent": (
            "ledger",
            b'{"Marker": "%s", "Seq": -1e-9999999999999999999}' % marker.encode(),
            {400, 422},
        ),
        "huge exponent in an unknown key": (
            "ledger",
            b'{"Marker": "%s", "x": 1E+9999999999999999999}' % marker.encode(),
            {400, 422},
        ),
        "crashes the handler": ("ledger", b'{"Marker": "POISON-%s"}' % marker.encode(), {500}),
        "60k unknown keys": (
            "ledger",
            orjson.dumps({"Marker": marker, **{f"k{n}": n for n in range(60_000)}}),
            {413, 422},
        ),
        # Random, so that Postgres cannot compress it under the index's row limit.
        "Unique ID too long for its index": (
            "keyed",
            orjson.dumps({"Ref": marker + secrets.token_urlsafe(3000)}),
            {422},
        ),
        "text too long": ("keyed", orjson.dumps({"Ref": "y" * 20_000}), {422}),
    }


async def _final_status(session: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> int:
    """The request's final status: the answer itself, or its status URL's once it is final."""
    if response.status != 202:
        return response.status
    location = response.headers["Location"]
    for _ in range(600):
        async with session.get(location) as status:
            document = await status.json()
        if document["status"] != "pending":
            return int(document["http_status"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"{location} never became final")


@pytest.mark.ci
async def test_poison_mixed_into_load_from_several_workflows_harms_no_other_request(tmp_path):
    """Poison of every kind, sent alongside healthy load to two other workflows: every healthy
    request succeeds exactly once, every poison request gets a final answer of its own, and
    nothing but the poison is dead-lettered."""
    async with Cluster(tmp_path) as cluster:
        url = await cluster.start_edge(0)
        await cluster.start_worker(0, fault_points="poison:POISON")
        await cluster.wait_consumers(1)
        assert cluster.workflow is not None
        second, second_token = await store.create_workflow(
            cluster.pool, WorkflowDefinition.parse({**LEDGER, "name": "Ledger 2"})
        )
        keyed, keyed_token = await store.create_workflow(
            cluster.pool, WorkflowDefinition.parse(KEYED)
        )
        tokens = {"ledger": cluster.token, "keyed": keyed_token}
        histories = {cluster.workflow.id: History(), second.id: History()}
        done = asyncio.Event()
        loads = [
            asyncio.create_task(
                load([url], token, history, until=done, count=1500, concurrency=8, prefer="wait=5")
            )
            for token, history in zip(
                (cluster.token, second_token), histories.values(), strict=True
            )
        ]
        answers: dict[str, list[int]] = {}
        async with aiohttp.ClientSession() as session:
            for round_ in range(6):
                for kind, (target, body, _) in _poison_bodies(f"poison-{round_}").items():
                    async with session.post(
                        f"{url}/api/v1/workflows/{tokens[target]}/tasks",
                        data=body,
                        headers={"Content-Type": "application/json", "Prefer": "wait=5"},
                    ) as response:
                        answers.setdefault(kind, []).append(await _final_status(session, response))
            done.set()
            await asyncio.wait_for(asyncio.gather(*loads), 120)
        for workflow_id, history in histories.items():
            await settle(cluster.pool, workflow_id, history, within=60)
            report = await check(cluster.pool, workflow_id, history)
            print(f"\nworkflow {workflow_id}: {report}")
            assert report.ok, f"{report}\n{cluster.logs()}"
            assert set(report.statuses) == {"201"}, report
        for kind, (_, _, allowed) in _poison_bodies("").items():
            assert set(answers[kind]) <= allowed, (kind, answers[kind])
        print(f"poison answers: {answers}")
        assert (
            await cluster.pool.fetchval(
                "SELECT count(*) FROM tasks WHERE workflow_id = $1", keyed.id
            )
            == 0
        )
        poisoned = await cluster.pool.fetchval(
            "SELECT count(*) FROM tasks WHERE fields::text LIKE '%poison-%'"
        )
        assert poisoned == 0
        letters = await cluster.pool.fetch("SELECT body FROM dead_letters")
        assert len(letters) == 6, letters  # the six crashing requests, each alone
        assert all(b"POISON-" in bytes(letter["body"]) for letter in letters)


async def test_a_request_that_kills_the_worker_is_dead_lettered_alone(tmp_path):
    """No exception to catch: the worker dies on it at every delivery. Its neighbours in the
    message, and the message prefetched after it, commit anyway; only it is dead-lettered."""
    async with Cluster(tmp_path) as cluster:
        assert cluster.workflow is not None
        workflow = cluster.workflow
        await cluster.start_worker(0, fault_points="kill:KILLER")
        await cluster.wait_consumers(1)

        def request(marker: str, seq: int) -> TaskRequest:
            body = orjson.dumps({"Marker": marker, "Seq": seq}).decode()
            return TaskRequest(
                uuid.uuid4(), workflow.id, workflow.version, Operation.UPSERT, body, 0.0
            )

        first = [request("KILLER" if n == 37 else f"ok-{n}", n) for n in range(64)]
        second = [request(f"after-{n}", n) for n in range(20)]
        connection = await aio_pika.connect(cluster.rabbit.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange("fault.tasks")
            for batch in (first, second):
                message = aio_pika.Message(TaskBatch(tuple(batch)).encode(), delivery_mode=2)
                await exchange.publish(message, routing_key="fault.tasks")
        everything = [*first, *second]
        for _ in range(15):  # a supervisor's restarts, at most one per delivery
            done = await cluster.pool.fetchval(
                "SELECT count(*) FROM request_results WHERE request_id = ANY($1::uuid[])",
                [r.id for r in everything],
            )
            if done == len(everything):
                break
            with contextlib.suppress(AssertionError):
                await cluster.wait_exit(cluster.workers[0], within=10)
            if cluster.workers[0].poll() is not None:
                await cluster.start_worker(0, fault_points="kill:KILLER")
        letters = await cluster.pool.fetch("SELECT request_ids FROM dead_letters")
        assert [list(letter["request_ids"]) for letter in letters] == [[first[37].id]]
        statuses = dict(
            await cluster.pool.fetch("SELECT request_id, http_status FROM request_results")
        )
        assert statuses.pop(first[37].id) == 500
        assert statuses == {r.id: 201 for r in everything if r is not first[37]}
