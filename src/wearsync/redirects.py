"""Where an OAuth flow may send the user back to.

Redirect URIs (WEARSYNC_OAUTH_REDIRECT_ALLOWLIST): entries `scheme://host[:port][/path]`, comma-
separated. A redirect URI is allowed when its scheme (http or https) and host equal an entry's, its
port equals the entry's (the scheme's default when the entry names none) — except that a loopback
entry (localhost, 127.0.0.1, [::1]) without a port allows any port, as RFC 8252 7.3 does for apps
on the user's machine — and its path is the entry's path or below it. It must carry no user info,
no fragment, and no `.` or `..` segment, percent-encoded or not. The default allows only loopback
hosts (development).
The rule is checked when a flow starts and again at its callback (the setting may have changed
between the two), so the callback redirects nowhere the operator did not allow: no open redirect.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_REDIRECT_URI = 2048


@dataclass(frozen=True)
class AllowedRedirect:
    scheme: str
    host: str
    port: int | None  # None: the scheme's default (any port for a loopback host)
    path: str


def _parts(uri: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, explicit port, path) of an absolute http(s) URI; ValueError if it is not one
    we would ever redirect to."""
    parts = urlsplit(uri)  # ValueError for a malformed one (e.g. a bad IPv6 host)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError("must be an absolute http or https URL")
    if parts.username is not None or parts.password is not None or parts.fragment or "\\" in uri:
        raise ValueError("must carry no user info, fragment or backslash")
    if any(segment in (".", "..") for segment in _decoded(parts.path).split("/")):
        raise ValueError("must not contain . or .. path segments")
    return scheme, host, parts.port, parts.path or "/"


def _decoded(path: str) -> str:
    """The path as whoever serves it may read it: percent-decoded until nothing changes, so that
    `%2e%2e` (or `%252e%252e`, decoded twice somewhere) counts as the `..` it becomes."""
    for _ in range(len(path)):  # each round that changes it shortens it
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    return path


def parse_allowlist(value: str) -> tuple[AllowedRedirect, ...]:
    """The entries of WEARSYNC_OAUTH_REDIRECT_ALLOWLIST; ValueError naming a bad one."""
    entries = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        try:
            scheme, host, port, path = _parts(entry)
        except ValueError as e:
            raise ValueError(f"WEARSYNC_OAUTH_REDIRECT_ALLOWLIST entry {entry!r} {e}") from None
        if urlsplit(entry).query:
            raise ValueError(f"WEARSYNC_OAUTH_REDIRECT_ALLOWLIST entry {entry!r} must carry no query")
        entries.append(AllowedRedirect(scheme, host, port, path))
    return tuple(entries)


def _path_within(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/")


def redirect_allowed(uri: str, allowlist: Sequence[AllowedRedirect]) -> bool:
    if len(uri) > MAX_REDIRECT_URI:
        return False
    try:
        scheme, host, port, path = _parts(uri)
    except ValueError:
        return False
    for allowed in allowlist:
        if (scheme, host) != (allowed.scheme, allowed.host) or not _path_within(path, allowed.path):
            continue
        if allowed.port is None and host in _LOOPBACK:
            return True
        if (port or _DEFAULT_PORTS[scheme]) == (allowed.port or _DEFAULT_PORTS[scheme]):
            return True
    return False
