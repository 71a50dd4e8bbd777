"""Logging set-up (JSON lines by default) and the event-loop runner shared by every process kind.

Secrets never reach a log line. Nothing logs settings, headers or bodies, and every line passes
through `redact` on its way out (whatever logged it: our code, aiohttp, asyncio), which hides
workflow tokens wherever a path or a raw request line carries them. A line that cannot be encoded
as it stands (undecodable bytes in a path or header) is escaped, never dropped.

The edge logs every request, so its lines leave the event loop as they are made: a `LogWriter`
queues each record and formats and writes them on a thread of its own, many lines a write (see
`log_writer`), and an access line goes to it as the bare tuple of its fields (`AccessLog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TextIO

import orjson

from ingest.settings import Settings
from ingest.values import has_lone_surrogate

#: What a workflow token looks like wherever it is:
#:
#: 1. the first real segment after `workflows/`, in any case, when it is longer than a workflow's
#:    public id (8 characters): the token slot of every task route, also on paths that miss the
#:    router (`//api/v1/…`, `/API/v1/…`, `/api/v2/…`) and whatever empty, `.` or `..` segments
#:    come between, spelled out or percent-encoded (`/./`, `//`, `%2F`, `%2E%2E/`). The run of
#:    separators is matched atomically, so a long run costs linear time;
#: 2. any run of 40 or more URL-safe characters: tokens are 43 (`secrets.token_urlsafe(32)`), and
#:    nothing else ingest logs is that long unbroken (uuids are 32 hex digits);
#: 3. a run of 16 or more cut short by `...`, as aiohttp quotes the first 100 bytes of an over-long
#:    line: a token's tail must not survive the cut.
#:
#: Runs are only tried from their first character (the lookbehind): the leftmost match starts there
#: anyway, and trying every later start of a short run (a 32-digit request id, say) costs quadratic
#: time, 4x the whole line's formatting.
_SECRET = re.compile(
    r"(?i)(workflows(?:/|\\|%2f|%5c)(?>(?:[/.\\]|%2f|%2e|%5c)*))[^/?#\s\"'<>\\]{9,}"
    r"|(?<![a-z0-9_-])(?:[a-z0-9_-]{40,}|[a-z0-9_-]{16,}(?=\.\.\.))"
)
#: The shortest text `_SECRET` can match (`workflows/` and 9 characters), and the shortest it can
#: match without a separator or a dot (a run of 40).
_SHORTEST_SECRET = 19
_SHORTEST_RUN = 40
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_STARTED = time.time()


def _hidden(match: re.Match[str]) -> str:
    return f"{match[1]}<token>" if match[1] else "<redacted>"


def redact(text: str) -> str:
    """`text` with every token-shaped string hidden; fit for any log line."""
    if len(text) < _SHORTEST_SECRET or (len(text) < _SHORTEST_RUN and text.isalnum()):
        return text  # request ids, workflow ids, outcomes: nothing there can match
    return _SECRET.sub(_hidden, text)


def redact_path(path: str) -> str:
    """The path with its workflow token replaced, fit for logs and metrics."""
    return redact(path)


def escape_undecodable(text: str) -> str:
    """`text` with lone surrogates escaped (`\\xff` for the bytes aiohttp could not decode as
    UTF-8, `\\ud800` for any other), so that it can be encoded as UTF-8."""
    if not has_lone_surrogate(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _each_text(value: Any, change: Callable[[str], str]) -> Any:
    """A log field with `change` applied to its text, containers walked."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {str(key): _each_text(item, change) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_each_text(item, change) for item in value]
    return value


