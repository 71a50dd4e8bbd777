"""RFC 7240 `Prefer` header: `respond-async` and `wait=N` are the preferences ingest honours."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

#: Longest Prefer header whose reading is remembered: the few values clients send repeatedly,
#: never a cache that a client could fill with large ones.
_REMEMBERED = 64


@dataclass(frozen=True, slots=True)
class Preferences:
    respond_async: bool = False
    wait: float | None = None

    def budget(self, server_budget: float) -> float:
        """Seconds to wait for the result: the shorter of the server's and the client's."""
        if self.respond_async:
            return 0.0
        if self.wait is None:
            return server_budget
        return min(server_budget, self.wait)


_NONE = Preferences()


def parse_prefer(headers: Sequence[str]) -> Preferences:
    """Read every Prefer header; unknown or malformed preferences are ignored, as RFC 7240 asks."""
    if not headers:
        return _NONE
    if len(headers) == 1 and len(headers[0]) <= _REMEMBERED:
        return _parse_remembered(headers[0])
    return _parse(headers)


def _parse(headers: Sequence[str]) -> Preferences:
    respond_async = False
    wait: float | None = None
    for header in headers:
        for item in header.split(","):
            name, _, value = item.split(";", 1)[0].strip().partition("=")
            name = name.strip().lower()
            value = value.strip().strip('"')
            if name == "respond-async":
                respond_async = True
            elif name == "wait" and value.isascii() and value.isdigit() and wait is None:
                wait = float(value)
    return Preferences(respond_async=respond_async, wait=wait)


@functools.lru_cache(maxsize=128)
def _parse_remembered(header: str) -> Preferences:
    return _parse((header,))
