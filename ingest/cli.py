"""The `ingest` console script: migrate, serve, work, run, workflow, source …"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson
import yaml
from pydantic import ValidationError

from ingest import deadletters, deletions, migrations, rejections, retention, store, tokens
from ingest.broker import Topology, ensure_topology
from ingest.errors import (
    ConfigError,
    DefinitionError,
    IngestError,
    MalformedBody,
    MappingFailed,
    NotFound,
)
from ingest.logs import configure_logging, run_async
from ingest.messages import parse_payload
from ingest.rejections import RejectionFilter
from ingest.settings import Settings, settings_table
from ingest.sources import SourceDefinition, SourceSummary
from ingest.workflows import CreatedWorkflow, WorkflowDefinition, WorkflowSummary, created_document


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"INGEST_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


async def migrate(settings: Settings) -> list[migrations.Migration]:
    await migrations.ensure_database(settings.database_url, settings.database_timeout)
    conn = await asyncpg.connect(settings.database_url, timeout=settings.database_timeout)
    try:
        return await migrations.apply(conn)
    finally:
        await conn.close()


def _load_definition(path: str) -> Any:
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError([f"{path} is not UTF-8 text: {exc}"]) from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DefinitionError([f"{path} is neither JSON nor YAML: {exc}"]) from None


async def create_workflow(settings: Settings, path: str) -> CreatedWorkflow:
    definition = WorkflowDefinition.parse(_load_definition(path))
    async with store.open_pool(settings, size=1) as pool:
        workflow, token = await store.create_workflow(pool, definition)
    return created_document(workflow, token, settings.base_url)


async def list_workflows(settings: Settings) -> list[WorkflowSummary]:
    async with store.open_pool(settings, size=1) as pool:
        return [w.summary(settings.base_url) for w in await store.list_workflows(pool)]


async def update_workflow(
    settings: Settings, public_id: str, path: str, if_version: int | None = None
) -> WorkflowSummary:
    change = _load_definition(path)
    made_from = None if if_version is None else {if_version}
    async with store.open_pool(settings, size=1) as pool:
        workflow = await store.update_workflow(pool, public_id, change, made_from)
    if workflow is None:
        raise NotFound(f"no workflow has the id {public_id!r}")
    return workflow.summary(settings.base_url)


async def delete_workflow(settings: Settings, public_id: str) -> None:
    async with store.open_pool(settings, size=1) as pool:
        if not await deletions.delete_workflow(pool, public_id):
            raise NotFound(f"no workflow has the id {public_id!r}")


async def token_command(settings: Settings, action: str, workflow_id: str, handle: str) -> Any:
    """`ingest workflow token new|list|revoke`: what to print (JSON, or a line of text)."""
    unknown = NotFound(f"no workflow has the id {workflow_id!r}")
    async with store.open_pool(settings, size=1) as pool:
        workflow = await store.workflow_by_public_id(pool, workflow_id)
        if workflow is None:
            raise unknown
        if action == "list":
            return [t.model_dump(mode="json") for t in await tokens.tokens_of(pool, workflow.id)]
        if action == "new":
            issued = await tokens.issue(pool, workflow.id)
            if issued is None:  # deleted meanwhile
                raise unknown
            return issued.model_dump()
        if not await tokens.revoke(pool, workflow.id, handle):
            raise NotFound(f"workflow {workflow_id} has no token with this prefix")
        return "the token was revoked: every edge refuses it within a second"


async def create_source(settings: Settings, path: str, workflow: str | None) -> SourceSummary:
    raw = _load_definition(path)
    if workflow is not None and isinstance(raw, dict):
        raw["workflow"] = workflow
    async with store.open_pool(settings, size=1) as pool:
        source = await store.create_source(pool, raw)
    return source.summary(settings.base_url)


async def list_sources(settings: Settings) -> list[SourceSummary]:
    async with store.open_pool(settings, size=1) as pool:
        return [s.summary(settings.base_url) for s in await store.list_sources(pool)]


async def update_source(settings: Settings, public_id: str, path: str) -> SourceSummary:
    changes = _load_definition(path)
    if not isinstance(changes, dict):
        raise DefinitionError([f"{path} must hold a mapping of the definition's keys"])
    async with store.open_pool(settings, size=1) as pool:
        source = await store.update_source(pool, public_id, changes)
    if source is None:
        raise NotFound(f"no source has the id {public_id!r}")
    return source.summary(settings.base_url)


async def list_rejections(settings: Settings, wanted: RejectionFilter) -> list[Any]:
    async with store.open_pool(settings, size=1) as pool:
        found = await rejections.list_rejections(pool, wanted)
    return [rejection.document() for rejection in found[: wanted.limit]]


async def try_source(
    settings: Settings, public_id: str, data: bytes
) -> tuple[bool, dict[str, Any]]:
    """What a delivery of `data` would become at source `public_id`, neither verified nor
    written: (whether it maps or is ignored, what to show)."""
    async with store.open_pool(settings, size=1) as pool:
        source = await store.source_by_public_id(pool, public_id)
    if source is None:
        raise NotFound(f"no source has the id {public_id!r}")
    try:
        return True, _delivered(source.definition, data, settings.max_body_bytes)
    except (MalformedBody, MappingFailed) as exc:
        # The codes the edge answers these with.
        code = "mapping_failed" if isinstance(exc, MappingFailed) else "malformed_body"
        return False, {"error": code, "message": str(exc)}


def _delivered(definition: SourceDefinition, data: bytes, limit: int) -> dict[str, Any]:
    """The mapped task (its numbers exactly as mapped), or that the filter leaves it out."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("the payload is not UTF-8 text") from None
    delivery = parse_payload(text)
    if not definition.admits(delivery):
        return {"status": "ignored"}
    return {
        "status": "mapped",
        "task": orjson.Fragment(definition.task_body(delivery, text, limit)),
    }


