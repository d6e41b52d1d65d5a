"""Links to the hosted connect page: `{WEARSYNC_PUBLIC_URL}/connect/{user_id}?token=...`, which an
integrator makes (`POST /api/v1/users/{user_id}/connect-link` or `wearsync connect-link`) and sends
to its user, who picks a provider there and goes through its OAuth flow.

The token is signed, not stored: urlsafe base64 of JSON naming the application, the user (by the
API's id), where to send the browser at the end (the integrator's redirect URI, or none: the
built-in result page) and when the link expires, then `.` and its HMAC-SHA256. The HMAC key is
derived from each key of WEARSYNC_TOKEN_KEYS (with a label of its own, so it is not the key that
encrypts tokens): the first signs, every one verifies, so rotating the token keys keeps the links
already sent working until they expire. Anyone holding a link can connect that user's accounts
until then, so links are short-lived (an hour by default, a day at most).
"""

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode
from uuid import UUID

from wearsync.settings import Settings

LABEL = b"wearsync connect link v1"
DEFAULT_TTL_S, MAX_TTL_S = 3600, 86400
RESULT_PATH = "/connect/result"


@dataclass(frozen=True)
class ConnectLink:
    app_id: UUID
    user_id: UUID  # the API's id of the user (users.public_id)
    redirect_uri: str | None  # None: the flow ends on the built-in result page
    expires_at: datetime


def _signing_keys(settings: Settings) -> list[bytes]:
    keys = [k.strip() for k in settings.token_keys.split(",") if k.strip()]
    return [hmac.digest(key.encode(), LABEL, hashlib.sha256) for key in keys]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(settings: Settings, link: ConnectLink) -> str:
    keys = _signing_keys(settings)
    if not keys:
        settings.cipher()  # raises TokenKeyError, saying how to set WEARSYNC_TOKEN_KEYS
    expires = int(link.expires_at.timestamp())
    body = {"a": str(link.app_id), "u": str(link.user_id), "r": link.redirect_uri, "e": expires}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_b64(hmac.digest(keys[0], payload.encode(), hashlib.sha256))}"


def read_token(settings: Settings, token: str, now: datetime | None = None) -> ConnectLink | None:
    """The link a token names, if one of our keys signed it and it has not expired; else None."""
    payload, _, signature = token.partition(".")
    try:
        given = _unb64(signature)
    except (binascii.Error, ValueError):
        return None
    signed = [hmac.digest(key, payload.encode(), hashlib.sha256) for key in _signing_keys(settings)]
    if not any(hmac.compare_digest(s, given) for s in signed):
        return None
    body = json.loads(_unb64(payload))  # signed by us: well-formed
    link = ConnectLink(UUID(body["a"]), UUID(body["u"]), body["r"], datetime.fromtimestamp(body["e"], UTC))
    return link if link.expires_at > (now or datetime.now(UTC)) else None


def mint(
    settings: Settings, app_id: UUID, user_id: UUID, redirect_uri: str | None, ttl_s: int = DEFAULT_TTL_S
) -> tuple[str, datetime]:
    """(the link's URL, when it expires) for the application's user (by the API's id)."""
    expires_at = (datetime.now(UTC) + timedelta(seconds=ttl_s)).replace(microsecond=0)
    token = make_token(settings, ConnectLink(app_id, user_id, redirect_uri, expires_at))
    return f"{page_url(settings, user_id)}?{urlencode({'token': token})}", expires_at


def page_url(settings: Settings, user_id: UUID) -> str:
    return f"{settings.public_url.rstrip('/')}/connect/{user_id}"


def result_url(settings: Settings) -> str:
    """The built-in page a flow started from a link without a redirect URI ends on."""
    return settings.public_url.rstrip("/") + RESULT_PATH
