"""Signatures of webhook deliveries (SPEC §6): did the source's sender send this, is it fresh, and
which delivery is it.

A `Verification` is the `verify` part of a source definition. `verify` checks one delivery against
it and answers `Verified` (the sender's delivery id; the answer to a handshake), or raises
`InvalidSignature` with a message naming what is wrong: for any headers and body whatever, never
another exception.

The order is fixed: the headers are parsed, the signature is checked, then the timestamp's
freshness, and only then is anything parsed from the body, so an unsigned body never is.
Freshness comes after the signature so that "stale" and "in the future" are said only of
deliveries the sender really signed.

Standard Webhooks signatures are computed by the `standardwebhooks` library, the spec's reference
implementation (how a `whsec_` secret becomes a key, what exactly is signed). Its `verify` is not
used: its tolerance is five minutes of the wall clock, fixed; it takes one secret; and some
malformed headers escape it as `ValueError` or `binascii.Error`. So the headers, the tolerance,
rotation and the comparison are done here, as for every other scheme.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from standardwebhooks import Webhook

from ingest.errors import InvalidSignature, MalformedBody
from ingest.messages import parse_exactly
from ingest.values import has_lone_surrogate

Scheme = Literal["standard-webhooks", "github", "stripe", "shopify", "slack", "hmac", "none"]
#: The schemes whose signature covers a timestamp, so that `tolerance` applies to them.
TIMESTAMPED: frozenset[Scheme] = frozenset({"standard-webhooks", "stripe", "slack"})
DEFAULT_TOLERANCE = 300
#: A signature accepted a day after it was made is a replay window nobody needs.
MAX_TOLERANCE = 86_400
#: Rotation needs two; every secret costs one HMAC of the body per delivery.
MAX_SECRETS = 10
MAX_SECRET_CHARS = 1_000
MAX_HEADER_NAME_CHARS = 100
MAX_PREFIX_CHARS = 64
#: The longest header value read at all (aiohttp's own line limit is 8,190 bytes).
MAX_HEADER_CHARS = 8_192
#: Delivery ids serve as Idempotency-Keys, which are 1 to 255 printable ASCII characters.
MAX_DELIVERY_ID_CHARS = 255
MAX_CHALLENGE_CHARS = 1_000
STANDARD_SECRET_PREFIX = "whsec_"
#: The options only scheme "hmac" takes, with their defaults (others must leave them so).
_HMAC_ONLY: dict[str, object] = {
    "header": None,
    "algorithm": "sha256",
    "encoding": "hex",
    "prefix": "",
    "delivery_id_header": None,
}
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110's token
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
#: Whole seconds, canonical (the Standard Webhooks library signs the number, not the text), and
#: at most 11 digits, so that any of them is a date Python can represent.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,10}")


class Verification(BaseModel):
    """How a source's deliveries are verified: the `verify` of a source definition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: Scheme
    secrets: tuple[str, ...] = Field(
        default=(),
        max_length=MAX_SECRETS,
        repr=False,
        description="One or more (any one verifying is enough: rotation); none for 'none'.",
    )
    tolerance: int = Field(
        default=DEFAULT_TOLERANCE,
        ge=1,
        le=MAX_TOLERANCE,
        description="Seconds a timestamped signature stays valid, either way of our clock.",
    )
    header: str | None = Field(
        default=None,
        max_length=MAX_HEADER_NAME_CHARS,
        description="hmac only (required): the header that carries the signature.",
    )
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(
        default="",
        max_length=MAX_PREFIX_CHARS,
        description="hmac only: what precedes the signature in its header, e.g. 'sha256='.",
    )
    delivery_id_header: str | None = Field(
        default=None,
        max_length=MAX_HEADER_NAME_CHARS,
        description="hmac only: the header that carries the sender's delivery id.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = [*_secret_problems(self), *_option_problems(self)]
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True, slots=True)
class Verified:
    """What a delivery that verified says about itself."""

    #: The sender's id of this delivery, the same on its retries (None: the sender gives none).
    delivery_id: str | None
    #: Not None: the delivery is a handshake; answer 200 with this JSON and write nothing.
    handshake: dict[str, Any] | None = None


