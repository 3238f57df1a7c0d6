"""Field-level deterministic encryption of PII with AES-SIV (RFC 5297).

Keys come only from the environment: ``PLAIT_PII_KEYS="k2:<base64 of 64 bytes>,k1:<...>"``;
the first key encrypts, every key decrypts (so keys rotate: add a new first key, run the
re-encryption, then drop the old one). A token is ``enc:v1:<key id>:<base64url>``.

AES-SIV is deterministic: the same value in the same workspace under the same key always
gives the same token, so identity resolution can still match an encrypted email and a
destination can still count distinct values. That reveals which values are *equal*, never
what they are. The workspace id is the associated data: a token copied into another
workspace does not decrypt, and equal values in two workspaces give different tokens.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

PREFIX = "enc:v1:"
ENV_VAR = "PLAIT_PII_KEYS"
KEY_BYTES = 64  # AES-256-SIV: two 256-bit keys (S2V and CTR)
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class PiiKeyError(Exception):
    """Missing or malformed keys, or a token that does not decrypt (tampered, another
    workspace's, or under a key this process does not hold)."""


def is_encrypted(value: Any) -> bool:
    return type(value) is str and value.startswith(PREFIX)


def token_key_id(token: str) -> str | None:
    """The key id a token was made with, or None when ``token`` is not one."""
    if not is_encrypted(token):
        return None
    key_id, sep, _ = token[len(PREFIX) :].partition(":")
    return key_id if sep else None


def _b64decode(text: str, urlsafe: bool = False) -> bytes:
    """Strict base64 (standard or URL-safe alphabet), padding optional."""
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    altchars = b"-_" if urlsafe or "-" in text or "_" in text else None
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from None


class Keyring:
    """The PII keys of this process: the first encrypts, all decrypt."""

    __slots__ = ("current", "_ciphers")

    def __init__(self, keys: list[tuple[str, bytes]]):
        if not keys:
            raise PiiKeyError(f"{ENV_VAR}: no keys")
        self._ciphers: dict[str, AESSIV] = {}
        for key_id, key in keys:
            if not _KEY_ID.fullmatch(key_id):
                raise PiiKeyError(
                    f"{ENV_VAR}: key id {key_id!r} must be 1-32 letters, digits, '-' or '_'"
                )
            if key_id in self._ciphers:
                raise PiiKeyError(f"{ENV_VAR}: key id {key_id!r} appears twice")
            if len(key) != KEY_BYTES:
                raise PiiKeyError(
                    f"{ENV_VAR}: key {key_id!r} is {len(key)} bytes; it must be {KEY_BYTES} "
                    "random bytes, base64-encoded (make one with Keyring.generate_key())"
                )
            self._ciphers[key_id] = AESSIV(key)
        self.current = keys[0][0]

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """From ``"k2:<base64>,k1:<base64>"`` (the value of PLAIT_PII_KEYS)."""
        keys = []
        for position, item in enumerate(part.strip() for part in text.split(",")):
            key_id, sep, encoded = item.partition(":")
            if not sep or not key_id or not encoded:
                raise PiiKeyError(
                    f"{ENV_VAR}: entry {position + 1} must be '<key id>:<base64 key>'"
                )
            try:
                keys.append((key_id.strip(), _b64decode(encoded)))
            except ValueError as exc:
                raise PiiKeyError(f"{ENV_VAR}: key {key_id.strip()!r} is {exc}") from None
        return cls(keys)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Keyring | None:
        """The keyring in ``PLAIT_PII_KEYS``, or None when it is unset or empty."""
        text = env.get(ENV_VAR, "").strip()
        return cls.parse(text) if text else None

    @staticmethod
    def generate_key() -> str:
        """A new key: base64 of 64 random bytes, for ``PLAIT_PII_KEYS``."""
        return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    is_encrypted = staticmethod(is_encrypted)

    def encrypt(self, value: str, workspace_id: str, key_id: str | None = None) -> str:
        """The token of ``value`` under the current key (or ``key_id``)."""
        key_id = key_id or self.current
        sealed = self._ciphers[key_id].encrypt(value.encode(), [workspace_id.encode()])
        encoded = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")
        return f"{PREFIX}{key_id}:{encoded}"

    def decrypt(self, token: str, workspace_id: str) -> str:
        key_id = token_key_id(token)
        if key_id is None:
            raise PiiKeyError("not an encrypted value (expected 'enc:v1:<key id>:<data>')")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PiiKeyError(
                f"value encrypted under key {key_id!r}, which is not in {ENV_VAR} "
                f"(holding {', '.join(self._ciphers)})"
            )
        encoded = token[len(PREFIX) + len(key_id) + 1 :]
        try:
            sealed = _b64decode(encoded, urlsafe=True)
            return cipher.decrypt(sealed, [workspace_id.encode()]).decode()
        except (ValueError, InvalidTag):
            raise PiiKeyError(
                f"value under key {key_id!r} does not decrypt for workspace {workspace_id!r}: "
                "it was altered or belongs to another workspace"
            ) from None

    def decrypt_values(self, obj: Any, workspace_id: str) -> Any:
        """A copy of a JSON structure with every token decrypted. Tokens under a key id
        this keyring does not hold stay as they are; a token that fails to decrypt under a
        key it does hold raises ``PiiKeyError``."""

        def visit(value: Any) -> Any:
            if type(value) is str:
                if value.startswith(PREFIX) and token_key_id(value) in self._ciphers:
                    return self.decrypt(value, workspace_id)
                return value
            if isinstance(value, dict):
                return {k: visit(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [visit(v) for v in value]
            return value

        return visit(obj)

    def reencrypt_values(self, obj: Any, workspace_id: str) -> tuple[Any, bool]:
        """(a copy of ``obj`` with every token under an older key re-encrypted under the
        current one, whether anything changed). Tokens under an unknown key id stay."""
        changed = False

        def visit(value: Any) -> Any:
            nonlocal changed
            if type(value) is str:
                key_id = token_key_id(value)
                if key_id is None or key_id == self.current or key_id not in self._ciphers:
                    return value
                changed = True
                return self.encrypt(self.decrypt(value, workspace_id), workspace_id)
            if isinstance(value, dict):
                return {k: visit(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [visit(v) for v in value]
            return value

        return visit(obj), changed
