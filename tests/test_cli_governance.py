"""The governance commands run for real on an embedded store: ``plait violations``, ``plait
plan infer|lint|show``, ``plait quarantine list|replay``, ``plait transform dry-run`` and
``plait pii generate-key|rotate-key``.

Workspaces are configured with ``plait apply``, messages go through the collection code
(``prepare`` with the ingestion guards, then the log backend) and the pipeline runs through
``plait worker --once``. Errors must be a message and a non-zero exit: exceptions are not
caught by the runner, so a traceback fails the test.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from plait.cli import app
from plait.collect.guard import IngestGuards
from plait.collect.ingest import prepare
from plait.demo import Cast
from plait.govern.pii import Keyring
from plait.govern.rotation import rotate_log
from plait.log import backend_for
from plait.settings import get_settings
from plait.spec import Enrichment
from plait.store import Store, open_store
from plait.store.schema import (
    identifiers,
    identity_removals,
    log_messages,
    message_profiles,
    metadata,
    traits,
)
from plait.store.workspaces import Workspaces


class Cli:
    """``plait`` against one SQLite store, and the collection path into its log."""

    def __init__(self, tmp_path: Path, store: Store):
        self.tmp_path = tmp_path
        self.store = store
        self.repo = Workspaces(store)
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True, keys: str = "", input: str | None = None):
        get_settings.cache_clear()  # PLAIT_PII_KEYS is read per command, as in a shell
        # `plait worker` points the root logger at its stderr, which the runner closes after.
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            result = self.runner.invoke(
                app, list(args), env={"PLAIT_PII_KEYS": keys}, input=input, catch_exceptions=False
            )
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        assert "Traceback" not in result.output
        # As one line: Rich wraps at 80 columns, and typer's usage errors come in a box.
        result.error = " ".join(result.stderr.replace("│", " ").split())
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code != 0, result.output
        return result

    def json(self, *args: str, **kwargs):
        return json.loads(self(*args, **kwargs).stdout)

    def file(self, name: str, content: str | dict | list) -> str:
        path = self.tmp_path / name
        if not isinstance(content, str):
            content = yaml.safe_dump(content, sort_keys=False)
        path.write_text(content)
        return str(path)

    def apply(self, doc: dict, keys: str = "") -> str:
        return self("apply", self.file("workspace.yaml", doc), keys=keys).output

    def ingest(self, messages: list[dict], keys: str = "", source: str = "Website") -> int:
        """Messages through the collection API's code: validated, enriched, the workspace's
        PII policy applied, then appended to the log."""
        workspace_id = self.repo.get_workspace("acme")["id"]
        source_id = self.repo.get_source(workspace_id, source)["id"]
        keyring = Keyring.parse(keys) if keys else None
        guard = IngestGuards(self.store.engine, 0.0, keyring).for_source(workspace_id, source_id)
        env = Enrichment(received_at=datetime.now(UTC), workspace_id=workspace_id,
                         source_id=source_id)  # fmt: skip
        prepared = prepare(copy.deepcopy(messages), None, env, guard)
        assert not prepared.rejected
        return backend_for(self.store).append(prepared.rows)

    @property
    def workspace_id(self) -> str:
        return self.repo.get_workspace("acme")["id"]


@pytest.fixture
def cli(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'plait.db'}"
    monkeypatch.setenv("PLAIT_DATABASE_URL", url)
    monkeypatch.delenv("PLAIT_PII_KEYS", raising=False)
    get_settings.cache_clear()
    store = open_store(url, sqlite_synchronous="NORMAL")
    yield Cli(tmp_path, store)
    store.dispose()
    get_settings.cache_clear()


WORKSPACE = {"slug": "acme", "name": "Acme"}
SOURCES = [{"name": "Website", "type": "javascript"}]
PLAN = {
    "id": "main",
    "name": "Main plan",
    "sources": ["Website"],
    "modes": {"unplanned_event": "block"},
    "events": {
        "Order Completed": {
            "properties": {
                "type": "object",
                "required": ["order_id"],
                "properties": {"order_id": {"type": "string"}, "revenue": {"type": "number"}},
            }
        }
    },
}


def workspace(**sections) -> dict:
    return {"workspace": WORKSPACE, "sources": SOURCES, **sections}


def track(user: str, event: str, **properties) -> dict:
    return {"type": "track", "userId": user, "event": event, "properties": properties}


ORDERS = [
    track("u1", "Order Completed", order_id="o1", revenue=10),
    track("u1", "Order Completed", order_id="o2", revenue="ten"),  # schema violation
    track("u2", "Order Completed", order_id="o3", coupon="X"),  # unplanned property
    track("u2", "Cart Viewed", n=1),  # unplanned event: blocked
]


def orders_processed(cli: Cli) -> None:
    assert "updated: setting tracking_plans" in cli.apply(workspace(tracking_plans=[PLAN]))
    assert cli.ingest(ORDERS) == 4
    assert "processed 4 messages" in cli("worker", "--once").output


# Violations ---------------------------------------------------------------------------------


def test_violations_are_counted_and_listed(cli):
    orders_processed(cli)
    table = cli("violations", "-w", "acme").stdout
    assert "Order Completed" in table and "Cart Viewed" in table
    counts = cli.json("violations", "-w", "acme", "--json")
    assert [(r["event_name"], r["violations"], r["messages"]) for r in counts] == [
        ("Order Completed", 2, 2), ("Cart Viewed", 1, 1)
    ]  # fmt: skip
    by_property = cli.json("violations", "-w", "acme", "--group-by", "property", "--json")
    assert {r["field"] for r in by_property} == {
        "event", "properties.revenue", "properties.coupon"
    }  # fmt: skip
    by_type = cli.json("violations", "-w", "acme", "--group-by", "type", "--json")
    assert {r["kind"]: r["violations"] for r in by_type} == {
        "unplanned_event": 1, "schema_violation": 1, "unplanned_property": 1
    }  # fmt: skip
    website = cli.repo.get_source(cli.workspace_id, "Website")["id"]
    by_source = cli.json("violations", "-w", "acme", "--group-by", "source", "--json")
    assert [(r["source_id"], r["violations"]) for r in by_source] == [(website, 3)]

    listed = cli.json("violations", "-w", "acme", "--list", "--json")
    assert {(r["event_name"], r["kind"], r["action"]) for r in listed} == {
        ("Cart Viewed", "unplanned_event", "blocked"),
        ("Order Completed", "schema_violation", "allowed"),
        ("Order Completed", "unplanned_property", "allowed"),
    }
    assert listed[0]["log_offset"] == max(r["log_offset"] for r in listed)  # latest first
    assert len(cli.json("violations", "-w", "acme", "--list", "--limit", "1", "--json")) == 1
    assert "blocked" in cli("violations", "-w", "acme", "--list").stdout
    only = cli.json("violations", "-w", "acme", "--event", "Cart Viewed", "--json")
    assert [r["event_name"] for r in only] == ["Cart Viewed"]
    assert cli.json("violations", "-w", "acme", "--source", "Website", "--json") == counts

    bad = cli("violations", "-w", "acme", "--group-by", "sideways", ok=False)
    assert bad.exit_code == 1 and "group_by must be one of" in bad.error
    bad = cli("violations", "-w", "acme", "--source", "Nowhere", ok=False)
    assert bad.exit_code == 1 and "not found" in bad.error


def test_no_violations_without_a_plan(cli):
    cli.apply(workspace())
    cli.ingest(ORDERS)
    cli("worker", "--once")
    assert "No violations." in cli("violations", "-w", "acme").stdout
    assert cli.json("violations", "-w", "acme", "--json") == []


# Tracking plans: show, versions, quarantine ----------------------------------------------------


def test_quarantine_replays_after_the_plan_is_fixed(cli):
    orders_processed(cli)
    table = cli("quarantine", "list", "-w", "acme").stdout
    assert "Cart Viewed" in table and "1 message(s) in quarantine" in table
    held = cli.json("quarantine", "list", "-w", "acme", "--json")
    assert held["total"] == 1
    [entry] = held["messages"]
    assert entry["message"]["event"] == "Cart Viewed"
    assert (entry["plan_id"], entry["plan_version"]) == ("main", 1)
    assert "Cart Viewed" in entry["reason"]

    assert yaml.safe_load(cli("plan", "show", "main", "-w", "acme").stdout) == {
        **PLAN, "version": 1
    }  # fmt: skip
    fixed = {**PLAN, "events": {**PLAN["events"], "Cart Viewed": {}}}
    assert "updated: setting tracking_plans" in cli.apply(workspace(tracking_plans=[fixed]))
    assert yaml.safe_load(cli("plan", "show", "main", "-w", "acme").stdout)["version"] == 2
    versions = cli.json("plan", "show", "main", "-w", "acme", "--versions")
    assert [v["version"] for v in versions] == [1, 2]
    assert "Cart Viewed" not in versions[0]["plan"]["events"]
    assert "Cart Viewed" in versions[1]["plan"]["events"]
    missing = cli("plan", "show", "nope", "-w", "acme", ok=False)
    assert missing.exit_code == 1 and "'nope' not found" in missing.error
    missing = cli("plan", "show", "nope", "-w", "acme", "--versions", ok=False)
    assert missing.exit_code == 1 and "'nope' not found" in missing.error

    out = cli("quarantine", "replay", "-w", "acme").stdout
    assert "replayed 1: 1 passed, 0 still blocked" in out
    assert cli.json("quarantine", "list", "-w", "acme", "--json") == {"total": 0, "messages": []}
    # Its violations are those of plan v2 (its property "n" is not planned, and allowed),
    # and the event reached a profile.
    listed = cli.json("violations", "-w", "acme", "--list", "--event", "Cart Viewed", "--json")
    assert [(r["kind"], r["field"], r["action"]) for r in listed] == [
        ("unplanned_property", "properties.n", "allowed")
    ]  # fmt: skip
    with cli.store.engine.connect() as conn:
        profile = conn.scalar(
            sa.select(message_profiles.c.profile_id).where(
                message_profiles.c.event == "Cart Viewed"
            )
        )
    assert profile is not None
    [record] = [
        json.loads(line)
        for line in cli(
            "audit", "-w", "acme", "--action", "quarantine.replay", "--json"
        ).stdout.splitlines()
    ]
    assert record["details"] == {"replayed": 1, "passed": 1, "blocked": 0}
    assert "replayed 0: 0 passed" in cli("quarantine", "replay", "-w", "acme").stdout


def test_replay_of_chosen_offsets_keeps_what_still_fails(cli):
    orders_processed(cli)
    cli.ingest([track("u3", "Wishlist Viewed")])
    cli("worker", "--once")
    held = cli.json("quarantine", "list", "-w", "acme", "--json")["messages"]
    offsets = {m["message"]["event"]: m["log_offset"] for m in held}
    assert set(offsets) == {"Cart Viewed", "Wishlist Viewed"}
    # Not fixed: replaying one offset blocks it again, the other is not touched.
    out = cli("quarantine", "replay", "-w", "acme", "--offset", str(offsets["Cart Viewed"]))
    assert "replayed 1: 0 passed, 1 still blocked" in out.stdout
    assert cli.json("quarantine", "list", "-w", "acme", "--json")["total"] == 2
    assert (
        len(cli.json("quarantine", "list", "-w", "acme", "--limit", "1", "--json")["messages"]) == 1
    )


RENAME = [{"name": "rename", "rules": [
    {"rename_event": {"from": "Cart Viewed", "to": "Basket Viewed"}}
]}]  # fmt: skip


def test_an_inferred_plan_applies_and_the_stream_passes_it(cli):
    # Plans check messages as the transformations leave them: so does the draft.
    cli.apply(workspace(transformations=RENAME))
    messages = list(Cast(people=25, seed=3).messages())
    cli.ingest(messages)
    cli("worker", "--once")

    path = cli.tmp_path / "inferred.yaml"
    out = cli("plan", "infer", "-w", "acme", "--id", "drafted", "-o", str(path)).stdout
    doc = yaml.safe_load(path.read_text())
    [plan] = doc["tracking_plans"]
    assert f"wrote {len(plan['events'])} events" in out
    assert doc["workspace"] == {"slug": "acme"}
    assert plan["id"] == "drafted" and plan["sources"] == ["Website"]
    with cli.store.engine.connect() as conn:  # with the "Email Clicked" derived from pages
        payloads = conn.scalars(sa.select(log_messages.c.payload)).all()
    events = {m["event"] for m in map(orjson.loads, payloads) if m["type"] == "track"}
    assert "Cart Viewed" in events and len(events) >= 5
    assert set(plan["events"]) == events - {"Cart Viewed"} | {"Basket Viewed"}
    assert {"identify", "page"} <= set(plan)
    # To stdout: the same document.
    assert yaml.safe_load(cli("plan", "infer", "-w", "acme", "--id", "drafted").stdout) == doc

    assert "updated: setting tracking_plans" in cli("apply", str(path)).output
    assert "rebuilt from" in cli("rebuild", "-w", "acme", "--yes").output
    assert cli.json("violations", "-w", "acme", "--json") == []
    # Strictest modes: nothing of the same stream is omitted or blocked either.
    plan["modes"] = {"unplanned_event": "block", "unplanned_property": "block",
                     "schema_violation": "block"}  # fmt: skip
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cli("apply", str(path))
    cli("rebuild", "-w", "acme", "--yes")
    assert cli.json("violations", "-w", "acme", "--json") == []
    assert cli.json("quarantine", "list", "-w", "acme", "--json")["total"] == 0
    # The plan is connected to the source: an event it does not know is blocked.
    cli.ingest([track("u1", "Never Seen")])
    cli("worker", "--once")
    held = cli.json("quarantine", "list", "-w", "acme", "--json")
    assert [m["message"]["event"] for m in held["messages"]] == ["Never Seen"]

    bad = cli("plan", "infer", "-w", "acme", "--source", "Nowhere", ok=False)
    assert bad.exit_code == 1 and "not found" in bad.error
    bad = cli("plan", "infer", "-w", "acme", "-o", str(cli.tmp_path / "no" / "x.yaml"), ok=False)
    assert bad.exit_code == 1 and "x.yaml" in bad.error


# Plan lint --------------------------------------------------------------------------------------

LEGACY = {
    "id": "legacy",
    "events": {
        "order_completed": {
            "properties": {"type": "object", "properties": {"orderId": {"type": "string"}}}
        }
    },
}


def test_plan_lint(cli):
    cli.apply(workspace(tracking_plans=[PLAN, LEGACY]))
    assert "Names follow the standard." in cli("plan", "lint", "main", "-w", "acme").stdout
    bad = cli("plan", "lint", "legacy", "-w", "acme", ok=False)
    assert bad.exit_code == 1
    assert "'order_completed' is not object_action" in bad.stdout
    assert "'orderId' is not snake_case" in bad.stdout
    assert cli("plan", "lint", "-w", "acme", ok=False).exit_code == 1  # every plan
    # The standard can be chosen: main's properties are not camelCase.
    bad = cli("plan", "lint", "main", "-w", "acme", "--properties", "camelCase", ok=False)
    assert bad.exit_code == 1 and "'order_id' is not camelCase" in bad.stdout
    assert cli("plan", "lint", "legacy", "-w", "acme", "--events", "snake_case",
               "--properties", "camelCase").exit_code == 0  # fmt: skip
    # A file: a plan, or a workspace file.
    assert cli("plan", "lint", "--file", cli.file("plan.yaml", PLAN)).exit_code == 0
    bad = cli("plan", "lint", "--file", cli.file("ws.yaml", workspace(tracking_plans=[LEGACY])),
              ok=False)  # fmt: skip
    assert bad.exit_code == 1 and "order_completed" in bad.stdout

    missing = cli("plan", "lint", "nope", "-w", "acme", ok=False)
    assert missing.exit_code == 1 and "'nope' not found" in missing.error
    unknown = cli("plan", "lint", "main", "-w", "acme", "--events", "kebab", ok=False)
    assert unknown.exit_code == 1 and "unknown naming standard 'kebab'" in unknown.error
    broken = cli("plan", "lint", "--file", cli.file("broken.yaml", "events: [\n"), ok=False)
    assert broken.exit_code == 1 and "not a YAML file" in broken.error
    wrong = cli("plan", "lint", "--file", cli.file("list.yaml", "tracking_plans: 3\n"), ok=False)
    assert wrong.exit_code == 1 and "tracking_plans list" in wrong.error
    absent = cli("plan", "lint", "--file", str(cli.tmp_path / "absent.yaml"), ok=False)
    assert absent.exit_code == 2 and "does not exist" in absent.error


# Transformations ------------------------------------------------------------------------------

TRANSFORMATIONS = [
    {
        "name": "tidy",
        "sources": ["Website"],
        "rules": [
            {"rename_event": {"from": "Order Done", "to": "Order Completed"}},
            {"derive_property": {"name": "properties.revenue_cents",
                                 "expr": "round(properties.revenue * 100)"}},
            {"drop_event": "properties.internal == true"},
        ],
    }
]  # fmt: skip


def test_transform_dry_run(cli):
    cli.apply(workspace(transformations=TRANSFORMATIONS))
    sent = {"type": "track", "event": "Order Done", "properties": {"revenue": 2}}
    message = cli.file("message.json", json.dumps(sent))
    dry = cli.json("transform", "dry-run", message, "-w", "acme", "--source", "Website")
    assert dry["before"] == sent and dry["applied"] == ["tidy"] and not dry["dropped"]
    assert dry["after"]["event"] == "Order Completed"
    assert dry["after"]["properties"] == {"revenue": 2, "revenue_cents": 200}
    internal = cli.file("internal.json", json.dumps({**sent, "properties": {"internal": True}}))
    dropped = cli.json("transform", "dry-run", internal, "-w", "acme", "--source", "Website")
    assert dropped["dropped"] and dropped["after"] is None

    # --file: transformations being written, instead of the workspace's.
    other = cli.file("other.yaml", {"transformations": [
        {"name": "shout", "rules": [{"rename_event": {"from": "Order Done", "to": "ORDER"}}]}
    ]})  # fmt: skip
    dry = cli.json("transform", "dry-run", message, "-w", "acme", "--file", other)
    assert dry["after"]["event"] == "ORDER" and dry["applied"] == ["shout"]

    hostile = cli.file("hostile.yaml", {"transformations": [
        {"name": "x", "rules": [{"drop_event": "__import__('os')"}]}
    ]})  # fmt: skip
    bad = cli("transform", "dry-run", message, "-w", "acme", "--file", hostile, ok=False)
    assert bad.exit_code == 1 and "transformations[0].rules[0].drop_event" in bad.error
    broken = cli.file("broken.yaml", "transformations: [\n")
    bad = cli("transform", "dry-run", message, "-w", "acme", "--file", broken, ok=False)
    assert bad.exit_code == 1 and "not a YAML file" in bad.error
    for name, content, expected in (
        ("truncated.json", '{"type": "track", "event": ', "not a JSON message"),
        ("binary.json", b"\xff\xfe\x00garbage", "not a JSON message"),
        ("list.json", "[1, 2]", "message: must be an object"),
    ):
        path = cli.tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        bad = cli("transform", "dry-run", str(path), "-w", "acme", ok=False)
        assert bad.exit_code == 1 and expected in bad.error, name
    bad = cli("transform", "dry-run", message, "-w", "acme", "--source", "Nowhere", ok=False)
    assert bad.exit_code == 1 and "not found" in bad.error
    absent = cli("transform", "dry-run", str(cli.tmp_path / "absent.json"), "-w", "acme", ok=False)
    assert absent.exit_code == 2 and "does not exist" in absent.error


# PII keys and their rotation -----------------------------------------------------------------


def test_generated_keys_are_valid_for_plait_pii_keys(cli):
    first = cli("pii", "generate-key", "--id", "k7").stdout.strip()
    second = cli("pii", "generate-key", "--id", "k7").stdout.strip()
    assert first != second
    key_id, _, encoded = first.partition(":")
    assert key_id == "k7" and len(base64.b64decode(encoded, validate=True)) == 64
    keyring = Keyring.parse(first)
    assert keyring.key_ids == ("k7",)
    assert keyring.decrypt(keyring.encrypt("x", "ws_1"), "ws_1") == "x"
    assert cli("pii", "generate-key").stdout.startswith("k1:")
    bad = cli("pii", "generate-key", "--id", "not ok", ok=False)
    assert bad.exit_code == 1 and "key id" in bad.error


PII = {"fields": {"traits.secret_note": "encrypt", "traits.email": "encrypt"}}
PEOPLE = [
    {"type": "identify", "userId": "u1",
     "traits": {"email": "Jo@X.com", "secret_note": "likes cats", "name": "Jo"}},
    {"type": "identify", "anonymousId": "a1", "traits": {"email": "jo@x.com"}},  # same email
    {"type": "identify", "anonymousId": "a2",
     "traits": {"email": "bo@y.com", "secret_note": "dogs"}},
    track("u1", "Order Completed", order_id="o1"),
]  # fmt: skip


def people_encrypted_under(cli: Cli, keys: str) -> None:
    refused = cli("apply", cli.file("workspace.yaml", workspace(pii=PII)), ok=False)
    assert refused.exit_code == 1 and "PLAIT_PII_KEYS" in refused.error
    assert "updated: setting pii" in cli.apply(workspace(pii=PII), keys=keys)
    assert cli.ingest(PEOPLE, keys=keys) == 4
    assert "processed 4 messages" in cli("worker", "--once").output


def texts(store: Store, pattern: str) -> dict[str, int]:
    """Rows per table holding ``pattern`` in any text column, over the whole database."""
    found = {}
    with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, sa.String | sa.Text)]
            if not columns:
                continue
            match = sa.or_(*(c.contains(pattern, autoescape=True) for c in columns))
            count = conn.scalar(sa.select(sa.func.count()).select_from(table).where(match))
            if count:
                found[table.name] = count
    return found


def profile_of(cli: Cli, ref: str) -> str:
    return cli.json("profiles", "explain", ref, "-w", "acme", "--json")["profile_id"]


def test_rotate_key_reencrypts_the_log_and_rebuilds_the_profiles(cli):
    k1 = cli("pii", "generate-key", "--id", "k1").stdout.strip()
    k2 = cli("pii", "generate-key", "--id", "k2").stdout.strip()
    people_encrypted_under(cli, k1)
    assert {"log_messages", "identifiers", "traits"} <= set(texts(cli.store, "enc:v1:k1:"))
    assert not texts(cli.store, "jo@x.com") and not texts(cli.store, "likes cats")
    # The shared email is encrypted deterministically: one identifier joined u1 and a1. An
    # operator removes it (kept as stored, so under k1) and the two profiles split.
    with cli.store.engine.connect() as conn:
        email = conn.scalar(sa.select(identifiers.c.value).where(
            identifiers.c.type == "email", identifiers.c.profile_id.in_(
                sa.select(identifiers.c.profile_id).where(identifiers.c.value == "u1"))
        ))  # fmt: skip
    assert email.startswith("enc:v1:k1:") and profile_of(cli, "anonymous_id:a1") == profile_of(
        cli, "user_id:u1"
    )
    cli("profiles", "unmerge", "user_id:u1", "-i", f"email:{email}", "-w", "acme")
    assert profile_of(cli, "anonymous_id:a1") != profile_of(cli, "user_id:u1")

    missing = cli("pii", "rotate-key", "-w", "acme", "--yes", ok=False)
    assert missing.exit_code == 1 and "PLAIT_PII_KEYS is not set" in missing.error
    malformed = cli("pii", "rotate-key", "-w", "acme", "--yes", keys="k2:short", ok=False)
    assert malformed.exit_code == 1 and "PLAIT_PII_KEYS" in malformed.error
    declined = cli("pii", "rotate-key", "-w", "acme", keys=f"{k2},{k1}", input="n\n", ok=False)
    assert declined.exit_code == 1 and "under key k2?" in declined.output
    assert not texts(cli.store, "enc:v1:k2:")

    out = cli("pii", "rotate-key", "-w", "acme", "--yes", keys=f"{k2},{k1}").stdout
    # The unmerge's records: the removal, and a lineage entry for each of the two parts.
    assert "re-encrypted 3 message(s) and 3 unmerge record(s)" in out
    assert "rebuilt profiles from 4 messages" in out
    assert texts(cli.store, "enc:v1:k1:") == {}
    assert {"log_messages", "identifiers", "traits", "identity_removals"} <= set(
        texts(cli.store, "enc:v1:k2:")
    )
    # Everything decrypts with the new key alone.
    new_only = Keyring.parse(k2)
    ws = cli.workspace_id
    with cli.store.engine.connect() as conn:
        payloads = conn.scalars(sa.select(log_messages.c.payload)).all()
        u1 = conn.scalar(sa.select(identifiers.c.profile_id).where(identifiers.c.value == "u1"))
        stored = dict(conn.execute(sa.select(traits.c.key, traits.c.value).where(
            traits.c.profile_id == u1)).all())  # fmt: skip
        [removed] = conn.scalars(sa.select(identity_removals.c.a_value)).all()
    for payload in payloads:
        assert b"enc:v1:" not in orjson.dumps(new_only.decrypt_values(orjson.loads(payload), ws))
    clear = new_only.decrypt_values({k: json.loads(v) for k, v in stored.items()}, ws)
    assert clear == {"email": "jo@x.com", "secret_note": "likes cats", "name": "Jo"}
    assert new_only.decrypt(removed, ws) == "jo@x.com"
    # The unmerge still holds after the rebuild: it names the identifier as now stored.
    assert profile_of(cli, "anonymous_id:a1") != profile_of(cli, "user_id:u1")

    audit = cli("audit", "-w", "acme", "--action", "pii.rotate_key", "--json").stdout
    [record] = [json.loads(line) for line in audit.splitlines()]
    assert record["target"] == "k2"
    assert record["details"]["messages"] == 3 and record["details"]["unmerges"] == 3

    again = cli("pii", "rotate-key", "-w", "acme", "--yes", keys=f"{k2},{k1}").stdout
    assert "re-encrypted 0 message(s)" in again and "rebuilt" not in again
    # Without the key the log is now under: nothing can be rotated, and it says so.
    stuck = cli("pii", "rotate-key", "-w", "acme", "--yes", keys=k1, ok=False)
    assert stuck.exit_code == 1 and "3 message(s) hold values under key(s) k2" in stuck.error
    assert texts(cli.store, "enc:v1:k1:") == {}


def test_a_rotation_stopped_before_the_rebuild_is_finished_by_running_it_again(cli):
    k1 = cli("pii", "generate-key", "--id", "k1").stdout.strip()
    k2 = cli("pii", "generate-key", "--id", "k2").stdout.strip()
    people_encrypted_under(cli, k1)
    # The log step alone, as if the command was stopped before its rebuild.
    assert rotate_log(cli.store, cli.workspace_id, Keyring.parse(f"{k2},{k1}")).messages == 3
    assert set(texts(cli.store, "enc:v1:k1:")) >= {"identifiers", "traits"}
    assert "log_messages" not in texts(cli.store, "enc:v1:k1:")
    out = cli("pii", "rotate-key", "-w", "acme", "--yes", keys=f"{k2},{k1}").stdout
    assert "re-encrypted 0 message(s)" in out and "rebuilt profiles from 4 messages" in out
    assert texts(cli.store, "enc:v1:k1:") == {}


# Bad input ------------------------------------------------------------------------------------

COMMANDS = [
    ("violations",),
    ("plan", "infer"),
    ("plan", "lint"),
    ("plan", "show", "main"),
    ("quarantine", "list"),
    ("quarantine", "replay"),
    ("pii", "rotate-key", "--yes"),
]


@pytest.mark.parametrize("command", [*COMMANDS, ("transform", "dry-run", "MESSAGE")],
                         ids=lambda c: " ".join(c))  # fmt: skip
def test_an_unknown_workspace_is_a_clear_error(cli, command):
    cli.apply(workspace())
    message = cli.file("message.json", '{"type": "track", "event": "X"}')
    args = [message if arg == "MESSAGE" else arg for arg in command]
    keys = cli("pii", "generate-key").stdout.strip()
    result = cli(*args, "-w", "nowhere", keys=keys, ok=False)
    assert result.exit_code == 1 and "not found" in result.error
    assert result.stdout == ""


def test_file_import_applies_the_pii_policy_and_suppressions(cli):
    """`plait import` goes through the same guard as the HTTP API."""
    import hashlib

    from plait.govern.identity_hash import identity_hash
    from plait.store.schema import log_messages, suppressions

    cli.apply({"workspace": WORKSPACE, "sources": SOURCES,
               "pii": {"actions": {"email": "hash"}}})  # fmt: skip
    with cli.store.engine.begin() as conn:  # u-9 suppressed (as a privacy request does)
        conn.execute(suppressions.insert().values(
            workspace_id=cli.workspace_id, value_hash=identity_hash(cli.workspace_id, "user_id",
                                                                    "u-9"),
            type="user_id", request_id="reg_test", created_at=0))  # fmt: skip
    rows = [
        {"type": "identify", "userId": "u-1", "traits": {"email": "Jo@X.com"}},
        {"type": "identify", "userId": "u-9", "traits": {"email": "nine@x.com"}},
    ]
    path = cli.file("people.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    cli("import", path, "--source", "Website", "-w", "acme")
    with cli.store.engine.connect() as conn:
        payloads = conn.scalars(sa.select(log_messages.c.payload)).all()
    assert len(payloads) == 1
    assert "Jo@X.com" not in payloads[0] and "jo@x.com" not in payloads[0]
    assert hashlib.sha256(b"jo@x.com").hexdigest() in payloads[0]
