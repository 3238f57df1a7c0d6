"""The one way Plait records an identity without keeping it: suppressions, privacy requests
and the messages the pipeline gave no profile refer to people by this hash."""

from __future__ import annotations

import hashlib


def identity_hash(workspace_id: str, type_name: str, value: str) -> str:
    """SHA-256 of the workspace, the identifier type and its normalized value. Salted with
    the workspace id, so the same person hashes differently in two workspaces."""
    return hashlib.sha256(f"{workspace_id}\x1f{type_name}\x1f{value}".encode()).hexdigest()
