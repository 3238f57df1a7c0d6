"""Erasing people: every row Plait holds about a person, removed in one transaction that
holds the workspace's pipeline lock (no pipeline batch interleaves), then removed physically
(SQLite: the WAL checkpointed and truncated, freed cells zeroed by ``secure_delete``;
PostgreSQL: the touched tables vacuumed).

A person is everything their identifiers lead to: the profile an identifier resolves to,
the profiles merged into it, every identifier of those (the whole person), and the log
messages that are theirs: the ones the pipeline gave their profiles (``message_profiles``),
the ones it gave no profile (blocked or dropped by governance: ``unlinked_messages``, found
by identity hash) and the ones it has not processed yet whose identifiers are theirs.

The erasure is a list of steps (``ERASURE_STEPS``, in the transaction, and
``AFTER_COMMIT_STEPS``); later parts of Plait (the lake, pending deliveries) add theirs.
Accounts (group calls) are not a person's: they stay, without the person's membership and
without what the person's group calls set (an account trait falls back to its latest value
set by a message that remains, as a rebuild would compute it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from plait.govern.identity_hash import identity_hash
from plait.identity.identifiers import Identifier, extract
from plait.identity.rules import Rules
from plait.identity.stage import ACCOUNT_TYPE, alias_previous_id
from plait.store import Store
from plait.store.bulk import chunks, mark, select_in
from plait.store.locks import workspace_lock
from plait.store.schema import (
    account_members,
    checkpoints,
    consent_history,
    identifiers,
    identity_edges,
    identity_removals,
    lineage,
    log_messages,
    message_profiles,
    profile_consent,
    profiles,
    quarantine,
    trait_history,
    traits,
    unlinked_messages,
    violations,
)

READ_CHUNK = 5000  # log messages read at a time when scanning what is not processed yet
TRAIT_COLUMNS = ("profile_id", "key", "value", "timestamp", "log_offset", "source_id", "message_id")


def pipeline_consumer(workspace_id: str) -> str:
    """The pipeline's checkpoint name (plait.pipeline.runner.consumer_name: govern sits
    below the pipeline and may not import it; tests/test_privacy.py checks they agree)."""
    return f"pipeline:{workspace_id}"


@contextmanager
def workspace_write(store: Store, workspace_id: str) -> Iterator[sa.Connection]:
    """A write transaction no pipeline batch of the workspace interleaves with: on SQLite the
    store's write lock from the first statement (BEGIN IMMEDIATE), on PostgreSQL also the
    workspace's lock (plait.store.locks), waiting for a running batch to commit."""
    with store.write() as conn:
        workspace_lock(conn, workspace_id)
        yield conn


# Finding a person -----------------------------------------------------------------------


@dataclass
class Person:
    """One or more people (a request's subjects) and what Plait holds about them."""

    workspace_id: str
    # Every identifier, with the subject (its index in the request) it belongs to.
    identifiers: dict[Identifier, int] = field(default_factory=dict)
    profile_ids: set[str] = field(default_factory=set)  # live ones and those merged into them
    subjects_found: set[int] = field(default_factory=set)  # subjects with a profile or message
    processed: set[int] = field(default_factory=set)  # log offsets in message_profiles
    unlinked: set[int] = field(default_factory=set)  # log offsets in unlinked_messages
    unprocessed: set[int] = field(default_factory=set)  # after the pipeline's checkpoint
    accounts: set[str] = field(default_factory=set)  # accounts they are members of
    # Identifiers an operator's unmerge removed from their profiles (no longer theirs, but
    # named by the removal rules and the lineage).
    former: set[Identifier] = field(default_factory=set)
    held: set[Identifier] = field(default_factory=set)  # those in the identifiers table

    @property
    def offsets(self) -> set[int]:
        return self.processed | self.unlinked | self.unprocessed

    def hashes(self) -> dict[str, Identifier]:
        return {identity_hash(self.workspace_id, t, v): (t, v) for t, v in self.identifiers}

    def groups(self) -> dict[int, set[Identifier]]:
        """Each subject's identifiers (what one suppression lifts together)."""
        found: dict[int, set[Identifier]] = {}
        for ident, subject in self.identifiers.items():
            found.setdefault(subject, set()).add(ident)
        return found