def _as_text(value: Any) -> str:
    """What orjson cannot encode itself goes in as its (redacted) text."""
    return redact(escape_undecodable(str(value)))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra=` fields.

    A line is never lost: text that is not UTF-8 is escaped, and a record that cannot be formatted
    at all is still written, with its format string."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            entry = self._entry(record)
            try:
                return orjson.dumps(entry, default=_as_text).decode()
            except orjson.JSONEncodeError:  # lone surrogates: bytes that were not UTF-8
                return orjson.dumps(
                    _each_text(entry, escape_undecodable), default=_as_text
                ).decode()
        except Exception as exc:
            return orjson.dumps(
                _each_text(self._fallback(record, exc), escape_undecodable)
            ).decode()

    def access_line(self, fields: AccessFields) -> str:
        """The line `format` makes of an `AccessRecord` with these fields, without making it."""
        name, pid, created, method, path, status, request_id, duration, workflow, outcome = fields
        entry = {
            "ts": f"{_utc_second(int(created))}.{int((created - int(created)) * 1000):03d}Z",
            "level": "INFO",
            "logger": name,
            "pid": pid,
            "msg": redact(f"{method} {path} {status}"),
            "request_id": redact(request_id),
            "status": status,
            "duration_ms": duration,
            "workflow": None if workflow is None else redact(workflow),
            "outcome": None if outcome is None else redact(outcome),
        }
        try:
            return orjson.dumps(entry).decode()
        except orjson.JSONEncodeError:  # lone surrogates: the record's way escapes them
            return self.format(AccessRecord(fields))

    def _entry(self, record: logging.LogRecord) -> dict[str, Any]:
        entry = self._head(record, redact(record.getMessage()))
        fields = vars(record)
        for key in _extra_fields(tuple(fields)):
            entry[key] = _each_text(fields[key], redact)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return entry

    def _head(self, record: logging.LogRecord, message: str) -> dict[str, Any]:
        return {
            "ts": f"{_utc_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": message,
        }

    def _fallback(self, record: logging.LogRecord, exc: Exception) -> dict[str, Any]:
        message = f"{record.msg!r} (its arguments could not be formatted: {type(exc).__name__})"
        return self._head(record, redact(message))


@functools.lru_cache(maxsize=256)
def _extra_fields(names: tuple[str, ...]) -> tuple[str, ...]:
    """The `extra=` fields among a record's attributes (records of one call site share them)."""
    return tuple(name for name in names if name not in _STANDARD and not name.startswith("_"))


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    """`2026-01-31T09:30:00`: lines of the same second share it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class RedactingFormatter(logging.Formatter):
    """Plain text lines (for people), with the same redaction as the JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            line = super().format(record)
        except Exception as exc:  # never lose the line to arguments that will not format
            line = f"{record.levelname} {record.name}: {record.msg!r} ({type(exc).__name__})"
        return redact(escape_undecodable(line))


def _formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter()
    return RedactingFormatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")


def configure_logging(settings: Settings, handler: logging.Handler | None = None) -> None:
    """Every logger writes through `handler` (by default, straight to standard error)."""
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_formatter(settings))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)


#: Records a `LogWriter` holds before it drops new ones: a few seconds of a busy edge's access log,
#: a few MB. A bounded queue never blocks the event loop nor grows without bound when the stream
#: cannot keep up (a full disk, a slow pipe); what is dropped is counted and reported in the log.
QUEUE_LIMIT = 10_000
#: Lines written in one call at most.
_BATCH = 1_000
#: Seconds the writer lets records gather before a write that would carry few: a busy process
#: then writes (and the writer thread takes the interpreter lock) a few dozen times a second.
_LINGER = 0.05
#: Seconds `LogWriter.close` waits for the queued lines to be written.
_CLOSE_TIMEOUT = 10.0
_STOP = None


class LogWriter(logging.Handler):
    """A handler that queues records and formats and writes them on its own thread, many lines a
    write.

    Whoever logs only puts the record on a queue (no lock, no formatting, no system call); an
    access line puts only the tuple of its fields (`AccessLog`). The thread formats what it finds
    (redaction included) and writes it in batches. Records are formatted
    after the call that logged them: their arguments must not change afterwards, which holds for
    what ingest logs (text, numbers, exceptions). `close` writes every queued line; what comes
    after it is written at once, on the caller's thread.
    """

    def __init__(self, stream: TextIO, formatter: logging.Formatter, limit: int = QUEUE_LIMIT):
        super().__init__()
        self.setFormatter(formatter)
        self._stream = stream
        self._limit = limit
        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_forever, name="log-writer", daemon=True)
        self._closed = False
        #: Records dropped because the queue was full or the stream failed, and how many of those
        #: the log has been told about.
        self.dropped = 0
        self._reported = 0

    def start(self) -> None:
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:
        """Queue `record` (without the handler's lock: the queue is thread-safe)."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.put(record)

    def put(self, item: logging.LogRecord | AccessFields) -> None:
        """Queue a record, or the fields of an access line, to be formatted and written."""
        if self._closed:
            self._write([item])
        elif self._queue.qsize() >= self._limit:
            self.dropped += 1
        else:
            self._queue.put(item)

    def close(self) -> None:
        """Write every queued line and stop the thread (also run by `logging.shutdown` at exit)."""
        if not self._closed:
            self._closed = True
            if self._thread.is_alive():
                self._queue.put(_STOP)
                self._thread.join(_CLOSE_TIMEOUT)
            else:  # never started, or died: write what is queued here
                self._write_queued()
        super().close()

    def _write_forever(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0] is not _STOP and self._queue.qsize() < _BATCH:
                time.sleep(_LINGER)
            while len(batch) < _BATCH and batch[-1] is not _STOP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)
            if batch[-1] is _STOP:
                return

    def _write_queued(self) -> None:
        batch: list[_Queued] = []
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self._queue.get_nowait())
        self._write(batch)

    def _write(self, batch: list[_Queued]) -> None:
        lines = [self._line(item) for item in batch if item is not _STOP]
        if self.dropped > self._reported:
            lines.append(self.format(self._dropped_record()))
        if not lines:
            return
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # a closed or failing stream: nowhere left to say so
            self.dropped += len(lines)

    def _line(self, item: logging.LogRecord | AccessFields) -> str:
        if isinstance(item, logging.LogRecord):
            return self.format(item)
        if isinstance(self.formatter, JsonFormatter):
            return self.formatter.access_line(item)
        return self.format(AccessRecord(item))

    def _dropped_record(self) -> logging.LogRecord:
        missed, self._reported = self.dropped - self._reported, self.dropped
        return logging.LogRecord(
            __name__,
            logging.WARNING,
            __file__,
            0,
            "dropped %d log lines: they came faster than the log could be written",
            (missed,),
            None,
        )


@contextlib.contextmanager
def log_writer(settings: Settings, stream: TextIO | None = None) -> Iterator[LogWriter]:
    """Log through a `LogWriter` for the duration; on the way out, however it is left, every queued
    line is written and logging writes directly again."""
    writer = LogWriter(stream or sys.stderr, _formatter(settings))
    writer.start()
    configure_logging(settings, writer)
    try:
        yield writer
    finally:
        direct = logging.StreamHandler(stream or sys.stderr)
        direct.setFormatter(_formatter(settings))
        configure_logging(settings, direct)
        writer.close()


#: What a record made without `Logger.makeRecord` still carries, for formatters that read the
#: record's attributes (`%(filename)s`): blank, as the stdlib leaves what it is told not to collect.
_BLANK_RECORD: dict[str, Any] = {
    **{key: None for key in vars(logging.makeLogRecord({}))},
    **{"pathname": "", "filename": "", "module": "", "funcName": "", "lineno": 0},
}


#: An access line's fields, as `AccessLog` hands them to a `LogWriter`: logger name, pid, time,
#: method, path, status, request id, duration in ms, workflow, outcome.
AccessFields = tuple[str, int, float, str, str, int, str, float, str | None, str | None]
_Queued = logging.LogRecord | AccessFields | None


class AccessRecord(logging.LogRecord):
    """An access line: `METHOD path status` and the request's fields, built in a few attribute
    writes. `Logger.info` would look up its caller's frame, thread and process names for each
    request; an access line carries none of them."""

    def __init__(self, fields: AccessFields) -> None:
        name, pid, created, method, path, status, request_id, duration, workflow, outcome = fields
        self.__dict__.update(_BLANK_RECORD)
        self.name = name
        self.msg = "%s %s %d"
        self.args = (method, path, status)
        self.levelname = "INFO"
        self.levelno = logging.INFO
        self.created = created
        self.msecs = (created - int(created)) * 1000
        self.relativeCreated = (created - _STARTED) * 1000
        self.process = pid
        self.request_id = request_id
        self.status = status
        self.duration_ms = duration
        self.workflow = workflow
        self.outcome = outcome


class AccessLog:
    """One INFO line per HTTP request on the `ingest.access` logger.

    With a `LogWriter` (the edge's, see `log_writer`), a line costs the request a tuple on the
    writer's queue; the writer's thread formats and writes it. Without one
    (an app in a test), the record goes through the logger as any other. The path goes in as it
    came: the formatters redact every line, so its token is hidden off the event loop too."""

    def __init__(self, writer: LogWriter | None = None, name: str = "ingest.access") -> None:
        self._writer = writer
        self._logger = logging.getLogger(name)
        self._pid = os.getpid()

    def __call__(
        self,
        method: str,
        path: str,
        status: int,
        request_id: str,
        duration_ms: float,
        workflow: str | None,
        outcome: str | None,
    ) -> None:
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        fields = (
            logger.name,
            self._pid,
            time.time(),
            method,
            path,
            status,
            request_id,
            duration_ms,
            workflow,
            outcome,
        )
        if self._writer is not None:
            self._writer.put(fields)
        else:
            logger.handle(AccessRecord(fields))


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main)
    else:
        uvloop.run(main)
