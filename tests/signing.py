"""Deliveries signed as each sender signs them, for tests and the bench.

Written from each provider's documentation with `hmac` and `base64` alone, and never
from `ingest.signatures`, so that a test checks the schemes rather than the verifier against
itself. Each function returns the headers the sender sends, spelled as it spells them (the edge
reads them case-insensitively; `ingest.signatures.verify` wants them in lower case: `lowered`).
"""

from __future__ import annotations

import base64
import hmac
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ingest.signatures import Verification


def standard_webhooks_headers(
    secret: str, body: bytes, message_id: str, timestamp: int
) -> dict[str, str]:
    """Standard Webhooks: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the
    base64 after `whsec_`, decoded."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.digest(key, signed, "sha256")).decode()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


def github_headers(
    secret: str, body: bytes, delivery_id: str, event: str = "issues"
) -> dict[str, str]:
    """GitHub: `sha256=<hex HMAC-SHA256 of the body>`, keyed with the secret's UTF-8."""
    return {
        "X-Hub-Signature-256": f"sha256={hmac.digest(secret.encode(), body, 'sha256').hex()}",
        "X-GitHub-Delivery": delivery_id,
        "X-GitHub-Event": event,
    }


def stripe_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Stripe: `t=<ts>,v1=<hex HMAC-SHA256 of "ts.body">`, keyed with the whole secret string,
    `whsec_` included. The delivery id is the event's `id`, in the body."""
    signature = hmac.digest(secret.encode(), f"{timestamp}.".encode() + body, "sha256").hex()
    return {"Stripe-Signature": f"t={timestamp},v1={signature}"}


def shopify_headers(
    secret: str, body: bytes, webhook_id: str, topic: str = "orders/create"
) -> dict[str, str]:
    """Shopify: `<base64 HMAC-SHA256 of the body>`, keyed with the secret's UTF-8."""
    signature = base64.b64encode(hmac.digest(secret.encode(), body, "sha256")).decode()
    return {
        "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Topic": topic,
    }


def slack_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Slack: `v0=<hex HMAC-SHA256 of "v0:ts:body">`. The delivery id is the body's
    `event_id`."""
    signed = f"v0:{timestamp}:".encode() + body
    return {
        "X-Slack-Signature": f"v0={hmac.digest(secret.encode(), signed, 'sha256').hex()}",
        "X-Slack-Request-Timestamp": str(timestamp),
    }


def hmac_headers(
    secret: str,
    body: bytes,
    header: str,
    *,
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256",
    encoding: Literal["hex", "base64"] = "hex",
    prefix: str = "",
    delivery_id_header: str | None = None,
    delivery_id: str | None = None,
) -> dict[str, str]:
    """A plain HMAC of the body in `header`, as scheme `hmac` is configured."""
    digest = hmac.digest(secret.encode(), body, algorithm)
    encoded = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    headers = {header: f"{prefix}{encoded}"}
    if delivery_id_header is not None and delivery_id is not None:
        headers[delivery_id_header] = delivery_id
    return headers


def sign(
    verification: Verification, body: bytes, now: int, delivery_id: str = "delivery-1"
) -> dict[str, str]:
    """The headers a sender of `verification.scheme` sends for `body` at `now`, signed with the
    first secret. Stripe and Slack carry their delivery id in the body, so `delivery_id` is not
    used for them."""
    scheme = verification.scheme
    secret = verification.secrets[0] if verification.secrets else ""
    if scheme == "standard-webhooks":
        return standard_webhooks_headers(secret, body, delivery_id, now)
    if scheme == "github":
        return github_headers(secret, body, delivery_id)
    if scheme == "stripe":
        return stripe_headers(secret, body, now)
    if scheme == "shopify":
        return shopify_headers(secret, body, delivery_id)
    if scheme == "slack":
        return slack_headers(secret, body, now)
    if scheme == "hmac":
        return _configured_hmac_headers(verification, secret, body, delivery_id)
    return {}


def _configured_hmac_headers(
    verification: Verification, secret: str, body: bytes, delivery_id: str
) -> dict[str, str]:
    return hmac_headers(
        secret,
        body,
        verification.header or "",
        algorithm=verification.algorithm,
        encoding=verification.encoding,
        prefix=verification.prefix,
        delivery_id_header=verification.delivery_id_header,
        delivery_id=delivery_id,
    )


def lowered(headers: dict[str, str]) -> dict[str, str]:
    """Headers keyed as `ingest.signatures.verify` reads them (the edge lowers names)."""
    return {name.lower(): value for name, value in headers.items()}
