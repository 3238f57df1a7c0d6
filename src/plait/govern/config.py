"""A workspace's governance configuration, compiled once per change.

The documents live in workspace_settings (``tracking_plans``, ``transformations``, ``pii``,
``consent``, ``retention``), written by ``plait apply`` or the API. The pipeline and the
collection endpoints both ask :class:`GovernanceCache` for the compiled form: one query
reads a workspace's documents, and they are compiled again only when one changed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from plait.govern.consent import ConsentConfig, compile_consent
from plait.govern.pii import Keyring, PiiPolicy, compile_policy
from plait.govern.tracking_plan import DEFAULT_FORWARD_SOURCE, Plans, compile_plans
from plait.govern.transformations import TransformationSet, compile_transformations
from plait.identity.rules import Rules, from_dict
from plait.store.schema import sources, workspace_settings
from plait.store.workspaces import Invalid

SECTIONS = ("tracking_plans", "transformations", "pii", "consent", "retention")
PROTOCOLS_SOURCE = DEFAULT_FORWARD_SOURCE  # where forwarded violations go by default


@dataclass
class Governance:
    workspace_id: str
    sources: dict[str, str]  # name -> id
    plans: Plans
    transformations: TransformationSet
    consent: ConsentConfig
    rules: Rules
    pii_doc: dict[str, Any] | None = None
    keyring: Keyring | None = None
    _pii: dict[str, PiiPolicy | None] = field(default_factory=dict)

    @property
    def active_in_pipeline(self) -> bool:
        return bool(self.plans) or not self.transformations.empty

    def pii_for(self, source_id: str) -> PiiPolicy | None:
        """The PII policy for a source's messages: the workspace's, plus the fields its
        tracking plan classifies (compiled once per source)."""
        if source_id not in self._pii:
            self._pii[source_id] = compile_policy(self.pii_doc, self.plans.pii_fields(source_id))
        return self._pii[source_id]


def read_documents(conn: sa.Connection, workspace_id: str) -> dict[str, Any]:
    """The raw governance documents (and the identity rules) of a workspace, as JSON text."""
    query = sa.select(workspace_settings.c.key, workspace_settings.c.value).where(
        workspace_settings.c.workspace_id == workspace_id,
        workspace_settings.c.key.in_((*SECTIONS, "identity")),
    )
    docs = dict(conn.execute(query).all())
    query = sa.select(sources.c.name, sources.c.id).where(sources.c.workspace_id == workspace_id)
    docs["sources"] = orjson.dumps(dict(conn.execute(query).all())).decode()
    return docs


def compile_governance(
    workspace_id: str, docs: dict[str, Any], keyring: Keyring | None = None
) -> Governance:
    """Compile the documents (JSON text or parsed); raises Invalid naming the field."""

    def doc(key: str) -> Any:
        value = docs.get(key)
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    source_ids = doc("sources") or {}
    retention_days(doc("retention"))  # checked here with the rest; read by retention.py
    pii_doc = doc("pii")
    governance = Governance(
        workspace_id=workspace_id,
        sources=source_ids,
        plans=compile_plans(doc("tracking_plans"), source_ids),
        transformations=compile_transformations(doc("transformations"), source_ids),
        consent=compile_consent(doc("consent")),
        rules=from_dict(doc("identity")),
        pii_doc=pii_doc,
        keyring=keyring,
    )
    return governance


def retention_days(doc: Any) -> float | None:
    """The ``retention`` section's days, None when the workspace keeps everything."""
    if doc is None:
        return None
    days = doc.get("days") if isinstance(doc, dict) else None
    if isinstance(days, bool) or not isinstance(days, int | float) or days <= 0:
        raise Invalid("retention.days", "must be a positive number of days")
    return days


def check_keys(pii_doc: dict[str, Any] | None, keyring: Keyring | None) -> None:
    """A policy that encrypts needs the key when it is applied, not at the first event."""
    policy = compile_policy(pii_doc, None) if pii_doc else None
    if policy is not None and policy.encrypts and keyring is None:
        raise Invalid("pii", "the policy encrypts, but PLAIT_PII_KEYS is not set")


class GovernanceCache:
    """Compiled governance per workspace, re-read at most every ``ttl`` seconds (0: every
    call) and recompiled only when a document changed. Thread-safe."""

    def __init__(self, ttl_seconds: float = 0.0, keyring: Keyring | None = None):
        self.ttl = ttl_seconds
        self.keyring = keyring
        self._entries: dict[str, tuple[float, dict[str, Any], Governance]] = {}
        self._lock = threading.Lock()

    def get(self, conn_or_engine: sa.Connection | sa.Engine, workspace_id: str) -> Governance:
        now = time.monotonic()
        entry = self._entries.get(workspace_id)
        if entry is not None and entry[0] > now:
            return entry[2]
        if isinstance(conn_or_engine, sa.Engine):
            with conn_or_engine.connect() as conn:
                docs = read_documents(conn, workspace_id)
        else:
            docs = read_documents(conn_or_engine, workspace_id)
        if entry is not None and entry[1] == docs:
            governance = entry[2]
        else:
            governance = compile_governance(workspace_id, docs, self.keyring)
        with self._lock:
            self._entries[workspace_id] = (now + self.ttl, docs, governance)
        return governance

    def invalidate(self, workspace_id: str | None = None) -> None:
        with self._lock:
            if workspace_id is None:
                self._entries.clear()
            else:
                self._entries.pop(workspace_id, None)