def verify(
    verification: Verification, headers: Mapping[str, str], body: bytes, now: float
) -> Verified:
    """Check one delivery: `headers` keyed by lower-case names, `body` as received, `now` in
    seconds since the epoch. Raises `InvalidSignature` saying what is wrong, and nothing else."""
    return _VERIFIERS[verification.scheme](verification, _Delivery(headers, body, now))


# Definitions. Problems never quote a secret: they are shown to whoever sent the definition, and
# logged.


def _secret_problems(verification: Verification) -> list[str]:
    scheme, secrets = verification.scheme, verification.secrets
    if scheme == "none":
        return ["scheme 'none' checks nothing, so it takes no secrets"] if secrets else []
    if not secrets:
        return [f"scheme {scheme!r} needs at least one secret"]
    found = (_secret_problem(scheme, secret, number) for number, secret in enumerate(secrets, 1))
    return [problem for problem in found if problem]


def _secret_problem(scheme: Scheme, secret: str, number: int) -> str | None:
    if not 1 <= len(secret) <= MAX_SECRET_CHARS:
        return f"secret {number} must be 1 to {MAX_SECRET_CHARS} characters"
    if has_lone_surrogate(secret):
        return f"secret {number} is not valid Unicode text (a lone surrogate)"
    if scheme == "standard-webhooks" and not _standard_key(secret):
        return f"secret {number} is not a Standard Webhooks secret: 'whsec_' and then base64"
    return None


def _standard_key(secret: str) -> bytes | None:
    """The HMAC key of a `whsec_<base64>` secret, None when it is not one (or is empty)."""
    if not secret.startswith(STANDARD_SECRET_PREFIX):
        return None
    return _base64(secret.removeprefix(STANDARD_SECRET_PREFIX))


def _option_problems(verification: Verification) -> list[str]:
    scheme = verification.scheme
    if scheme == "hmac":
        problems = _hmac_problems(verification)
    else:
        stray = [
            name for name, default in _HMAC_ONLY.items() if getattr(verification, name) != default
        ]
        problems = [f"{', '.join(stray)}: only scheme 'hmac' takes these"] if stray else []
    if scheme not in TIMESTAMPED and verification.tolerance != DEFAULT_TOLERANCE:
        problems.append(f"scheme {scheme!r} signs no timestamp, so 'tolerance' does not apply")
    return problems


def _hmac_problems(verification: Verification) -> list[str]:
    problems = []
    if verification.header is None:
        problems.append("scheme 'hmac' needs 'header': the header that carries the signature")
    for option in ("header", "delivery_id_header"):
        name = getattr(verification, option)
        if name is not None and not _HEADER_NAME.fullmatch(name):
            problems.append(f"{option} {name!r} is not a header name")
    if not _is_printable_ascii(verification.prefix):
        problems.append("prefix must be printable ASCII")
    return problems


# The schemes. Each reads its headers, checks the signature, then freshness, then the body.


@dataclass(frozen=True, slots=True)
class _Delivery:
    headers: Mapping[str, str]
    body: bytes
    now: float

    def header(self, name: str) -> str | None:
        """Header `name` (spelled as senders do; looked up in lower case), None when absent."""
        value = self.headers.get(name.lower())
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > MAX_HEADER_CHARS:
            raise InvalidSignature(
                f"the {name} header is malformed: over {MAX_HEADER_CHARS} characters"
            )
        if not _is_printable_ascii(value):
            raise InvalidSignature(f"the {name} header is malformed: not printable ASCII")
        return value.strip()

    def required(self, name: str) -> str:
        value = self.header(name)
        if not value:
            raise InvalidSignature(f"the {name} header is missing or empty")
        return value


_Verifier = Callable[[Verification, _Delivery], Verified]


def _standard_webhooks(verification: Verification, delivery: _Delivery) -> Verified:
    message_id = _delivery_id(delivery.required("webhook-id"), "the webhook-id header")
    timestamp = _timestamp(delivery.required("webhook-timestamp"), "webhook-timestamp")
    offered = _standard_signatures(delivery.required("webhook-signature"))
    digest = _standard_digest(message_id, timestamp, _text(delivery.body))
    _check_signature(verification, offered, "webhook-signature", digest)
    _check_fresh(timestamp, delivery.now, verification.tolerance)
    return Verified(message_id)


