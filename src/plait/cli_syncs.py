"""``plait syncs``: reverse ETL syncs (list, show, run now, delete). Define them in the
workspace file's ``reverse_etl`` section (``plait apply``) or through the API."""

from __future__ import annotations

import typer
from rich.table import Table

from plait.cli import WorkspaceOpt, _print_json, _repo_and_workspace, console, fail

syncs_app = typer.Typer(help="Reverse ETL: scheduled SQL into the pipeline.",
                        no_args_is_help=True)  # fmt: skip


@syncs_app.command("list")
def list_command(workspace: str = WorkspaceOpt, as_json: bool = typer.Option(False, "--json")):
    """The syncs with their last run."""
    from plait import reverse_etl
    from plait.api.syncs_api import describe

    repo, ws_id = _repo_and_workspace(workspace)
    rows = [describe(repo, ws_id, d["key"]) for d in reverse_etl.documents(repo, ws_id)]
    if as_json:
        _print_json(rows)
        return
    table = Table("key", "type", "to", "every", "last run", "status", "rows", "sent",
                  "rejected", "cursor")  # fmt: skip
    for r in rows:
        s = r["status"]
        cursor = "" if s["cursor"] is None else str(s["cursor"])
        table.add_row(r["key"], r.get("type", "identify"), r.get("destination") or "pipeline",
                      str(r.get("every") or "by hand"), _when(s["last_run_at"]),
                      s["last_status"] or "", f"{s['rows']:,}", f"{s['sent']:,}",
                      f"{s['rejected']:,}", cursor)  # fmt: skip
    console.print(table)


@syncs_app.command("show")
def show_command(key: str, workspace: str = WorkspaceOpt):
    """One sync: its definition (the database password masked) and last run."""
    from plait.api.syncs_api import describe
    from plait.store.workspaces import NotFound

    repo, ws_id = _repo_and_workspace(workspace)
    try:
        _print_json(describe(repo, ws_id, key))
    except NotFound as exc:
        fail(str(exc))


@syncs_app.command("run")
def run_command(
    key: str,
    workspace: str = WorkspaceOpt,
    full: bool = typer.Option(False, "--full", help="From the first row (forget the cursor)."),
):
    """Run a sync now: its rows become calls into the pipeline (or its destination's queue)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from plait import reverse_etl
    from plait.settings import get_settings
    from plait.store.workspaces import NotFound

    repo, ws_id = _repo_and_workspace(workspace)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task(f"{key}: reading", total=None)

        def progress(result):
            bar.update(task, description=f"{key}: {result.rows:,} rows, {result.sent:,} sent")

        try:
            result = reverse_etl.run(repo.store, ws_id, key, get_settings().resolved_lake_dir(),
                                     full=full, progress=progress)  # fmt: skip
        except (reverse_etl.SyncError, NotFound) as exc:
            fail(str(exc))
    console.print(f"{key}: {result.rows:,} rows read, {result.sent:,} sent, "
                  f"{result.repeats:,} already sent, {result.rejected:,} rejected")  # fmt: skip
    for item in result.rejections:
        console.print(f"  rejected: {item['field'] or 'row'}: {item['reason']}", markup=False)


@syncs_app.command("delete")
def delete_command(key: str, workspace: str = WorkspaceOpt):
    """Remove a sync and its cursor."""
    from plait import reverse_etl
    from plait.store.workspaces import NotFound

    repo, ws_id = _repo_and_workspace(workspace)
    try:
        reverse_etl.delete(repo, ws_id, key)
    except NotFound as exc:
        fail(str(exc))
    console.print(f"deleted sync {key}")


def _when(ms: int | None) -> str:
    from datetime import UTC, datetime

    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def register(app: typer.Typer) -> None:
    app.add_typer(syncs_app, name="syncs")