def find_person(
    conn: sa.Connection,
    workspace_id: str,
    subjects: list[list[Identifier]],
    rules: Rules,
    messages: bool = True,
) -> Person:
    """The people ``subjects`` name (each subject: its identifiers in stored form), with
    their profiles, identifiers and (unless ``messages`` is false) their log messages, as
    ``conn``'s transaction sees them."""
    person = Person(workspace_id)
    for index, idents in enumerate(subjects):
        for ident in idents:
            person.identifiers.setdefault(ident, index)
    owners = _owners(conn, workspace_id, list(person.identifiers))
    group_of_profile: dict[str, int] = {}
    for ident, profile_id in owners.items():
        group_of_profile.setdefault(profile_id, person.identifiers[ident])
    live = set(owners.values())
    for pid, into in select_in(
        conn, "SELECT id, merged_into FROM profiles WHERE merged_into IN ({keys})", list(live)
    ):
        group_of_profile[pid] = group_of_profile[into]
    person.profile_ids = set(group_of_profile)
    if person.profile_ids:
        for type_name, value, profile_id in select_in(
            conn,
            "SELECT type, value, profile_id FROM identifiers WHERE profile_id IN ({keys})",
            list(person.profile_ids),
        ):
            if type_name != ACCOUNT_TYPE:
                person.identifiers.setdefault((type_name, value), group_of_profile[profile_id])
                person.held.add((type_name, value))
        person.processed = {
            offset
            for (offset,) in select_in(
                conn,
                "SELECT log_offset FROM message_profiles WHERE profile_id IN ({keys})",
                list(person.profile_ids),
            )
        }
        person.accounts = {
            account
            for (account,) in select_in(
                conn,
                "SELECT account_id FROM account_members WHERE profile_id IN ({keys})",
                list(person.profile_ids),
            )
        }
        for (details,) in select_in(
            conn,
            "SELECT details FROM lineage WHERE kind = 'unmerge' AND profile_id IN ({keys})",
            list(person.profile_ids),
        ):
            doc = orjson.loads(details)
            for key in ("removed", "linked_to"):
                if isinstance(doc.get(key), dict):
                    person.former.add((doc[key]["type"], doc[key]["value"]))
    person.subjects_found = set(group_of_profile.values())
    if not messages:
        return person
    _add_unprocessed(conn, person, rules)
    hashes = person.hashes()
    for value_hash, offset in select_in(
        conn,
        "SELECT value_hash, log_offset FROM unlinked_messages WHERE workspace_id = ? "
        "AND value_hash IN ({keys})",
        list(hashes),
        (workspace_id,),
    ):
        person.unlinked.add(offset)
        person.subjects_found.add(person.identifiers[hashes[value_hash]])
    return person


def _owners(
    conn: sa.Connection, workspace_id: str, wanted: list[Identifier]
) -> dict[Identifier, str]:
    """The profile owning each of ``wanted`` that has one."""
    by_type: dict[str, list[str]] = {}
    for type_name, value in wanted:
        by_type.setdefault(type_name, []).append(value)
    found = {}
    for type_name, values in by_type.items():
        for value, profile_id in select_in(
            conn,
            "SELECT value, profile_id FROM identifiers WHERE workspace_id = ? AND type = ? "
            "AND value IN ({keys})",
            values,
            (workspace_id, type_name),
        ):
            found[(type_name, value)] = profile_id
    return found


def unprocessed_messages(
    conn: sa.Connection, workspace_id: str, rules: Rules
) -> Iterator[tuple[int, list[Identifier], str | None]]:
    """The workspace's log messages after the pipeline's checkpoint: (offset, identifiers,
    an alias's previousId), read from their payloads as the pipeline will."""
    after = (
        conn.execute(
            sa.select(checkpoints.c.log_offset).where(
                checkpoints.c.consumer == pipeline_consumer(workspace_id)
            )
        ).scalar()
        or 0
    )
    while True:
        rows = conn.execute(
            sa.select(log_messages.c.log_offset, log_messages.c.payload)
            .where(log_messages.c.workspace_id == workspace_id, log_messages.c.log_offset > after)
            .order_by(log_messages.c.log_offset)
            .limit(READ_CHUNK)
        ).all()
        for offset, payload in rows:
            msg = orjson.loads(payload)
            yield offset, extract(msg, rules), alias_previous_id(msg, rules)
        if len(rows) < READ_CHUNK:
            return
        after = rows[-1][0]


