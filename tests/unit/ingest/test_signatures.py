"""Verification of webhook deliveries (`ingest.signatures`): the providers' published vectors, and
for every scheme a valid delivery, a flipped byte, a wrong secret, a missing or malformed header,
stale and future timestamps, rotation, handshakes; and any input whatever ends in `Verified` or
`InvalidSignature`, never another exception."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from ingest.errors import InvalidSignature
from ingest.signatures import (
    MAX_DELIVERY_ID_CHARS,
    MAX_SECRETS,
    Verification,
    Verified,
    verify,
)
from tests.signing import (
    github_headers,
    hmac_headers,
    lowered,
    shopify_headers,
    sign,
    slack_headers,
    standard_webhooks_headers,
    stripe_headers,
)

NOW = 1_700_000_000
BODY = b'{"id": "evt_1", "event_id": "Ev1", "action": "opened", "issue": {"id": 7}}'
OLD_STANDARD, NEW_STANDARD = (
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_c2Vjb25kIHNlY3JldCBmb3Igcm90YXRpb24=",
)
OLD, NEW = "old secret", "new secret"


# The providers' published vectors.

# docs.github.com, "Validating webhook deliveries": the documented secret, payload and signature.
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# The Standard Webhooks libraries' own vector: standard-webhooks/standard-webhooks,
# libraries/python/tests/test_webhooks.py (test_sign_function) and libraries/go/webhook_test.go
# (TestWebhookSign) agree on it; the "invalid" one is test_invalid_signature_raises_error's.
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STANDARD_TIMESTAMP = 1614265330
STANDARD_PAYLOAD = b'{"test": 2432232314}'
STANDARD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
STANDARD_INVALID_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="

# docs.slack.dev (api.slack.com), "Verifying requests from Slack": the worked example, a
# form-encoded slash command.
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TIMESTAMP = 1531420618
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
# Stripe and Shopify publish no fixed vector (Stripe's own SDK tests sign at test time); their
# signing in tests/signing.py follows their documentation and is checked by the cases below.


def test_githubs_documented_example_verifies() -> None:
    verification = Verification(scheme="github", secrets=(GITHUB_SECRET,))
    headers = {"x-hub-signature-256": GITHUB_SIGNATURE, "x-github-delivery": "d-1"}
    assert verify(verification, headers, GITHUB_PAYLOAD, NOW) == Verified("d-1", None)
    assert github_headers(GITHUB_SECRET, GITHUB_PAYLOAD, "d-1")["X-Hub-Signature-256"] == (
        GITHUB_SIGNATURE
    )


def test_the_standard_webhooks_vector_verifies_and_its_altered_twin_does_not() -> None:
    verification = Verification(scheme="standard-webhooks", secrets=(STANDARD_SECRET,))
    headers = {
        "webhook-id": STANDARD_ID,
        "webhook-timestamp": str(STANDARD_TIMESTAMP),
        "webhook-signature": STANDARD_SIGNATURE,
    }
    verified = verify(verification, headers, STANDARD_PAYLOAD, STANDARD_TIMESTAMP + 1)
    assert verified == Verified(STANDARD_ID, None)
    signed = standard_webhooks_headers(
        STANDARD_SECRET, STANDARD_PAYLOAD, STANDARD_ID, STANDARD_TIMESTAMP
    )
    assert signed["webhook-signature"] == STANDARD_SIGNATURE
    altered = {**headers, "webhook-signature": STANDARD_INVALID_SIGNATURE}
    with pytest.raises(InvalidSignature, match="matches none"):
        verify(verification, altered, STANDARD_PAYLOAD, STANDARD_TIMESTAMP)


def test_slacks_documented_example_verifies_and_gives_no_delivery_id() -> None:
    verification = Verification(scheme="slack", secrets=(SLACK_SECRET,))
    headers = {"x-slack-signature": SLACK_SIGNATURE, "x-slack-request-timestamp": "1531420618"}
    assert verify(verification, headers, SLACK_BODY, SLACK_TIMESTAMP + 60) == Verified(None)
    assert slack_headers(SLACK_SECRET, SLACK_BODY, SLACK_TIMESTAMP) == {
        "X-Slack-Signature": SLACK_SIGNATURE,
        "X-Slack-Request-Timestamp": "1531420618",
    }


# Every scheme, the same questions.


@dataclass(frozen=True)
class Case:
    verification: Verification  # secrets (old, new): the second one is the rotated one
    signed: Callable[[str, bytes, int], dict[str, str]]  # (secret, body, timestamp) → headers
    signature_header: str
    marker: str  # what precedes the signature in its header
    alphabet: str  # a character of the signature's encoding and another to flip it to
    delivery_id: str | None
    required: tuple[str, ...]  # every header whose absence is refused


CASES = {
    "standard-webhooks": Case(
        Verification(scheme="standard-webhooks", secrets=(OLD_STANDARD, NEW_STANDARD)),
        lambda secret, body, ts: standard_webhooks_headers(secret, body, "msg_1", ts),
        "webhook-signature",
        "v1,",
        "AB",
        "msg_1",
        ("webhook-id", "webhook-timestamp", "webhook-signature"),
    ),
    "github": Case(
        Verification(scheme="github", secrets=(OLD, NEW)),
        lambda secret, body, ts: github_headers(secret, body, "gh-1"),
        "X-Hub-Signature-256",
        "sha256=",
        "01",
        "gh-1",
        ("X-Hub-Signature-256",),
    ),
    "stripe": Case(
        Verification(scheme="stripe", secrets=("whsec_old", "whsec_new")),
        stripe_headers,
        "Stripe-Signature",
        "v1=",
        "01",
        "evt_1",
        ("Stripe-Signature",),
    ),
    "shopify": Case(
        Verification(scheme="shopify", secrets=(OLD, NEW)),
        lambda secret, body, ts: shopify_headers(secret, body, "shop-1"),
        "X-Shopify-Hmac-Sha256",
        "",
        "AB",
        "shop-1",
        ("X-Shopify-Hmac-Sha256",),
    ),
    "slack": Case(
        Verification(scheme="slack", secrets=(OLD, NEW)),
        slack_headers,
        "X-Slack-Signature",
        "v0=",
        "01",
        "Ev1",
        ("X-Slack-Signature", "X-Slack-Request-Timestamp"),
    ),
    "hmac": Case(
        Verification(
            scheme="hmac",
            secrets=(OLD, NEW),
            header="X-Signature",
            algorithm="sha512",
            encoding="base64",
            prefix="sha512=",
            delivery_id_header="X-Delivery",
        ),
        lambda secret, body, ts: hmac_headers(
            secret,
            body,
            "X-Signature",
            algorithm="sha512",
            encoding="base64",
            prefix="sha512=",
            delivery_id_header="X-Delivery",
            delivery_id="hm-1",
        ),
        "X-Signature",
        "sha512=",
        "AB",
        "hm-1",
        ("X-Signature",),
    ),
}
TIMESTAMPED = ("standard-webhooks", "stripe", "slack")
schemes = pytest.mark.parametrize("scheme", list(CASES))
timestamped = pytest.mark.parametrize("scheme", TIMESTAMPED)


def _verify(case: Case, headers: dict[str, str], body: bytes = BODY, now: int = NOW) -> Verified:
    return verify(case.verification, lowered(headers), body, now)


def _signed(
    case: Case, secret: str | None = None, body: bytes = BODY, ts: int = NOW
) -> dict[str, str]:
    return case.signed(secret or case.verification.secrets[0], body, ts)


@schemes
def test_a_valid_delivery_verifies_with_its_delivery_id(scheme: str) -> None:
    case = CASES[scheme]
    assert _verify(case, _signed(case)) == Verified(case.delivery_id, None)


@schemes
def test_a_delivery_signed_with_the_rotated_second_secret_verifies(scheme: str) -> None:
    case = CASES[scheme]
    second = case.verification.secrets[1]
    assert _verify(case, _signed(case, second)) == Verified(case.delivery_id, None)


@schemes
def test_a_delivery_signed_with_another_secret_is_refused(scheme: str) -> None:
    case = CASES[scheme]
    other = "whsec_b3RoZXIgc2VjcmV0IGVudGlyZWx5" if scheme == "standard-webhooks" else "other"
    with pytest.raises(InvalidSignature, match="matches none of this source's secrets"):
        _verify(case, _signed(case, other))


@schemes
@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 1])
def test_one_flipped_body_byte_is_refused(scheme: str, position: int) -> None:
    case = CASES[scheme]
    flipped = bytearray(BODY)
    flipped[position] ^= 0x01
    with pytest.raises(InvalidSignature, match="matches none"):
        _verify(case, _signed(case), bytes(flipped))


@schemes
@pytest.mark.parametrize("offset", [0, 10, 20])
def test_one_flipped_signature_character_is_refused(scheme: str, offset: int) -> None:
    case = CASES[scheme]
    headers = _signed(case)
    value = headers[case.signature_header]
    at = value.index(case.marker) + len(case.marker) + offset
    first, second = case.alphabet[0], case.alphabet[1]
    replacement = second if value[at] == first else first
    headers[case.signature_header] = value[:at] + replacement + value[at + 1 :]
    with pytest.raises(InvalidSignature, match="matches none"):
        _verify(case, headers)


@schemes
def test_a_missing_header_is_refused_by_name(scheme: str) -> None:
    case = CASES[scheme]
    for name in case.required:
        headers = {k: v for k, v in _signed(case).items() if k != name}
        with pytest.raises(InvalidSignature, match=f"the {name} header is missing"):
            _verify(case, headers)


@schemes
def test_no_headers_at_all_are_refused(scheme: str) -> None:
    with pytest.raises(InvalidSignature, match="missing"):
        _verify(CASES[scheme], {})


MALFORMED = [
    "",
    " ",
    "garbage",
    "sha256=",
    "v1,",
    "v0=zz",
    "t=,v1=",
    "sha256=xyz",
    "=" * 40,
    "sha256=" + "0" * 63,  # odd-length hex
    "v1,!!!!",
    "é" * 10,
    "\ud800\udfff\ud800",  # lone surrogates, as aiohttp hands undecodable header bytes over
    "\x00\x01",
    "a" * 100_000,
]


@schemes
@pytest.mark.parametrize("value", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_signature_header_is_refused(scheme: str, value: str) -> None:
    case = CASES[scheme]
    headers = {**_signed(case), case.signature_header: value}
    with pytest.raises(InvalidSignature):
        _verify(case, headers)


@timestamped
@pytest.mark.parametrize(
    "stamp", ["", "abc", "-5", "1.5", "+1700000000", "01700000000", "1" * 40, "1e9", "nan", "٣"]
)
def test_a_malformed_timestamp_is_refused(scheme: str, stamp: str) -> None:
    case = CASES[scheme]
    headers = _signed(case)
    header = {"standard-webhooks": "webhook-timestamp", "slack": "X-Slack-Request-Timestamp"}
    if scheme == "stripe":
        headers["Stripe-Signature"] = headers["Stripe-Signature"].replace(f"t={NOW}", f"t={stamp}")
    else:
        headers[header[scheme]] = stamp
    with pytest.raises(InvalidSignature):
        _verify(case, headers)


@timestamped
def test_a_stale_timestamp_is_refused_as_stale(scheme: str) -> None:
    case = CASES[scheme]
    signed_at = NOW - 301
    with pytest.raises(InvalidSignature, match="stale delivery: signed 301 seconds ago"):
        _verify(case, _signed(case, ts=signed_at))


@timestamped
def test_a_timestamp_in_the_future_is_refused_as_such(scheme: str) -> None:
    case = CASES[scheme]
    with pytest.raises(InvalidSignature, match="301 seconds in the future"):
        _verify(case, _signed(case, ts=NOW + 301))


@timestamped
def test_a_timestamp_at_the_edge_of_the_tolerance_verifies(scheme: str) -> None:
    case = CASES[scheme]
    assert _verify(case, _signed(case, ts=NOW - 300)).delivery_id == case.delivery_id
    assert _verify(case, _signed(case, ts=NOW + 300)).delivery_id == case.delivery_id


@timestamped
def test_the_tolerance_is_the_sources_own(scheme: str) -> None:
    case = CASES[scheme]
    strict = Verification.model_validate({**case.verification.model_dump(), "tolerance": 10})
    headers = lowered(_signed(case, ts=NOW - 11))
    with pytest.raises(InvalidSignature, match=r"stale delivery: .* tolerance of 10 seconds"):
        verify(strict, headers, BODY, NOW)
    relaxed = Verification.model_validate({**case.verification.model_dump(), "tolerance": 3600})
    assert verify(relaxed, lowered(_signed(case, ts=NOW - 3000)), BODY, NOW).delivery_id


@timestamped
def test_a_forged_stale_delivery_is_refused_for_its_signature(scheme: str) -> None:
    """Freshness is judged only for deliveries the sender really signed."""
    case = CASES[scheme]
    with pytest.raises(InvalidSignature, match="matches none"):
        _verify(
            case, _signed(case, "whsec_Zm9yZ2Vk" if scheme == "standard-webhooks" else "x", ts=1)
        )


@timestamped
def test_the_timestamp_is_part_of_what_is_signed(scheme: str) -> None:
    case = CASES[scheme]
    headers = _signed(case, ts=NOW - 1)
    for name, value in list(headers.items()):
        headers[name] = value.replace(str(NOW - 1), str(NOW))
    with pytest.raises(InvalidSignature, match="matches none"):
        _verify(case, headers)


# Handshakes.


def test_a_signed_github_ping_is_a_handshake() -> None:
    verification = Verification(scheme="github", secrets=(OLD,))
    body = b'{"zen": "Design for failure.", "hook_id": 1}'
    headers = lowered(github_headers(OLD, body, "ping-1", event="ping"))
    assert verify(verification, headers, body, NOW) == Verified("ping-1", {"status": "pong"})


def test_an_unsigned_github_ping_is_refused() -> None:
    verification = Verification(scheme="github", secrets=(OLD,))
    headers = lowered(github_headers("not the secret", b"{}", "ping-1", event="ping"))
    with pytest.raises(InvalidSignature):
        verify(verification, headers, b"{}", NOW)


def test_a_signed_slack_url_verification_answers_its_challenge() -> None:
    verification = Verification(scheme="slack", secrets=(OLD,))
    body = b'{"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRN", '
    body += b'"type": "url_verification"}'
    verified = verify(verification, lowered(slack_headers(OLD, body, NOW)), body, NOW)
    assert verified == Verified(None, {"challenge": "3eZbrw1aBm2rZgRN"})


def test_an_unsigned_slack_url_verification_is_refused() -> None:
    verification = Verification(scheme="slack", secrets=(OLD,))
    body = b'{"challenge": "abc", "type": "url_verification"}'
    with pytest.raises(InvalidSignature, match="matches none"):
        verify(verification, lowered(slack_headers("forged", body, NOW)), body, NOW)


@pytest.mark.parametrize("challenge", [None, 5, "", ["a"], "x" * 1001])
def test_a_url_verification_without_a_usable_challenge_is_refused(challenge: object) -> None:
    verification = Verification(scheme="slack", secrets=(OLD,))
    body = json.dumps({"type": "url_verification", "challenge": challenge}).encode()
    with pytest.raises(InvalidSignature, match="challenge"):
        verify(verification, lowered(slack_headers(OLD, body, NOW)), body, NOW)


# Delivery ids.


@pytest.mark.parametrize(
    ("scheme", "header"),
    [("github", "X-GitHub-Delivery"), ("shopify", "X-Shopify-Webhook-Id"), ("hmac", "X-Delivery")],
)
def test_delivery_id_headers_are_bounded(scheme: str, header: str) -> None:
    case = CASES[scheme]
    longest = "d" * MAX_DELIVERY_ID_CHARS
    assert _verify(case, {**_signed(case), header: longest}).delivery_id == longest
    for unusable in ["d" * (MAX_DELIVERY_ID_CHARS + 1), "dé", "d\udc80", "d\x7f"]:
        with pytest.raises(InvalidSignature, match=f"the {header} header"):
            _verify(case, {**_signed(case), header: unusable})
    absent = {k: v for k, v in _signed(case).items() if k != header}
    assert _verify(case, absent).delivery_id is None


def test_a_standard_webhooks_id_over_the_bound_is_refused() -> None:
    case = CASES["standard-webhooks"]
    message_id = "m" * (MAX_DELIVERY_ID_CHARS + 1)
    headers = standard_webhooks_headers(OLD_STANDARD, BODY, message_id, NOW)
    with pytest.raises(InvalidSignature, match="webhook-id header is not a delivery id"):
        _verify(case, headers)


@pytest.mark.parametrize(("scheme", "key"), [("stripe", "id"), ("slack", "event_id")])
@pytest.mark.parametrize(
    "value", [5, 1.5, True, ["evt"], {"id": "evt"}, "", "é", "e" * (MAX_DELIVERY_ID_CHARS + 1)]
)
def test_a_body_delivery_id_that_is_not_a_short_ascii_string_is_refused(
    scheme: str, key: str, value: object
) -> None:
    case = CASES[scheme]
    body = json.dumps({key: value}).encode()
    with pytest.raises(InvalidSignature, match=f'the body\'s "{key}" is not a delivery id'):
        _verify(case, _signed(case, body=body), body)


@pytest.mark.parametrize(("scheme", "key"), [("stripe", "id"), ("slack", "event_id")])
def test_a_body_without_a_delivery_id_gives_none(scheme: str, key: str) -> None:
    case = CASES[scheme]
    for body in (b"{}", json.dumps({key: None}).encode()):
        assert _verify(case, _signed(case, body=body), body) == Verified(None)


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[1, 2]", b'"evt"', b"\xff\xfe", b"[" * 5000, b"1e999"]
)
def test_a_signed_stripe_body_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    case = CASES["stripe"]
    with pytest.raises(InvalidSignature, match="must be a JSON object"):
        _verify(case, _signed(case, body=body), body)


def test_an_unsigned_body_is_never_read() -> None:
    """The signature is checked first: a forged non-JSON body is refused for its signature."""
    case = CASES["stripe"]
    with pytest.raises(InvalidSignature, match="matches none"):
        _verify(case, _signed(case, "forged", body=b"not json"), b"not json")


def test_a_standard_webhooks_body_that_is_not_utf8_is_refused() -> None:
    case = CASES["standard-webhooks"]
    body = b'{"a": "\xff"}'
    with pytest.raises(InvalidSignature, match="not UTF-8"):
        _verify(case, _signed(case, body=body), body)


def test_several_standard_webhooks_signatures_one_valid_verifies() -> None:
    """As the library's test_multi_sig_payload_is_valid: unknown versions and wrong v1s are
    skipped."""
    case = CASES["standard-webhooks"]
    headers = _signed(case)
    wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    headers["webhook-signature"] = " ".join(
        [wrong, "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", headers["webhook-signature"]]
    )
    assert _verify(case, headers).delivery_id == "msg_1"
    headers["webhook-signature"] = f"{wrong} v1a,abc"
    with pytest.raises(InvalidSignature, match="matches none"):
        _verify(case, headers)


def test_several_stripe_v1_signatures_one_valid_verifies() -> None:
    case = CASES["stripe"]
    signed = _signed(case)["Stripe-Signature"]
    headers = {"Stripe-Signature": f"{signed},v1={'0' * 64},v0=abc"}
    assert _verify(case, headers).delivery_id == "evt_1"
    twice = {"Stripe-Signature": f"t={NOW},{signed}"}
    with pytest.raises(InvalidSignature, match="malformed"):
        _verify(case, twice)


def test_hmac_takes_sha1_hex_without_a_prefix_or_a_delivery_id() -> None:
    verification = Verification(scheme="hmac", secrets=(OLD,), header="X-Sig", algorithm="sha1")
    headers = lowered(hmac_headers(OLD, BODY, "X-Sig", algorithm="sha1"))
    assert verify(verification, headers, BODY, NOW) == Verified(None)
    wrong_prefix = {"x-sig": "sha1=" + headers["x-sig"]}
    with pytest.raises(InvalidSignature, match="malformed"):
        verify(verification, wrong_prefix, BODY, NOW)


def test_hex_signatures_are_read_in_either_case() -> None:
    case = CASES["github"]
    headers = _signed(case)
    headers["X-Hub-Signature-256"] = "sha256=" + headers["X-Hub-Signature-256"][7:].upper()
    assert _verify(case, headers).delivery_id == "gh-1"


def test_scheme_none_verifies_anything_and_gives_no_delivery_id() -> None:
    verification = Verification(scheme="none")
    assert verify(verification, {"x": "\ud800"}, b"\xff", 0) == Verified(None, None)


def test_the_signing_helper_signs_every_scheme_as_verify_expects() -> None:
    for case in CASES.values():
        headers = lowered(sign(case.verification, BODY, NOW, delivery_id=case.delivery_id or ""))
        assert verify(case.verification, headers, BODY, NOW).delivery_id == case.delivery_id


# Definitions.


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"scheme": "github"}, "scheme 'github' needs at least one secret"),
        ({"scheme": "none", "secrets": ["s"]}, "takes no secrets"),
        ({"scheme": "github", "secrets": [""]}, "secret 1 must be 1 to"),
        ({"scheme": "github", "secrets": ["a", "\ud800"]}, "secret 2 is not valid Unicode"),
        ({"scheme": "standard-webhooks", "secrets": ["MfKQ9r8GKYqrTwjUPD8I"]}, "whsec_"),
        ({"scheme": "standard-webhooks", "secrets": ["whsec_!!"]}, "whsec_"),
        ({"scheme": "standard-webhooks", "secrets": ["whsec_"]}, "whsec_"),
        ({"scheme": "standard-webhooks", "secrets": ["whsec_abcde"]}, "whsec_"),
        ({"scheme": "hmac", "secrets": ["s"]}, "scheme 'hmac' needs 'header'"),
        ({"scheme": "hmac", "secrets": ["s"], "header": "X Sig"}, "'X Sig' is not a header name"),
        (
            {"scheme": "hmac", "secrets": ["s"], "header": "X", "delivery_id_header": "a:b"},
            "delivery_id_header 'a:b' is not a header name",
        ),
        ({"scheme": "hmac", "secrets": ["s"], "header": "X", "prefix": "é"}, "printable ASCII"),
        ({"scheme": "github", "secrets": ["s"], "header": "X"}, "only scheme 'hmac'"),
        ({"scheme": "stripe", "secrets": ["s"], "encoding": "base64"}, "only scheme 'hmac'"),
        ({"scheme": "github", "secrets": ["s"], "tolerance": 60}, "signs no timestamp"),
        ({"scheme": "slack", "secrets": ["s"], "tolerance": 0}, "greater than or equal to 1"),
        ({"scheme": "slack", "secrets": ["s"], "tolerance": 86_401}, "less than or equal"),
        ({"scheme": "github", "secrets": ["s"] * (MAX_SECRETS + 1)}, "at most 10 items"),
        ({"scheme": "github", "secrets": ["s"], "extra": 1}, "Extra inputs are not permitted"),
        ({"scheme": "gitlab", "secrets": ["s"]}, "Input should be"),
    ],
)
def test_an_unusable_verification_is_refused_with_the_problem(
    raw: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        Verification.model_validate(raw)


def test_problems_never_quote_a_secret() -> None:
    with pytest.raises(ValidationError) as caught:
        Verification.model_validate({"scheme": "standard-webhooks", "secrets": ["sekrit"]})
    assert all("sekrit" not in error["msg"] for error in caught.value.errors())
    assert "sekrit" not in repr(
        CASES["github"].verification.model_copy(update={"secrets": ("sekrit",)})
    )


def test_a_verification_reads_back_exactly_as_it_is_written() -> None:
    for case in CASES.values():
        written = case.verification.model_dump(mode="json")
        assert Verification.model_validate(written) == case.verification
        assert Verification.model_validate_json(json.dumps(written)) == case.verification


def test_a_standard_webhooks_secret_may_come_unpadded() -> None:
    padded = Verification(scheme="standard-webhooks", secrets=(NEW_STANDARD,))
    unpadded = Verification(scheme="standard-webhooks", secrets=(NEW_STANDARD.rstrip("="),))
    headers = lowered(standard_webhooks_headers(NEW_STANDARD, BODY, "msg_1", NOW))
    assert verify(padded, headers, BODY, NOW) == verify(unpadded, headers, BODY, NOW)


# Anything else: only Verified or InvalidSignature.

HEADER_NAMES = sorted(
    {name.lower() for case in CASES.values() for name in _signed(case)}
    | {"x-github-event", "x-unknown", "x-slack-retry-num"}
)


def _random_text(rng: random.Random) -> str:
    pick = rng.randrange(8)
    if pick == 0:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(80)))
    if pick == 1:
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(20)))
    if pick == 2:
        return str(rng.randrange(-(10**15), 10**15))
    if pick == 3:
        prefix = rng.choice(["sha256=", "v0=", "v1,", "t=1,v1=", "sha512=", ""])
        return prefix + "".join(rng.choice("0123456789abcdefABCDEF+/=") for _ in range(64))
    if pick == 4:
        return rng.choice(["", " ", "\ud800", "ping", "a" * 9000, "٣٣٣", "1e3", "t=,v1=,"])
    if pick == 5:
        return ",".join(
            f"{rng.choice(['t', 'v1', 'v0', 'x'])}={rng.randrange(10**12)}" for _ in range(5)
        )
    if pick == 6:
        return " ".join(f"v1,{rng.randbytes(8).hex()}" for _ in range(rng.randrange(5)))
    return str(NOW + rng.randrange(-1000, 1000))


def _random_body(rng: random.Random) -> bytes:
    pick = rng.randrange(6)
    if pick == 0:
        return rng.randbytes(rng.randrange(200))
    if pick == 1:
        values: list[object] = [None, 1, -1.5, "x", "é", [], {}, True, 10**30, "e" * 300]
        keys = ["id", "event_id", "type", "challenge", "x"]
        document = {rng.choice(keys): rng.choice(values) for _ in range(rng.randrange(4))}
        if rng.random() < 0.3:
            document["type"] = "url_verification"
        return json.dumps(document).encode()
    if pick == 2:
        return rng.choice([b"", b"[" * 3000, b"{" * 3000, b"1e999", b"null", b'"\\ud800"', BODY])
    if pick == 3:
        return b'{"id": "' + rng.randbytes(20) + b'"}'
    if pick == 4:
        return b"\x00" * rng.randrange(10)
    return BODY


def _outcome(verification: Verification, headers: dict[str, str], body: bytes) -> None:
    message = None
    try:
        verified = verify(verification, headers, body, NOW)
    except InvalidSignature as refused:
        message = str(refused)
    else:
        assert isinstance(verified, Verified)
    assert message is None or message


def _mutated(rng: random.Random, text: str) -> str:
    if not text:
        return _random_text(rng)
    at = rng.randrange(len(text))
    return (
        text[:at] + rng.choice([chr(rng.randrange(0x110000)), "", "=", ",", " "]) + text[at + 1 :]
    )


ALL = [*CASES.values()]


@pytest.mark.parametrize("case", ALL, ids=list(CASES))
def test_random_headers_and_bodies_end_in_verified_or_invalid_signature(case: Case) -> None:
    rng = random.Random(f"fuzz-{case.signature_header}")
    for _ in range(1500):
        names = [name.lower() for name in case.required] + HEADER_NAMES
        headers = {name: _random_text(rng) for name in names if rng.random() < 0.7}
        _outcome(case.verification, headers, _random_body(rng))


@pytest.mark.parametrize("case", ALL, ids=list(CASES))
def test_mutated_deliveries_end_in_verified_or_invalid_signature(case: Case) -> None:
    rng = random.Random(f"mutate-{case.signature_header}")
    for _ in range(1500):
        headers = lowered(_signed(case))
        name = rng.choice(sorted(headers))
        headers[name] = _mutated(rng, headers[name])
        body = bytearray(BODY)
        if rng.random() < 0.3:
            body[rng.randrange(len(body))] = rng.randrange(256)
        _outcome(case.verification, headers, bytes(body))


@pytest.mark.parametrize("case", ALL, ids=list(CASES))
def test_signed_random_bodies_end_in_verified_or_invalid_signature(case: Case) -> None:
    """Past the signature, reading the body must hold too."""
    rng = random.Random(f"signed-{case.signature_header}")
    for _ in range(1500):
        body = _random_body(rng)
        _outcome(case.verification, lowered(_signed(case, body=body)), body)


def test_an_event_holding_numbers_orjson_cannot_read_keeps_its_id_and_its_handshake() -> None:
    """The edge takes `1e400` and 20-digit integers; so do the schemes that read the body."""
    now = 1_700_000_000
    stripe = Verification(scheme="stripe", secrets=("whsec_stripe",))
    event = b'{"id": "evt_big", "amount": 1e400, "n": 123456789012345678901234567890}'
    headers = lowered(stripe_headers("whsec_stripe", event, now))
    assert verify(stripe, headers, event, now).delivery_id == "evt_big"
    slack = Verification(scheme="slack", secrets=("slack-secret",))
    challenge = b'{"type": "url_verification", "challenge": "c", "n": 1e400}'
    headers = lowered(slack_headers("slack-secret", challenge, now))
    assert verify(slack, headers, challenge, now).handshake == {"challenge": "c"}