async def list_dead_letters(settings: Settings) -> list[dict[str, Any]]:
    async with store.open_pool(settings, size=1) as pool:
        return [letter.summary() for letter in await deadletters.list_letters(pool)]


async def replay_dead_letters(settings: Settings, ids: list[int] | None) -> deadletters.Replay:
    async with store.open_pool(settings, size=1) as pool:
        connection = await aio_pika.connect(settings.amqp_url, timeout=settings.publish_timeout)
        async with connection:
            await ensure_topology(connection, settings)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            names = Topology.from_settings(settings)
            exchange = await channel.get_exchange(names.exchange, ensure=True)
            routing_key = names.queue
            return await deadletters.replay(pool, exchange, routing_key, ids)


async def purge(settings: Settings) -> retention.Purged:
    async with store.open_pool(settings, size=1) as pool:
        return await retention.purge(pool, retention.Retention.from_settings(settings))


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create the database if needed and apply migrations")
    commands.add_parser("serve", help="run the HTTP edge")
    commands.add_parser("work", help="run a worker (same as `python -m worker`)")
    commands.add_parser("run", help="migrate, then run edge + INGEST_WORKERS workers, supervised")
    workflow = commands.add_parser("workflow", help="manage workflows").add_subparsers(
        dest="action", required=True
    )
    create = workflow.add_parser("create", help="create a workflow from a JSON or YAML file")
    create.add_argument("file", help="definition file, or - for standard input")
    workflow.add_parser("list", help="list workflows")
    change = workflow.add_parser(
        "update", help="change a workflow: the file's keys replace its definition's (a new version)"
    )
    change.add_argument("id", help="the workflow's id")
    change.add_argument("file", help="JSON or YAML: any keys of a definition, or - for stdin")
    change.add_argument(
        "--if-version",
        type=int,
        metavar="N",
        help="change it only if it is still at version N (the version the file was made from)",
    )
    workflow.add_parser(
        "delete", help="delete a workflow with its tasks, results, sources and tokens"
    ).add_argument("id", help="the workflow's id")
    token = workflow.add_parser("token", help="issue, list and revoke a workflow's tokens")
    token_actions = token.add_subparsers(dest="token_action", required=True)
    for verb, helped in (
        ("new", "issue a token (printed this once; older tokens keep working)"),
        ("list", "list the prefixes and issue times of the workflow's tokens"),
        ("revoke", "revoke a token, named by its prefix (or the whole token)"),
    ):
        verb_parser = token_actions.add_parser(verb, help=helped)
        verb_parser.add_argument("id", help="the workflow's id")
        if verb == "revoke":
            verb_parser.add_argument("prefix", help="the token's prefix, or the whole token")
    source = commands.add_parser("source", help="manage sources (webhook senders)").add_subparsers(
        dest="action", required=True
    )
    make = source.add_parser("create", help="create a source from a JSON or YAML file")
    make.add_argument("file", help="definition file, or - for standard input")
    make.add_argument("--workflow", help="the workflow's id, in place of the file's 'workflow'")
    source.add_parser("list", help="list sources (never their secrets)")
    update = source.add_parser(
        "update", help="change a source (same id and URL): the file's keys replace the source's"
    )
    update.add_argument("id", help="the source's id")
    update.add_argument("file", help="JSON or YAML: any keys of a definition, or - for stdin")
    check = source.add_parser(
        "test", help="show what a delivery would become (mapped task, ignored, or the errors)"
    )
    check.add_argument("id", help="the source's id")
    check.add_argument("payload", help="a delivery's JSON body, or - for standard input")
    dlq = commands.add_parser("dlq", help="dead letters").add_subparsers(
        dest="action", required=True
    )
    dlq.add_parser("list", help="list dead letters (one request each)")
    replay = dlq.add_parser(
        "replay", help="publish the requests of dead letters again (all, or the ids given)"
    )
    replay.add_argument("ids", nargs="*", type=int, help="dead letter ids (default: all)")
    _rejections_parser(commands)
    commands.add_parser(
        "purge", help="purge once what retention no longer keeps (results, dead letters, …)"
    )
    commands.add_parser("settings", help="print the table of settings (INGEST_* variables)")
    return parser


