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
    from plait.log import backend_for

    repo, ws_id = _repo_and_workspace(workspace)
    try:
        source_ids = [repo.get_source(ws_id, ref)["id"] for ref in source or []]
    except NotFound as exc:
        fail(str(exc))
    total = min(limit, backend_for(repo.store).count(ws_id))
    with repo.engine.connect() as conn, Progress(console=err) as bar:
        task = bar.add_task("reading events", total=total)
        plan = reports.draft_plan(conn, ws_id, source_ids or None, limit, plan_id,
                                  tick=lambda: bar.advance(task))  # fmt: skip
    # Under the workspace's slug, so that the file is ready for `plait apply`.
    slug = repo.get_workspace(ws_id)["slug"]
    text = (
        "# Drafted by `plait plan infer`: review it, then `plait apply` this file (it replaces\n"
        "# the workspace's tracking_plans with this list).\n"
        + yaml.safe_dump({"workspace": {"slug": slug}, "tracking_plans": [plan]},
                         sort_keys=False, allow_unicode=True)
    )  # fmt: skip
    if output:
        try:
            output.write_text(text)
        except OSError as exc:
            fail(f"{output}: {exc.strerror or exc}")
        console.print(f"wrote {len(plan.get('events', {}))} events to {output}")
    else:
        sys.stdout.write(text)


@plan_app.command("lint")
def plan_lint(
    plan_id: str = typer.Argument(None, help="A plan of the workspace (or use --file)."),
    workspace: str = WorkspaceOpt,
    file: Path = typer.Option(
        None, exists=True, dir_okay=False, help="A workspace file or plan YAML to check instead."
    ),
    events: str = typer.Option(None, help="Naming standard for events (default the plan's)."),
    properties: str = typer.Option(None, help="Naming standard for properties."),
):
    """Check a plan's event and property names against a naming standard
    (object_action, snake_case, camelCase, PascalCase, Title Case)."""
    from plait.govern.naming import lint_plan

    if file:
        doc = _read_yaml(file)
        plans = doc.get("tracking_plans", [doc]) if isinstance(doc, dict) else None
        if not isinstance(plans, list) or not all(isinstance(p, dict) for p in plans):
            fail(f"{file}: expected a plan, or a workspace file with a tracking_plans list")
    else:
        repo, ws_id = _repo_and_workspace(workspace)
        plans = repo.get_setting(ws_id, "tracking_plans") or []
    if plan_id:
        plans = [p for p in plans if p.get("id") == plan_id]
    if not plans:
        fail(f"tracking plan {plan_id!r} not found" if plan_id else "no tracking plan found")
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
            found = plan_versions(conn, ws_id, plan_id)
        if not found:
            fail(f"tracking plan {plan_id!r} not found")
        _print_json(found)
        return
    for plan in repo.get_setting(ws_id, "tracking_plans") or []:
        if plan["id"] == plan_id:
            sys.stdout.write(yaml.safe_dump(plan, sort_keys=False, allow_unicode=True))
            return
    fail(f"tracking plan {plan_id!r} not found")


@quarantine_app.command("list")
def quarantine_list(
    workspace: str = WorkspaceOpt,
    limit: int = typer.Option(20, min=1, help="Messages to show."),
    as_json: bool = typer.Option(False, "--json", help="As JSON."),
):
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
    from plait.govern import audit
    from plait.pipeline.replay import replay_quarantine

    repo, ws_id = _repo_and_workspace(workspace)
    result = replay_quarantine(repo.store, ws_id, offset or None)
    with repo.engine.begin() as conn:
        audit.record(conn, ws_id, audit.cli_actor(), "quarantine.replay", "quarantine",
                     result.__dict__)  # fmt: skip
    console.print(f"replayed {result.replayed:,}: {result.passed:,} passed, "
                  f"{result.blocked:,} still blocked")  # fmt: skip


