"""Prefixed identifiers and secrets."""

import hashlib
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int = 32) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str) -> str:
    """An internal id such as ``src_3fK...``: the prefix says what it identifies."""
    return f"{prefix}_{random_token(20)}"


def hash_secret(secret: str) -> str:
    """Write keys and tokens are stored as their SHA-256; they are long random strings,
    so a fast hash is enough (there is nothing to brute-force)."""
    return hashlib.sha256(secret.encode()).hexdigest()