def _rejections_parser(commands: Any) -> None:
    ledger = commands.add_parser("rejections", help="the ledger of rejected requests")
    listing = ledger.add_subparsers(dest="action", required=True).add_parser(
        "list", help="list rejections, newest first (secrets redacted)"
    )
    listing.add_argument("--workflow", help="only this workflow's (its id)")
    listing.add_argument("--source", help="only this source's deliveries (its id)")
    listing.add_argument("--status", type=_argument(rejections.parse_status), help="e.g. 401")
    listing.add_argument(
        "--since", type=_argument(rejections.parse_since), help="ISO 8601, e.g. 2024-01-31T12:00Z"
    )
    listing.add_argument(
        "--limit",
        type=_argument(rejections.parse_limit),
        default=rejections.DEFAULT_LIMIT,
        help=f"at most this many (default {rejections.DEFAULT_LIMIT})",
    )


def _argument(parse: Any) -> Any:
    """An argparse type from a parser that raises ValueError with a message for people."""

    def parsed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parsed


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "settings":
        print(settings_table())
        return
    try:
        settings = _settings()
        _dispatch(args, settings)
    except DefinitionError as exc:
        sys.stderr.write(
            f"invalid {args.command} definition:\n" + "".join(f"  - {p}\n" for p in exc.problems)
        )
        raise SystemExit(2) from None
    except (IngestError, OSError, asyncpg.PostgresError) as exc:
        sys.stderr.write(f"ingest {args.command}: {exc}\n")
        raise SystemExit(1) from None


def _dispatch(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "migrate":
        configure_logging(settings)
        applied = asyncio.run(migrate(settings))
        print(f"database is up to date ({len(applied)} migration(s) applied)")
    elif args.command == "serve":
        from ingest.edge.app import serve

        serve(settings)
    elif args.command == "work":
        # `ingest` never imports `worker`: hand the process over to it instead.
        os.execv(sys.executable, [sys.executable, "-m", "worker"])
    elif args.command == "run":
        from ingest.supervisor import supervise

        configure_logging(settings)
        asyncio.run(migrate(settings))
        run_async(supervise(settings))
    elif args.command == "purge":
        print(asyncio.run(purge(settings)).summary())
    elif args.command == "dlq" and args.action == "list":
        _print_json(asyncio.run(list_dead_letters(settings)))
    elif args.command == "dlq":
        done = asyncio.run(replay_dead_letters(settings, args.ids or None))
        print(f"replayed {done.replayed} dead letter(s)")
        if done.finished:
            print(f"removed {done.finished} dead letter(s) whose requests have finished since")
        if done.unreadable:
            print(f"kept {len(done.unreadable)} unreadable dead letter(s): {done.unreadable}")
    elif args.command == "source":
        _source_command(args, settings)
    elif args.command == "rejections":
        wanted = RejectionFilter(
            args.workflow, args.source, args.status, args.since, limit=args.limit
        )
        _print_json(asyncio.run(list_rejections(settings, wanted)))
    elif args.command == "workflow":
        _workflow_command(args, settings)


def _workflow_command(args: argparse.Namespace, settings: Settings) -> None:
    if args.action == "create":
        _print_json(asyncio.run(create_workflow(settings, args.file)))
    elif args.action == "list":
        _print_json(asyncio.run(list_workflows(settings)))
    elif args.action == "update":
        _print_json(asyncio.run(update_workflow(settings, args.id, args.file, args.if_version)))
    elif args.action == "delete":
        asyncio.run(delete_workflow(settings, args.id))
        print(f"deleted workflow {args.id} with its tasks, results, sources and tokens")
    elif args.action == "token":
        handle = getattr(args, "prefix", "")
        shown = asyncio.run(token_command(settings, args.token_action, args.id, handle))
        print(shown) if isinstance(shown, str) else _print_json(shown)


def _source_command(args: argparse.Namespace, settings: Settings) -> None:
    if args.action == "create":
        _print_json(asyncio.run(create_source(settings, args.file, args.workflow)))
    elif args.action == "list":
        _print_json(asyncio.run(list_sources(settings)))
    elif args.action == "update":
        _print_json(asyncio.run(update_source(settings, args.id, args.file)))
    else:
        path = args.payload
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        mapped, shown = asyncio.run(try_source(settings, args.id, data))
        _print_json(shown)
        if not mapped:
            raise SystemExit(1)
