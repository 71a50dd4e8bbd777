"""The ledger's rows, made without a database: redaction, causes, filters."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from ingest.rejections import (
    BODY_LIMIT,
    MAX_SHOWN_VALUE_CHARS,
    REDACTED,
    Refused,
    Rejection,
    cause,
    parse_limit,
    parse_since,
    parse_status,
    row_of,
    sort_headers,
)


def test_credentials_are_redacted_and_kept_nowhere() -> None:
    shown, kept = sort_headers(
        [
            ("Authorization", "Bearer s1"),
            ("Proxy-Authorization", "Basic s2"),
            ("Cookie", "a=s3"),
            ("X-Api-Key", "s4"),
            ("X-Auth-Token", "s5"),
            ("X-Trace", "kept"),
        ]
    )
    assert shown == {
        "authorization": REDACTED,
        "proxy-authorization": REDACTED,
        "cookie": REDACTED,
        "x-api-key": REDACTED,
        "x-auth-token": REDACTED,
        "x-trace": "kept",
    }
    assert kept == {}


def test_credentials_a_proxy_copied_or_a_header_name_suggests_are_redacted() -> None:
    token = "T0ken-of-the-workflow_43-characters-long-abc"
    shown, _ = sort_headers(
        [
            ("Referer", f"https://example.com/api/v1/workflows/{token}/tasks"),
            ("X-Original-URI", f"/api/v1/workflows/{token}/tasks"),
            ("X-Envoy-Original-Path", f"/api/v1/workflows/{token}/tasks?a=1"),
            ("X-Database", "postgres://user:hunter2@db.example.com/app"),
            ("X-Session-Id", "s1"),
            ("X-Csrf", "s2"),
            ("X-Jwt", "s3"),
            ("X-Credentials", "s4"),
            ("X-Pass", "s5"),
            ("Idempotency-Key", "shown"),
        ],
        path_secrets=(token,),
    )
    assert token not in repr(shown)
    assert "hunter2" not in repr(shown)
    assert shown["referer"] == f"https://example.com/api/v1/workflows/{REDACTED}/tasks"
    assert shown["x-database"] == f"postgres://user:{REDACTED}@db.example.com/app"
    for name in ("x-session-id", "x-csrf", "x-jwt", "x-credentials", "x-pass"):
        assert shown[name] == REDACTED
    assert shown["idempotency-key"] == "shown"


def test_signatures_of_every_scheme_are_redacted_and_kept_for_a_replay() -> None:
    signatures = {
        "X-Hub-Signature-256": "sha256=ab",
        "Stripe-Signature": "t=1,v1=ab",
        "X-Shopify-Hmac-Sha256": "q83=",
        "X-Slack-Signature": "v0=ab",
        "webhook-signature": "v1,q83=",
        "X-Custom-Mac": "abcd",  # the header a source's `hmac` scheme was told to read
    }
    shown, kept = sort_headers(
        [*signatures.items(), ("X-GitHub-Delivery", "d-1")], signature_headers=("x-custom-mac",)
    )
    assert kept == {name.lower(): value for name, value in signatures.items()}
    assert {name: shown[name] for name in kept} == dict.fromkeys(kept, REDACTED)
    assert shown["x-github-delivery"] == "d-1"


def test_headers_are_made_fit_to_store_and_bounded() -> None:
    shown, _ = sort_headers(
        [
            ("X-A", "one"),
            ("x-a", "two"),
            ("X-Bytes", "caf\udcc3"),
            ("X-Nul", "a\x00b"),
            ("X-Long", "y" * 5000),
        ]
    )
    assert shown["x-a"] == "one, two"
    assert shown["x-bytes"] == "caf\\xc3"
    assert shown["x-nul"] == "a\\x00b"
    assert len(shown["x-long"]) == MAX_SHOWN_VALUE_CHARS + 1
    orjson.dumps(shown)  # encodes: no lone surrogates left


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            b'{"error": "mapping_failed", "message": "map[x] fails"}',
            ("mapping_failed", "map[x] fails"),
        ),
        (
            b'{"errors": {"Stage": ["is not included in the list"], "base": ["x"]}}',
            ("invalid_task", "Stage: is not included in the list; base: x"),
        ),
        (b"not json", ("http_418", None)),
        (None, ("http_418", None)),
        (b'{"error": 7}', ("http_418", None)),
    ],
)
def test_the_cause_is_read_from_the_answer(
    answer: bytes | None, expected: tuple[str, str | None]
) -> None:
    assert cause(418, answer) == expected


def _refused(**overrides: object) -> Refused:
    given: dict[str, object] = {
        "at": 1_700_000_000.0,
        "route": "POST /api/v1/hooks/{source_id}",
        "status": 401,
        "answer": b'{"error": "invalid_signature", "message": "no secret matches"}',
        "headers": [("X-Hub-Signature-256", "sha256=ab"), ("Authorization", "x")],
        "body": b"{}",
        "body_size": 2,
        "workflow": "w1",
        "source_id": 7,
    }
    return Refused(**{**given, **overrides})  # type: ignore[arg-type]


def test_a_row_keeps_signatures_only_for_hook_deliveries() -> None:
    row = row_of(_refused())
    assert (row.error, row.message) == ("invalid_signature", "no secret matches")
    assert row.at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert row.signed_headers == {"x-hub-signature-256": "sha256=ab"}
    assert row.headers == {"x-hub-signature-256": REDACTED, "authorization": REDACTED}
    task_write = row_of(_refused(route="POST /api/v1/workflows/{token}/tasks", source_id=None))
    assert task_write.signed_headers is None


def test_a_row_and_its_document_say_how_many_were_left_out_before_it() -> None:
    row = row_of(_refused(unrecorded_before=41))
    assert row.unrecorded_before == 41
    assert row_of(_refused()).unrecorded_before == 0
    rejection = Rejection(
        1, datetime.now(UTC), "r", None, None, 429, "e", None, {}, None, None, None, False, 41
    )
    assert rejection.document()["unrecorded_before"] == 41


def test_a_document_says_when_the_body_was_cut() -> None:
    def shown(body: bytes | None, size: int | None) -> tuple[object, object]:
        rejection = Rejection(
            1, datetime.now(UTC), "r", None, None, 400, "e", None, {}, body, size, None, False
        )
        document = rejection.document()
        return document["body"], document["body_truncated"]

    assert shown(b"x" * BODY_LIMIT, BODY_LIMIT + 1) == ("x" * BODY_LIMIT, True)
    assert shown(b"{}", 2) == ("{}", False)
    assert shown(None, None) == (None, False)
    assert shown(b"\xff", 1) == ("\ufffd", False)


def test_filters_are_parsed_or_refused_with_a_reason() -> None:
    assert parse_status("401") == 401
    assert parse_limit("1000") == 1000
    assert parse_since("2024-01-31") == datetime(2024, 1, 31, tzinfo=UTC)
    assert parse_since("2024-01-31T12:00:00+02:00") == datetime(2024, 1, 31, 10, tzinfo=UTC)
    for bad in ("200", "4O1", "١٠٠", "+401", "4011"):
        with pytest.raises(ValueError, match="4xx"):
            parse_status(bad)
    for bad in ("0", "1001", "²", "-1"):
        with pytest.raises(ValueError, match="limit"):
            parse_limit(bad)
    for bad in ("yesterday", "0001-01-01T00:00:00+14:00", "２０２４-01-01", ""):
        with pytest.raises(ValueError, match="ISO 8601"):
            parse_since(bad)


def test_a_flood_of_signature_headers_keeps_only_a_few() -> None:
    shown, kept = sort_headers([(f"X-Signature-{n}", "s" * 100) for n in range(100)])
    assert len(kept) == 16
    assert len(shown) == 100
    assert set(shown.values()) == {REDACTED}