def _github(verification: Verification, delivery: _Delivery) -> Verified:
    name = "X-Hub-Signature-256"
    offered = _prefixed(delivery.required(name), "sha256=", "hex", name)
    _check_signature(verification, [offered], name, _keyed(delivery.body))
    delivery_id = _header_delivery_id(delivery, "X-GitHub-Delivery")
    if delivery.header("X-GitHub-Event") == "ping":
        return Verified(delivery_id, {"status": "pong"})
    return Verified(delivery_id)


def _stripe(verification: Verification, delivery: _Delivery) -> Verified:
    stamp, offered = _stripe_signatures(delivery.required("Stripe-Signature"))
    timestamp = _timestamp(stamp, "Stripe-Signature")
    _check_signature(
        verification, offered, "Stripe-Signature", _keyed(f"{stamp}.".encode() + delivery.body)
    )
    _check_fresh(timestamp, delivery.now, verification.tolerance)
    event = _json_object(delivery.body)
    if event is None:
        raise InvalidSignature("a Stripe delivery's body must be a JSON object (a Stripe event)")
    return Verified(_body_delivery_id(event, "id"))


def _shopify(verification: Verification, delivery: _Delivery) -> Verified:
    name = "X-Shopify-Hmac-Sha256"
    offered = _prefixed(delivery.required(name), "", "base64", name)
    _check_signature(verification, [offered], name, _keyed(delivery.body))
    return Verified(_header_delivery_id(delivery, "X-Shopify-Webhook-Id"))


def _slack(verification: Verification, delivery: _Delivery) -> Verified:
    name = "X-Slack-Signature"
    offered = _prefixed(delivery.required(name), "v0=", "hex", name)
    stamp = delivery.required("X-Slack-Request-Timestamp")
    timestamp = _timestamp(stamp, "X-Slack-Request-Timestamp")
    _check_signature(verification, [offered], name, _keyed(f"v0:{stamp}:".encode() + delivery.body))
    _check_fresh(timestamp, delivery.now, verification.tolerance)
    # Slash commands and interactivity come form-encoded, with no event id: those give none.
    event = _json_object(delivery.body)
    if event is None:
        return Verified(None)
    if event.get("type") == "url_verification":
        return Verified(None, {"challenge": _challenge(event)})
    return Verified(_body_delivery_id(event, "event_id"))


def _hmac(verification: Verification, delivery: _Delivery) -> Verified:
    name = verification.header or ""  # validated: scheme "hmac" always has one
    offered = _prefixed(delivery.required(name), verification.prefix, verification.encoding, name)
    _check_signature(verification, [offered], name, _keyed(delivery.body, verification.algorithm))
    if verification.delivery_id_header is None:
        return Verified(None)
    return Verified(_header_delivery_id(delivery, verification.delivery_id_header))


def _none(verification: Verification, delivery: _Delivery) -> Verified:
    return Verified(None)


_VERIFIERS: dict[Scheme, _Verifier] = {
    "standard-webhooks": _standard_webhooks,
    "github": _github,
    "stripe": _stripe,
    "shopify": _shopify,
    "slack": _slack,
    "hmac": _hmac,
    "none": _none,
}


# Signatures.


def _check_signature(
    verification: Verification,
    offered: Sequence[bytes],
    header: str,
    digest: Callable[[str], bytes],
) -> None:
    """Pass when one secret's digest equals one offered signature (any will do: rotation), each
    compared in constant time."""
    for secret in verification.secrets:
        expected = digest(secret)
        if any(hmac.compare_digest(expected, signature) for signature in offered):
            return
    raise InvalidSignature(f"the signature in {header} matches none of this source's secrets")


def _keyed(message: bytes, algorithm: str = "sha256") -> Callable[[str], bytes]:
    """The digest of `message` under a secret whose UTF-8 bytes are the key (Stripe's `whsec_`
    included: Stripe keys with the whole string)."""
    return lambda secret: hmac.new(secret.encode(), message, algorithm).digest()


def _standard_digest(message_id: str, timestamp: int, text: str) -> Callable[[str], bytes]:
    """The digest the Standard Webhooks library makes of `id.timestamp.body`."""
    signed_at = datetime.fromtimestamp(timestamp, UTC)

    def digest(secret: str) -> bytes:
        versioned = Webhook(secret).sign(message_id, signed_at, text)  # "v1,<base64>"
        return base64.b64decode(versioned.partition(",")[2])

    return digest