@transform_app.command("dry-run")
def transform_dry_run(
    message: Path = typer.Argument(..., exists=True, dir_okay=False, help="A message (JSON)."),
    workspace: str = WorkspaceOpt,
    source: str = typer.Option(None, help="The source the message comes from."),
    file: Path = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="Transformations (YAML) to try instead of the workspace's.",
    ),  # fmt: skip
):
    """Show a message before and after the transformations."""
    from plait.govern.transformations import dry_run

    repo, ws_id = _repo_and_workspace(workspace)
    try:
        msg = json.loads(message.read_bytes())
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        fail(f"{message}: not a JSON message ({exc})")
    if file:
        doc = _read_yaml(file)
        docs = doc.get("transformations", []) if isinstance(doc, dict) else doc
    else:
        docs = repo.get_setting(ws_id, "transformations") or []
    try:
        sources = {s["name"]: s["id"] for s in repo.list_sources(ws_id)}
        source_id = repo.get_source(ws_id, source)["id"] if source else None
        result = dry_run(docs, msg, sources, source_id)
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}")
    except NotFound as exc:
        fail(str(exc))
    _print_json(result)


@pii_app.command("generate-key")
def pii_generate_key(key_id: str = typer.Option("k1", "--id", help="The key's id.")):
    """Print a new key for PLAIT_PII_KEYS (keep it secret; it is never stored by Plait)."""
    from plait.govern.pii import Keyring, PiiKeyError

    entry = f"{key_id}:{Keyring.generate_key()}"
    try:
        Keyring.parse(entry)  # the id must be one PLAIT_PII_KEYS accepts
    except PiiKeyError as exc:
        fail(str(exc))
    sys.stdout.write(entry + "\n")  # plain, for `$(plait pii generate-key)`


@pii_app.command("rotate-key")
def pii_rotate_key(
    workspace: str = WorkspaceOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
):
    """Re-encrypt every encrypted value under the current key (the first of
    PLAIT_PII_KEYS), then rebuild the workspace's profiles from the log. Restart the
    servers with the new PLAIT_PII_KEYS first; drop the old key only after this."""
    from rich.progress import Progress

    from plait.govern import audit
    from plait.govern.pii import PiiKeyError
    from plait.govern.rotation import rotate_log, rotate_removals, stale_derived_state
    from plait.pipeline.maintenance import rebuild
    from plait.settings import get_settings

    try:
        keyring = get_settings().keyring()
    except PiiKeyError as exc:
        fail(str(exc))
    if keyring is None:
        fail("PLAIT_PII_KEYS is not set")
    repo, ws_id = _repo_and_workspace(workspace)
    if not yes:
        typer.confirm(f"Re-encrypt {workspace}'s log under key {keyring.current}?", abort=True)
    try:
        with Progress(console=err) as bar:
            task = bar.add_task("re-encrypting", total=None)
            logged = rotate_log(repo.store, ws_id, keyring, lambda n: bar.advance(task, n))
        removals = rotate_removals(repo.store, ws_id, keyring)
    except PiiKeyError as exc:
        fail(f"{exc} (what was re-encrypted before it stays so; run this again once fixed)")
    console.print(f"re-encrypted {logged.messages:,} message(s)"
                  + (f" and {removals:,} unmerge record(s)" if removals else ""))  # fmt: skip
    processed = None
    stale = bool(logged.messages or removals)
    if not stale:  # a rotation stopped before its rebuild left old tokens in derived state
        with repo.engine.connect() as conn:
            stale = stale_derived_state(conn, ws_id, keyring)
    if stale:
        processed = rebuild(repo.store, ws_id)
        console.print(f"rebuilt profiles from {processed:,} messages")
    details = {"messages": logged.messages, "unmerges": removals, "rebuilt": processed,
               "unknown_keys": sorted(logged.unknown_keys)}  # fmt: skip
    with repo.engine.begin() as conn:
        audit.record(conn, ws_id, audit.cli_actor(), "pii.rotate_key", keyring.current, details)
    if logged.unknown_keys:
        fail(f"{logged.unknown_messages:,} message(s) hold values under key(s) "
             f"{', '.join(sorted(logged.unknown_keys))}, which PLAIT_PII_KEYS does not hold: "
             "they were left as they are (add those keys to rotate them)")  # fmt: skip


def _read_yaml(path: Path):
    """A YAML file's document; a clear error (no traceback) when it is not YAML."""
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        fail(f"{path}: not a YAML file ({exc})")


def register(app: typer.Typer) -> None:
    app.command("violations")(violations_command)
    app.add_typer(plan_app, name="plan")
    app.add_typer(quarantine_app, name="quarantine")
    app.add_typer(transform_app, name="transform")
    app.add_typer(pii_app, name="pii")
