"""``plait sql``: SQL over the workspace's lake (exported first, so it is fresh)."""

from __future__ import annotations

import typer
from rich.table import Table

from plait.cli import WorkspaceOpt, _print_json, _repo_and_workspace, console, err, fail
from plait.settings import get_settings


def sql_command(
    sql: str = typer.Argument(
        ...,
        help="One SELECT over events, tracks, identifies, pages, "
        "profiles, identifiers, traits, memberships.",
    ),  # fmt: skip
    workspace: str = WorkspaceOpt,
    as_json: bool = typer.Option(False, "--json", help="As JSON: {columns, rows}."),
    limit: int = typer.Option(10_000, help="At most this many rows."),
    no_export: bool = typer.Option(False, "--no-export", help="Query the lake as it is."),
    rebuild: bool = typer.Option(
        False,
        "--rebuild",
        help="Write the workspace's events again from the start (after `plait rebuild`).",
    ),  # fmt: skip
):
    """Run SQL over the lake (Parquet files, DuckDB), read-only, scoped to one workspace."""
    from plait.lake import LakeQueryError, export_events, export_profiles, reset_events, run_sql
    from plait.lake.query import jsonable

    repo, ws_id = _repo_and_workspace(workspace)
    lake_dir = get_settings().resolved_lake_dir()
    if rebuild:
        reset_events(repo.store, ws_id, lake_dir)
    if not no_export:
        added = export_events(repo.store, ws_id, lake_dir)
        export_profiles(repo.store, ws_id, lake_dir)
        if added:
            err.print(f"[dim]{added:,} events added to the lake[/dim]")
    try:
        columns, rows = run_sql(lake_dir, ws_id, sql, limit=limit)
    except LakeQueryError as exc:
        fail(str(exc))
    if as_json:
        _print_json({"columns": columns, "rows": [[jsonable(v) for v in r] for r in rows]})
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(jsonable(v)) for v in row))
    console.print(table)
    err.print(f"[dim]{len(rows):,} rows[/dim]")


def register(app: typer.Typer) -> None:
    app.command("sql")(sql_command)
