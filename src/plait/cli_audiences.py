"""``plait audiences``: list, show, preview, members, history, parse, reconcile; and
``plait traits``: the computed traits and a profile's values."""

from __future__ import annotations

import typer
from rich.table import Table

from plait.cli import WorkspaceOpt, _print_json, _repo_and_workspace, console, err, fail
from plait.settings import get_settings

audiences_app = typer.Typer(help="Audiences: preview, members, history.", no_args_is_help=True)
traits_app = typer.Typer(help="Computed traits.", no_args_is_help=True)


def _defs(repo, ws_id):
    from plait.audiences import manage
    from plait.store.workspaces import Invalid

    try:
        return manage.check(repo, ws_id, {})
    except Invalid as exc:
        fail(str(exc))


@audiences_app.command("list")
def list_command(workspace: str = WorkspaceOpt,
                 as_json: bool = typer.Option(False, "--json")):  # fmt: skip
    """The audiences with their definitions and sizes."""
    from plait.audiences import manage

    repo, ws_id = _repo_and_workspace(workspace)
    defs = _defs(repo, ws_id)
    with repo.engine.connect() as conn:
        sizes = manage.sizes(conn, ws_id)
    rows = [{**manage.describe_audience(defs, k), "size": sizes.get(k, 0)} for k in defs.audiences]
    if as_json:
        _print_json(rows)
        return
    table = Table("key", "name", "size", "emit", "definition")
    for row in rows:
        table.add_row(row["key"], row["name"], f"{row['size']:,}", row["emit"], row["definition"])
    console.print(table)


@audiences_app.command("show")
def show_command(key: str, workspace: str = WorkspaceOpt):
    """One audience: its definition (text and JSON), size and entries/exits per day."""
    from plait.audiences import manage
    from plait.store.workspaces import NotFound

    repo, ws_id = _repo_and_workspace(workspace)
    try:
        out = manage.describe_audience(_defs(repo, ws_id), key)
    except NotFound as exc:
        fail(str(exc))
    with repo.engine.connect() as conn:
        out["size"] = manage.sizes(conn, ws_id).get(key, 0)
        out["by_day"] = manage.daily_counts(conn, ws_id, key)
    _print_json(out)


@audiences_app.command("parse")
def parse_command(definition: str = typer.Argument(..., help="Audience language text.")):
    """Check a definition: prints its JSON form and canonical text, or where it is wrong."""
    from plait.audiences.language import AudienceSyntaxError, parse, to_json, to_text

    try:
        tree = parse(definition)
    except AudienceSyntaxError as exc:
        lines = definition.splitlines() or [""]
        err.print(lines[exc.line - 1] if exc.line <= len(lines) else "")
        err.print(" " * (exc.column - 1) + "^")
        fail(exc.message)
    _print_json({"definition": to_text(tree), "definition_json": to_json(tree)})


@audiences_app.command("preview")
def preview_command(
    definition: str = typer.Argument(..., help="Audience language text (need not be saved)."),
    workspace: str = WorkspaceOpt,
    sample: int = typer.Option(10, min=0, max=1000, help="Members to show."),
):
    """The size of an audience and a sample of its members, evaluated over the lake."""
    from plait.audiences import manage
    from plait.lake import LakeQueryError
    from plait.store.workspaces import Invalid

    repo, ws_id = _repo_and_workspace(workspace)
    settings = get_settings()
    try:
        result = manage.preview(repo.store, ws_id, settings.resolved_lake_dir(), definition,
                                settings.lake_snapshot_seconds, sample)  # fmt: skip
    except (Invalid, LakeQueryError) as exc:
        fail(str(exc))
    console.print(f"[bold]{result['size']:,}[/bold] of {result['profiles']:,} profiles "
                  f"[dim]({result['took_ms']} ms)[/dim]")  # fmt: skip
    for member in result["sample"]:
        traits = member["traits"]
        who = traits.get("email") or traits.get("name") or ""
        console.print(f"  {member['profile_id']}  {who}")


@audiences_app.command("members")
def members_command(key: str, workspace: str = WorkspaceOpt,
                    limit: int = typer.Option(100, min=1, max=100_000)):  # fmt: skip
    """The audience's members (profile id, when they entered)."""
    from plait.audiences import manage

    repo, ws_id = _repo_and_workspace(workspace)
    with repo.engine.connect() as conn:
        rows = manage.members(conn, ws_id, key, limit)
    for row in rows:
        console.print(f"{row['profile_id']}\t{row['entered_at']}")
    err.print(f"[dim]{len(rows):,} members shown[/dim]")


@audiences_app.command("history")
def history_command(key: str, workspace: str = WorkspaceOpt,
                    limit: int = typer.Option(100, min=1, max=100_000),
                    profile: str = typer.Option(None, help="One profile id.")):  # fmt: skip
    """Entries and exits, newest first, with why (event, time, backfill, merged...)."""
    from plait.audiences import manage
    from plait.spec.timestamps import format_ms

    repo, ws_id = _repo_and_workspace(workspace)
    with repo.engine.connect() as conn:
        rows = manage.history(conn, ws_id, key, limit, profile)
    table = Table("at", "profile", "change", "reason")
    for row in rows:
        table.add_row(format_ms(row["at"]), row["profile_id"], row["change"], row["reason"])
    console.print(table)


@audiences_app.command("reconcile")
def reconcile_command(workspace: str = WorkspaceOpt):
    """Evaluate every audience and computed trait over the lake now and apply what differs
    (the pipeline's scheduler does this when a definition changes, and hourly)."""
    from rich.progress import Progress

    from plait.audiences import scheduler

    repo, ws_id = _repo_and_workspace(workspace)
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("profiles", total=None)
        report = scheduler.reconcile(repo.store, ws_id, get_settings().resolved_lake_dir(),
                                     progress=lambda n: progress.advance(task, n))  # fmt: skip
    console.print(
        f"{report.evaluated:,} profiles evaluated ({report.from_lake:,} from the lake, "
        f"{report.in_memory:,} in memory): {report.entered:,} entered, "
        f"{report.exited:,} exited, {report.traits:,} computed trait changes"
    )


@traits_app.command("list")
def traits_list_command(workspace: str = WorkspaceOpt):
    """The computed traits' definitions."""
    from plait.audiences import manage

    repo, ws_id = _repo_and_workspace(workspace)
    _print_json(manage.documents(repo, ws_id)["computed_traits"])


@traits_app.command("profile")
def traits_profile_command(ref: str, workspace: str = WorkspaceOpt):
    """A profile's audiences and computed traits (``ref``: a profile id or type:value)."""
    from plait.audiences import manage
    from plait.identity import graph_store
    from plait.identity.explain import ProfileNotFound, find_profile

    repo, ws_id = _repo_and_workspace(workspace)
    with repo.engine.connect() as conn:
        try:
            pid = find_profile(conn, ws_id, ref, graph_store.load_rules(conn, ws_id))
        except ProfileNotFound as exc:
            fail(str(exc))
        _print_json({"profile_id": pid, **manage.profile_audiences(conn, ws_id, pid)})


def register(app: typer.Typer) -> None:
    app.add_typer(audiences_app, name="audiences")
    app.add_typer(traits_app, name="traits")