def _standard_signatures(text: str) -> list[bytes]:
    """The `v1,<base64>` signatures of a webhook-signature header; others (`v1a,` is asymmetric)
    are skipped, as the spec asks of versions a verifier does not know."""
    offered = []
    for entry in text.split():
        version, _, encoded = entry.partition(",")
        if version == "v1" and (signature := _base64(encoded)) is not None:
            offered.append(signature)
    if not offered:
        raise InvalidSignature("the webhook-signature header holds no v1,<base64> signature")
    return offered


def _stripe_signatures(text: str) -> tuple[str, list[bytes]]:
    """The timestamp and the v1 signatures of a Stripe-Signature header (v0 and others skipped)."""
    stamps, offered = [], []
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            stamps.append(value)
        elif key == "v1" and _HEX.fullmatch(value):
            offered.append(bytes.fromhex(value))
    if len(stamps) != 1 or not offered:
        raise InvalidSignature(
            "the Stripe-Signature header is malformed: expected t=<timestamp>,v1=<hex signature>"
        )
    return stamps[0], offered


def _prefixed(text: str, prefix: str, encoding: str, header: str) -> bytes:
    """The signature that follows `prefix` in a header, decoded."""
    signature = _decoded(text.removeprefix(prefix), encoding) if text.startswith(prefix) else None
    if signature is None:
        raise InvalidSignature(
            f"the {header} header is malformed: expected {prefix}<{encoding} signature>"
        )
    return signature


def _decoded(text: str, encoding: str) -> bytes | None:
    if encoding == "base64":
        return _base64(text)
    return bytes.fromhex(text) if _HEX.fullmatch(text) else None


def _base64(text: str) -> bytes | None:
    """Standard base64, padded or not; None when it is not (or is empty)."""
    if not _BASE64.fullmatch(text):
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True) or None
    except binascii.Error:
        return None


# Timestamps.


def _timestamp(text: str, header: str) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise InvalidSignature(
            f"the timestamp in {header} is malformed: expected whole seconds since 1970"
        )
    return int(text)


def _check_fresh(timestamp: int, now: float, tolerance: int) -> None:
    age = now - timestamp
    if age > tolerance:
        raise InvalidSignature(
            f"stale delivery: signed {math.ceil(age)} seconds ago, more than the tolerance of "
            f"{tolerance} seconds"
        )
    if -age > tolerance:
        raise InvalidSignature(
            f"the delivery's timestamp is {math.ceil(-age)} seconds in the future, more than the "
            f"tolerance of {tolerance} seconds"
        )


# Headers, bodies, delivery ids.


def _header_delivery_id(delivery: _Delivery, name: str) -> str | None:
    value = delivery.header(name)
    return _delivery_id(value, f"the {name} header") if value else None


def _body_delivery_id(event: dict[str, Any], key: str) -> str | None:
    value = event.get(key)
    return None if value is None else _delivery_id(value, f'the body\'s "{key}"')


def _delivery_id(value: object, where: str) -> str:
    """A delivery id that can serve as an Idempotency-Key; anything else is refused rather than
    dropped, since dropping it would apply a sender's retries twice."""
    text = value if isinstance(value, str) else ""
    if 0 < len(text) <= MAX_DELIVERY_ID_CHARS and _is_printable_ascii(text):
        return text
    raise InvalidSignature(
        f"{where} is not a delivery id: it must be a string of 1 to {MAX_DELIVERY_ID_CHARS} "
        "printable ASCII characters"
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object; None when it is not one."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        # What orjson refuses may still be JSON the edge takes (`1e400`, 20-digit integers):
        # read it as the edge does, so such an event keeps its id and its handshake.
        try:
            document = parse_exactly(body.decode("utf-8"))
        except (UnicodeDecodeError, MalformedBody):
            return None
    return document if isinstance(document, dict) else None


def _challenge(event: dict[str, Any]) -> str:
    challenge = event.get("challenge")
    if not isinstance(challenge, str) or not 1 <= len(challenge) <= MAX_CHALLENGE_CHARS:
        raise InvalidSignature(
            f"a url_verification must carry a 'challenge' of 1 to {MAX_CHALLENGE_CHARS} characters"
        )
    return challenge


def _text(body: bytes) -> str:
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise InvalidSignature(
            "the body is not UTF-8 text, which a Standard Webhooks payload must be"
        ) from None


def _is_printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()