def _add_unprocessed(conn: sa.Connection, person: Person, rules: Rules) -> None:
    """Messages the pipeline has not processed yet that carry one of the person's
    identifiers (or name one as an alias's previousId). Their other identifiers become the
    person's too, as the pipeline would join them, unless another profile owns them; that
    repeats until nothing new is found."""
    pending = []
    for offset, idents, previous in unprocessed_messages(conn, person.workspace_id, rules):
        keys = list(idents)
        if previous is not None:
            keys += [("user_id", previous), ("anonymous_id", previous)]
        if keys:
            pending.append((offset, idents, keys))
    while pending:
        matched, rest = [], []
        for entry in pending:
            hit = next((k for k in entry[2] if k in person.identifiers), None)
            (rest if hit is None else matched).append((entry, hit))
        if not matched:
            return
        new = {ident for (_, idents, _), _ in matched for ident in idents}
        owned = _owners(conn, person.workspace_id, [i for i in new if i not in person.identifiers])
        for (offset, idents, _), hit in matched:
            subject = person.identifiers[hit]
            person.unprocessed.add(offset)
            person.subjects_found.add(subject)
            for ident in idents:
                if ident not in owned:
                    person.identifiers.setdefault(ident, subject)
        pending = [entry for entry, _ in rest]


# Erasing --------------------------------------------------------------------------------


@dataclass
class Erasure:
    """One erasure in progress: the transaction, who, and the rows removed per table."""

    conn: sa.Connection
    workspace_id: str
    person: Person
    rules: Rules
    removed: dict[str, int] = field(default_factory=dict)

    def delete_in(
        self, table: sa.Table, column: str, keys: Iterable, where: str = "", fixed: tuple = ()
    ) -> int:
        """``DELETE FROM table WHERE [where AND] column IN keys``, in chunks; ``where`` uses
        ``?`` for the ``fixed`` parameters. Counts the rows under the table's name."""
        keys = sorted(set(keys))
        p = mark(self.conn.dialect)
        total = 0
        for part in chunks(keys):
            sql = (
                f"DELETE FROM {table.name} WHERE {where.replace('?', p)}"
                f"{' AND ' if where else ''}{column} IN ({', '.join([p] * len(part))})"
            )
            total += self.conn.exec_driver_sql(sql, (*fixed, *part)).rowcount
        name = str(table.name)  # a plain str: SQLAlchemy names are quoted_name
        self.removed[name] = self.removed.get(name, 0) + total
        return total


def erase_messages(e: Erasure) -> None:
    """The person's log messages and what governance and the pipeline recorded about them."""
    offsets, ws = e.person.offsets, e.workspace_id
    # unlinked_messages rows are keyed (workspace, hash, offset): the person's hashes go
    # whole, and the deleted messages' rows under the hashes of other values they carried
    # (read from the payloads before they go).
    own = e.person.hashes()
    others = set()
    if e.person.unlinked:
        for offset, payload in select_in(
            e.conn, "SELECT log_offset, payload FROM log_messages WHERE log_offset IN ({keys})",
            sorted(e.person.unlinked),
        ):  # fmt: skip
            for type_name, value in extract(orjson.loads(payload), e.rules):
                value_hash = identity_hash(ws, type_name, value)
                if value_hash not in own:
                    others.add((ws, value_hash, offset))
    e.delete_in(log_messages, "log_offset", offsets, "workspace_id = ?", (ws,))
    for table in (message_profiles, violations, quarantine):
        e.delete_in(table, "log_offset", offsets)
    e.delete_in(message_profiles, "profile_id", e.person.profile_ids)
    e.delete_in(unlinked_messages, "value_hash", own, "workspace_id = ?", (ws,))
    if others:
        p = mark(e.conn.dialect)
        result = e.conn.exec_driver_sql(
            f"DELETE FROM unlinked_messages WHERE workspace_id = {p} AND value_hash = {p} "
            f"AND log_offset = {p}",
            sorted(others),
        )
        e.removed["unlinked_messages"] += result.rowcount


