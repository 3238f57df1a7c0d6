"""``plait violations``, ``plait plan``, ``plait quarantine``, ``plait transform`` and
``plait pii``: governance from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
import yaml
from rich.table import Table

from plait.cli import WorkspaceOpt, _print_json, _repo_and_workspace, console, err, fail
from plait.store.workspaces import Invalid, NotFound

plan_app = typer.Typer(help="Tracking plans: infer, lint, show.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Messages a tracking plan blocked.", no_args_is_help=True)
transform_app = typer.Typer(help="Transformations.", no_args_is_help=True)
pii_app = typer.Typer(help="PII encryption keys.", no_args_is_help=True)


def violations_command(
    workspace: str = WorkspaceOpt,
    group_by: str = typer.Option("event", help="event, property, source or type."),
    source: str = typer.Option(None, help="Only this source (name or id)."),
    event: str = typer.Option(None, help="Only this event name."),
    listing: bool = typer.Option(False, "--list", help="The latest violations one by one."),
    limit: int = typer.Option(50, help="Rows to show with --list."),
    as_json: bool = typer.Option(False, "--json", help="As JSON."),
):
    """Tracking plan violations, counted per event, property, source or type."""
    from plait.govern import reports

    repo, ws_id = _repo_and_workspace(workspace)
    try:
        source_id = repo.get_source(ws_id, source)["id"] if source else None
    except NotFound as exc:
        fail(str(exc))
    filters = reports.ViolationFilter(source_id=source_id, event=event)
    with repo.engine.connect() as conn:
        if listing:
            rows = reports.recent_violations(conn, ws_id, filters, limit)
        else:
            try:
                rows = reports.violation_counts(conn, ws_id, group_by, filters)
            except ValueError as exc:
                fail(str(exc))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        console.print("No violations.")
        return
    columns = (
        ["log_offset", "event_name", "kind", "field", "description", "action"]
        if listing
        else [*reports.GROUPS[group_by], "violations", "messages"]
    )
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row[c]) if row[c] is not None else "" for c in columns))
    console.print(table)


@plan_app.command("infer")
def plan_infer(
    workspace: str = WorkspaceOpt,
    source: list[str] = typer.Option(None, help="Only these sources (repeatable)."),
    limit: int = typer.Option(1_000_000, help="At most this many messages, oldest first."),
    plan_id: str = typer.Option("inferred", "--id", help="The draft plan's id."),
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default stdout)."),
):
    """Draft a tracking plan from the events already seen (names, property types,
    required properties, enums): a start for a team without one."""
    from rich.progress import Progress

    from plait.govern import reports
    from plait.govern.plan_infer import infer_plan
    from plait.log import backend_for

    repo, ws_id = _repo_and_workspace(workspace)
    try:
        source_ids = [repo.get_source(ws_id, ref)["id"] for ref in source or []]
    except NotFound as exc:
        fail(str(exc))
    total = min(limit, backend_for(repo.store).count(ws_id))
    with repo.engine.connect() as conn, Progress(console=err) as bar:
        task = bar.add_task("reading events", total=total)

        def counted():
            for msg in reports.logged_messages(conn, ws_id, source_ids or None, limit):
                bar.advance(task)
                yield msg

        plan = infer_plan(counted(), plan_id)
    text = yaml.safe_dump({"tracking_plans": [plan]}, sort_keys=False, allow_unicode=True)
    if output:
        output.write_text(text)
        console.print(f"wrote {len(plan.get('events', {}))} events to {output}")
    else:
        sys.stdout.write(text)


@plan_app.command("lint")
def plan_lint(
    plan_id: str = typer.Argument(None, help="A plan of the workspace (or use --file)."),
    workspace: str = WorkspaceOpt,
    file: Path = typer.Option(None, help="A workspace file or plan YAML to check instead."),
    events: str = typer.Option(None, help="Naming standard for events (default the plan's)."),
    properties: str = typer.Option(None, help="Naming standard for properties."),
):
    """Check a plan's event and property names against a naming standard
    (object_action, snake_case, camelCase, PascalCase, Title Case)."""
    from plait.govern.naming import lint_plan

    if file:
        doc = yaml.safe_load(file.read_text())
        plans = doc.get("tracking_plans", [doc]) if isinstance(doc, dict) else []
    else:
        repo, ws_id = _repo_and_workspace(workspace)
        plans = repo.get_setting(ws_id, "tracking_plans") or []
    if plan_id:
        plans = [p for p in plans if p.get("id") == plan_id]
    if not plans:
        fail("no tracking plan found")
    offences = 0
    for plan in plans:
        naming = dict(plan.get("naming") or {"events": "object_action", "properties": "snake_case"})
        naming.update({k: v for k, v in (("events", events), ("properties", properties)) if v})
        try:
            findings = lint_plan(plan, naming)
        except Invalid as exc:
            fail(f"{exc.field}: {exc.message}")
        offences += len(findings)
        for finding in findings:
            console.print(f"{plan.get('id')}: {finding['field']}: {finding['name']!r} is not "
                          f"{finding['expected']}")  # fmt: skip
    if offences:
        raise typer.Exit(1)
    console.print("Names follow the standard.")


@plan_app.command("show")
def plan_show(plan_id: str, workspace: str = WorkspaceOpt, versions: bool = False):
    """A plan as stored (with ``--versions``, every version)."""
    from plait.govern.documents import plan_versions

    repo, ws_id = _repo_and_workspace(workspace)
    if versions:
        with repo.engine.connect() as conn:
            _print_json(plan_versions(conn, ws_id, plan_id))
        return
    for plan in repo.get_setting(ws_id, "tracking_plans") or []:
        if plan["id"] == plan_id:
            sys.stdout.write(yaml.safe_dump(plan, sort_keys=False, allow_unicode=True))
            return
    fail(f"tracking plan {plan_id!r} not found")


@quarantine_app.command("list")
def quarantine_list(workspace: str = WorkspaceOpt, limit: int = 20, as_json: bool = False):
    """Blocked messages, oldest first, with the reason."""
    from plait.govern import reports

    repo, ws_id = _repo_and_workspace(workspace)
    with repo.engine.connect() as conn:
        rows = reports.quarantined(conn, ws_id, limit)
        total = reports.quarantine_size(conn, ws_id)
    if as_json:
        _print_json({"total": total, "messages": rows})
        return
    table = Table("offset", "type", "event", "plan", "reason")
    for row in rows:
        msg = row["message"]
        table.add_row(str(row["log_offset"]), msg.get("type", ""), str(msg.get("event") or ""),
                      f"{row['plan_id']} v{row['plan_version']}", row["reason"])  # fmt: skip
    console.print(table)
    console.print(f"{total:,} message(s) in quarantine")


@quarantine_app.command("replay")
def quarantine_replay(
    workspace: str = WorkspaceOpt,
    offset: list[int] = typer.Option(None, help="Only these log offsets (repeatable)."),
):
    """Run the quarantined messages through the pipeline again under the current plan."""
    from plait.cli_privacy import cli_actor
    from plait.govern import audit
    from plait.pipeline.replay import replay_quarantine

    repo, ws_id = _repo_and_workspace(workspace)
    result = replay_quarantine(repo.store, ws_id, offset or None)
    with repo.engine.begin() as conn:
        audit.record(conn, ws_id, cli_actor(), "quarantine.replay", "quarantine", result.__dict__)
    console.print(f"replayed {result.replayed:,}: {result.passed:,} passed, "
                  f"{result.blocked:,} still blocked")  # fmt: skip


@transform_app.command("dry-run")
def transform_dry_run(
    message: Path = typer.Argument(..., exists=True, dir_okay=False, help="A message (JSON)."),
    workspace: str = WorkspaceOpt,
    source: str = typer.Option(None, help="The source the message comes from."),
    file: Path = typer.Option(
        None, help="Transformations (YAML) to try instead of the workspace's."
    ),  # fmt: skip
):
    """Show a message before and after the transformations."""
    from plait.govern.transformations import dry_run

    repo, ws_id = _repo_and_workspace(workspace)
    try:
        msg = json.loads(message.read_text())
        sources = {s["name"]: s["id"] for s in repo.list_sources(ws_id)}
        source_id = repo.get_source(ws_id, source)["id"] if source else None
        if file:
            doc = yaml.safe_load(file.read_text())
            docs = doc.get("transformations", []) if isinstance(doc, dict) else doc
        else:
            docs = repo.get_setting(ws_id, "transformations") or []
        _print_json(dry_run(docs, msg, sources, source_id))
    except (ValueError, NotFound) as exc:
        fail(str(exc) if not isinstance(exc, Invalid) else f"{exc.field}: {exc.message}")


@pii_app.command("generate-key")
def pii_generate_key(key_id: str = typer.Option("k1", "--id", help="The key's id.")):
    """Print a new key for PLAIT_PII_KEYS (keep it secret; it is never stored by Plait)."""
    from plait.govern.pii import Keyring

    console.print(f"{key_id}:{Keyring.generate_key()}")


@pii_app.command("rotate-key")
def pii_rotate_key(
    workspace: str = WorkspaceOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
):
    """Re-encrypt every encrypted value under the current key (the first of
    PLAIT_PII_KEYS), then rebuild the workspace's profiles from the log."""
    from rich.progress import Progress

    from plait.cli_privacy import cli_actor
    from plait.govern import audit
    from plait.govern.rotation import rotate_log
    from plait.pipeline.maintenance import rebuild
    from plait.settings import get_settings

    keyring = get_settings().keyring()
    if keyring is None:
        fail("PLAIT_PII_KEYS is not set")
    repo, ws_id = _repo_and_workspace(workspace)
    if not yes:
        typer.confirm(f"Re-encrypt {workspace}'s log under key {keyring.key_ids[0]}?", abort=True)
    with Progress(console=err) as bar:
        task = bar.add_task("re-encrypting", total=None)
        changed = rotate_log(repo.store, ws_id, keyring, lambda n: bar.advance(task, n))
    console.print(f"re-encrypted {changed:,} message(s)")
    if changed:
        processed = rebuild(repo.store, ws_id)
        console.print(f"rebuilt profiles from {processed:,} messages")
    with repo.engine.begin() as conn:
        audit.record(conn, ws_id, cli_actor(), "pii.rotate_key", keyring.key_ids[0],
                     {"messages": changed})  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("violations")(violations_command)
    app.add_typer(plan_app, name="plan")
    app.add_typer(quarantine_app, name="quarantine")
    app.add_typer(transform_app, name="transform")
    app.add_typer(pii_app, name="pii")
