"""``plait privacy``, ``plait audit`` and ``plait retention``: registered by plait/cli.py.

The shared helpers (the store from the settings, the workspace lookup, the consoles) are
cli.py's, imported when a command runs: cli.py imports this module at its end.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.table import Table

privacy_app = typer.Typer(
    help="Privacy requests (Segment's regulations: delete, suppress) and access requests.",
    no_args_is_help=True,
)
retention_app = typer.Typer(help="Event retention (the workspace's retention.days).",
                            no_args_is_help=True)  # fmt: skip

WorkspaceOpt = typer.Option("demo", "--workspace", "-w", help="Workspace slug or id.")


def _cli():
    from plait import cli

    return cli


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _status(status: str) -> str:
    color = {"FINISHED": "green", "FAILED": "red", "PARTIAL_SUCCESS": "yellow"}.get(status)
    return f"[{color}]{status}[/]" if color else status


@privacy_app.command("request")
def privacy_request(
    subject_ids: list[str] = typer.Argument(None, help="Subject ids (or --from-file)."),
    regulation_type: str = typer.Option(
        ...,
        "--type",
        "-t",
        help="DELETE_INTERNAL, DELETE_ONLY, SUPPRESS_ONLY, "
        "SUPPRESS_WITH_DELETE, SUPPRESS_WITH_DELETE_INTERNAL or UNSUPPRESS.",
    ),
    subject_type: str = typer.Option(
        "USER_ID",
        "--subject-type",
        "-s",
        help="USER_ID, ANONYMOUS_ID, EMAIL, PHONE or a custom identifier type (CRM_ID for crm_id).",
    ),
    from_file: Path = typer.Option(
        None, "--from-file", "-f", exists=True, dir_okay=False, help="One subject id a line."
    ),
    workspace: str = WorkspaceOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
):
    """File a privacy request and run it here, showing its progress and its receipt."""
    import plait.destinations  # noqa: F401  (adds the destinations' steps to deletions)
    import plait.lake  # noqa: F401  (adds the lake's step to deletions)
    from plait.govern import audit, privacy
    from plait.store.workspaces import Invalid

    cli = _cli()
    ids = list(subject_ids or [])
    if from_file is not None:
        ids += [line.strip() for line in from_file.read_text().splitlines() if line.strip()]
    repo, ws_id = cli._repo_and_workspace(workspace)
    if not yes and regulation_type in privacy.DELETES:
        typer.confirm(f"Delete every trace of {len(ids):,} people from {workspace}? "
                      "This cannot be undone", abort=True)  # fmt: skip
    try:
        request = privacy.create_request(
            repo.store, ws_id, regulation_type, subject_type, ids, audit.cli_actor()
        )
    except Invalid as exc:
        cli.fail(f"{exc.field}: {exc.message}")
    cli.err.print(f"request {request['id']} ({regulation_type}, {request['subjects']:,} subjects)")
    try:
        with cli.err.status("starting") as status:
            done = privacy.run_request(
                repo.store, request["id"], ids, progress=lambda step: status.update(step)
            )
    except privacy.RequestFailed as exc:
        cli.fail(str(exc))
    _print_request(done)
    if done["status"] == "PARTIAL_SUCCESS":
        raise typer.Exit(3)


@privacy_app.command("list")
def privacy_list(
    workspace: str = WorkspaceOpt,
    status: str = typer.Option(None, help="Only this status (FINISHED, FAILED ...)."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=1000),
):
    """List privacy requests, newest first."""
    from plait.govern import privacy

    cli = _cli()
    repo, ws_id = cli._repo_and_workspace(workspace)
    with repo.store.engine.connect() as conn:
        found = privacy.list_requests(conn, ws_id, status=status, limit=limit)
    table = Table()
    table.add_column("id", no_wrap=True)
    for name in ("type", "subject type", "subjects", "status", "created", "finished", "by"):
        table.add_column(name)
    for r in found:
        table.add_row(r["id"], r["regulation_type"], r["subject_type"], f"{r['subjects']:,}",
                      _status(r["status"]), _when(r["created_at"]), _when(r["finished_at"]),
                      r["requested_by"])  # fmt: skip
    cli.console.print(table)


@privacy_app.command("show")
def privacy_show(request_id: str, workspace: str = WorkspaceOpt):
    """A request's status and receipt."""
    from plait.govern import privacy
    from plait.store.workspaces import NotFound

    cli = _cli()
    repo, ws_id = cli._repo_and_workspace(workspace)
    try:
        with repo.store.engine.connect() as conn:
            request = privacy.get_request(conn, ws_id, request_id)
    except NotFound as exc:
        cli.fail(str(exc))
    _print_request(request)