def erase_account_data(e: Erasure) -> None:
    """Memberships, and what the person's group calls set on their accounts: those values
    go from the account's trait history, and a current value that came from one falls back
    to the latest value that remains (or goes), as a rebuild would compute it."""
    conn, offsets = e.conn, sorted(e.person.offsets)
    for account in sorted(e.person.accounts) if offsets else []:
        fallen = [
            key
            for (key,) in select_in(
                conn, "SELECT key FROM traits WHERE profile_id = ? AND log_offset IN ({keys})",
                offsets, (account,),
            )
        ]  # fmt: skip
        e.delete_in(trait_history, "log_offset", offsets, "profile_id = ?", (account,))
        e.delete_in(traits, "key", fallen, "profile_id = ?", (account,))
        for key in fallen:
            latest = (
                conn.execute(
                    sa.select(trait_history)
                    .where(trait_history.c.profile_id == account, trait_history.c.key == key)
                    .order_by(trait_history.c.timestamp.desc(), trait_history.c.log_offset.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
            if latest is not None:
                conn.execute(traits.insert().values({c: latest[c] for c in TRAIT_COLUMNS}))
    e.delete_in(account_members, "profile_id", e.person.profile_ids)


def erase_identity(e: Erasure) -> None:
    """Identifiers, the edges that joined them, merges and unmerges, operator removals."""
    ids = e.person.profile_ids
    for table in (identifiers, identity_edges):
        e.delete_in(table, "profile_id", ids)
    e.delete_in(lineage, "profile_id", ids)
    e.delete_in(lineage, "other_id", ids)
    named = sorted(set(e.person.identifiers) | e.person.former)
    removed = 0
    for part in chunks(named, 1000):
        removed += e.conn.execute(
            identity_removals.delete().where(
                identity_removals.c.workspace_id == e.workspace_id,
                sa.or_(
                    sa.tuple_(identity_removals.c.a_type, identity_removals.c.a_value).in_(part),
                    sa.tuple_(identity_removals.c.b_type, identity_removals.c.b_value).in_(part),
                ),
            )
        ).rowcount
    e.removed["identity_removals"] = removed


def erase_profiles(e: Erasure) -> None:
    """Traits and their history, consent and its history, the profiles themselves."""
    ids = e.person.profile_ids
    for table in (traits, trait_history, profile_consent, consent_history):
        e.delete_in(table, "profile_id", ids)
    e.delete_in(profiles, "id", ids)


Step = Callable[[Erasure], None]
# In the deletion's transaction, in order. A part of Plait that keeps more about people
# appends its own step.
ERASURE_STEPS: list[Step] = [erase_messages, erase_account_data, erase_identity, erase_profiles]


def erase(
    store: Store,
    workspace_id: str,
    subjects: list[list[Identifier]],
    rules: Rules,
    before: Callable[[sa.Connection, Person], None] | None = None,
) -> Erasure:
    """Find and delete the people ``subjects`` name, in one transaction holding the
    workspace's pipeline lock; ``before(conn, person)`` runs in it first (a suppression of
    identifiers found only now). Physical removal is ``make_physical``'s, after the commit."""
    with workspace_write(store, workspace_id) as conn:
        if store.kind == "sqlite":
            # Deleted cells are overwritten with zeros (a connection setting; Plait's store
            # turns it on for every connection, this makes sure of it for this one).
            conn.exec_driver_sql("PRAGMA secure_delete=ON")
        person = find_person(conn, workspace_id, subjects, rules)
        if before is not None:
            before(conn, person)
        erasure = Erasure(conn, workspace_id, person, rules)
        for step in ERASURE_STEPS:
            step(erasure)
    return erasure


# Physical removal -----------------------------------------------------------------------


class PurgeIncomplete(RuntimeError):
    pass


def make_physical(store: Store, erasure: Erasure) -> dict[str, Any]:
    """After the commit, make the deletion physical. SQLite: checkpoint the WAL into the
    database file and truncate it (the deleted rows' old pages were in it); the database's
    own pages had the deleted cells zeroed. PostgreSQL: VACUUM the tables rows left, so
    their dead tuples (and index entries) go."""
    if store.kind == "sqlite":
        return {"sqlite_wal": checkpoint_wal(store)}
    tables = sorted(name for name, count in erasure.removed.items() if count)
    vacuum(store, tables)
    return {"vacuumed": tables}


def checkpoint_wal(store: Store, attempts: int = 50, pause: float = 0.1) -> str:
    """``PRAGMA wal_checkpoint(TRUNCATE)``, again while a reader holds an older snapshot."""
    with store.engine.connect() as conn:
        for _ in range(attempts):
            busy, _frames, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            if not busy:
                return "checkpointed and truncated"
            time.sleep(pause)
    raise PurgeIncomplete(
        f"the WAL stayed busy for {attempts * pause:.0f} s; the deleted rows' old pages "
        "leave it at the next checkpoint"
    )


def vacuum(store: Store, tables: Iterable[str]) -> None:
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name in tables:
            conn.exec_driver_sql(f"VACUUM {name}")
