"""Logging set-up (JSON lines by default) and the event-loop runner shared by every process kind.

Secrets never reach a log line. Nothing logs settings, headers or bodies, and every line passes
through `redact` on its way out (whatever logged it: our code, aiohttp, asyncio), which hides
workflow tokens wherever a path or a raw request line carries them. A line that cannot be encoded
as it stands (undecodable bytes in a path or header) is escaped, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from ingest.settings import Settings

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
_SECRET = re.compile(
    r"(?i)(workflows(?:/|\\|%2f|%5c)(?>(?:[/.\\]|%2f|%2e|%5c)*))[^/?#\s\"'<>\\]{9,}"
    r"|[a-z0-9_-]{40,}"
    r"|[a-z0-9_-]{16,}(?=\.\.\.)"
)
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _hidden(match: re.Match[str]) -> str:
    return f"{match[1]}<token>" if match[1] else "<redacted>"


def redact(text: str) -> str:
    """`text` with every token-shaped string hidden; fit for any log line."""
    return _SECRET.sub(_hidden, text)


def redact_path(path: str) -> str:
    """The path with its workflow token replaced, fit for logs and metrics."""
    return redact(path)


def escape_undecodable(text: str) -> str:
    """`text` with lone surrogates escaped (`\\xff` for the bytes aiohttp could not decode as
    UTF-8, `\\ud800` for any other), so that it can be encoded as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
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

    def _entry(self, record: logging.LogRecord) -> dict[str, Any]:
        entry = self._head(record, redact(record.getMessage()))
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = _each_text(value, redact)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return entry

    def _head(self, record: logging.LogRecord, message: str) -> dict[str, Any]:
        return {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": message,
        }

    def _fallback(self, record: logging.LogRecord, exc: Exception) -> dict[str, Any]:
        message = f"{record.msg!r} (its arguments could not be formatted: {type(exc).__name__})"
        return self._head(record, redact(message))


class RedactingFormatter(logging.Formatter):
    """Plain text lines (for people), with the same redaction as the JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            line = super().format(record)
        except Exception as exc:  # never lose the line to arguments that will not format
            line = f"{record.levelname} {record.name}: {record.msg!r} ({type(exc).__name__})"
        return redact(escape_undecodable(line))


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            RedactingFormatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main)
    else:
        uvloop.run(main)