def _print_request(r: dict[str, Any]) -> None:
    cli = _cli()
    cli.console.print(f"[bold]{r['id']}[/] {r['regulation_type']} of {r['subjects']:,} "
                      f"{r['subject_type']} subjects: {_status(r['status'])}")  # fmt: skip
    cli.console.print(
        f"requested by {r['requested_by']} at {_when(r['created_at'])}"
        + (f", finished {_when(r['finished_at'])}" if r["finished_at"] else "")
    )
    if r["error"]:
        cli.console.print(f"[red]error:[/] {r['error']}")
    receipt = r["receipt"] or {}
    if not receipt:
        return
    table = Table("receipt", "")
    for key in ("subjects", "subjects_found", "profiles", "suppressions_added",
                "suppressions_removed"):  # fmt: skip
        if key in receipt:
            table.add_row(key.replace("_", " "), f"{receipt[key]:,}")
    for type_name, count in (receipt.get("identifiers") or {}).items():
        table.add_row(f"identifiers: {type_name}", f"{count:,}")
    for state, count in (receipt.get("log_messages") or {}).items():
        table.add_row(f"log messages: {state}", f"{count:,}")
    for name, count in (receipt.get("rows_removed") or {}).items():
        table.add_row(f"rows removed: {name}", f"{count:,}")
    for key in ("forwarded_to", "lake", "pending_deliveries", "physical"):
        if key in receipt:
            value = receipt[key]
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            table.add_row(key.replace("_", " "), text)
    for step, message in (receipt.get("errors") or {}).items():
        table.add_row(f"[red]failed: {step}[/]", message)
    cli.console.print(table)


@privacy_app.command("export")
def privacy_export(
    identifier: str = typer.Argument(..., help="type:value, e.g. email:jo@x.com, or prf_..."),
    out: Path = typer.Option(None, "--out", "-o", help="File to write (default stdout)."),
    workspace: str = WorkspaceOpt,
):
    """Everything held about a person, as one JSON document (a data subject access
    request; audited)."""
    from plait.govern import audit, dsar
    from plait.store.workspaces import Invalid

    cli = _cli()
    repo, ws_id = cli._repo_and_workspace(workspace)
    try:
        document = dsar.access_request(repo.store, ws_id, identifier, audit.cli_actor())
    except Invalid as exc:
        cli.fail(f"{exc.field}: {exc.message}")
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text)
    counts = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in dsar.summary(document).items())
    cli.err.print(f"written to {out}: {counts}")


def audit_command(
    workspace: str = WorkspaceOpt,
    action: str = typer.Option(None, "--action", "-a", help="e.g. privacy, privacy.access"),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=1000),
    before: int = typer.Option(None, help="Records older than this record id (pages)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON record a line."),
):
    """The workspace's audit log, newest first (privacy requests, access requests,
    retention runs)."""
    from plait.govern import audit

    cli = _cli()
    repo, ws_id = cli._repo_and_workspace(workspace)
    with repo.store.engine.connect() as conn:
        records = audit.query(conn, ws_id, action=action, limit=limit, before_id=before)
    if as_json:
        for record in records:
            sys.stdout.write(orjson.dumps(record).decode() + "\n")
        return
    table = Table("id", "at", "actor", "action", "target", "details")
    for r in records:
        table.add_row(str(r["id"]), _when(r["at"]), r["actor"], r["action"], r["target"],
                      orjson.dumps(r["details"]).decode())  # fmt: skip
    cli.console.print(table)


@retention_app.command("run")
def retention_run(
    workspace: str = typer.Option(
        None, "--workspace", "-w", help="One workspace (default: every one with retention)."
    ),
):
    """Delete the messages older than each workspace's retention.days, now."""
    from plait.govern import audit, retention
    from plait.store.workspaces import Invalid

    cli = _cli()
    if workspace is None:
        from plait.store.workspaces import Workspaces

        repo = Workspaces(cli.open_configured_store())
        ids = [w["id"] for w in repo.list_workspaces()]
    else:
        repo, ws_id = cli._repo_and_workspace(workspace)
        ids = [ws_id]
    table = Table("workspace", "days", *retention.TABLES)
    failed = False
    with cli.err.status("retention") as status:
        for ws_id in ids:
            deleted = 0

            def advance(count: int, ws_id: str = ws_id) -> None:
                nonlocal deleted
                deleted += count
                status.update(f"{ws_id}: {deleted:,} messages deleted")

            try:
                result = retention.apply_retention(
                    repo.store, ws_id, actor=audit.cli_actor(), progress=advance
                )
            except Invalid as exc:
                cli.err.print(f"[red]{ws_id}:[/] {exc.field}: {exc.message}")
                failed = True
                continue
            if result["days"] is None and workspace is None:
                continue
            days = "keeps all" if result["days"] is None else f"{result['days']:g}"
            table.add_row(ws_id, days, *(f"{result[t]:,}" for t in retention.TABLES))
    cli.console.print(table)
    if failed:
        raise typer.Exit(1)
