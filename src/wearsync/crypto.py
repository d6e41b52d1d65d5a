"""OAuth tokens encrypted at rest with Fernet (AES-128-CBC and HMAC-SHA256, from `cryptography`).

`WEARSYNC_TOKEN_KEYS` lists Fernet keys, comma-separated: the first encrypts, every one decrypts,
so a key is rotated by putting a new one first, running `wearsync rotate-token-keys` (which
re-encrypts every stored token under it), and then dropping the old one. A stored value carries
a prefix saying how it is stored; a value without one is a token stored before encryption (it is
read as is, and encrypted when next written or rotated).
"""

from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "fernet:"


class TokenKeyError(ValueError):
    """Missing, malformed or wrong token keys."""


def parse_keys(text: str) -> list[Fernet]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    try:
        return [Fernet(k) for k in keys]
    except ValueError as e:
        raise TokenKeyError(f"WEARSYNC_TOKEN_KEYS holds a key that is not a Fernet key: {e}") from None


def generate_key() -> str:
    return Fernet.generate_key().decode()


@dataclass(frozen=True)
class TokenCipher:
    fernet: MultiFernet

    def seal(self, token: str | None) -> str | None:
        if token is None:
            return None
        return PREFIX + self.fernet.encrypt(token.encode()).decode()

    def open(self, stored: str | None) -> str | None:
        if stored is None or not stored.startswith(PREFIX):
            return stored  # stored before encryption
        try:
            return self.fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise TokenKeyError("a stored token cannot be decrypted with WEARSYNC_TOKEN_KEYS") from None

    def reseal(self, stored: str | None) -> str | None:
        """The same token, encrypted under the first key (for rotation)."""
        return self.seal(self.open(stored))


def parse_cipher(setting: str) -> TokenCipher | None:
    """The cipher of WEARSYNC_TOKEN_KEYS; None when it holds no key; TokenKeyError for a bad one."""
    keys = parse_keys(setting)
    return TokenCipher(MultiFernet(keys)) if keys else None
