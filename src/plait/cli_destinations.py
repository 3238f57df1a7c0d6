"""``plait destinations`` (list, show, delete) and ``plait deliveries`` (a destination's
queue and dead letters, a message's status everywhere, replay, discard, send now)."""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from plait.cli import WorkspaceOpt, _print_json, _repo_and_workspace, console, fail

destinations_app = typer.Typer(help="Destinations and their status.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Deliveries: queues, dead letters, replays.",
                             no_args_is_help=True)  # fmt: skip


def _call(fn, *args, **kwargs):
    from plait.store.workspaces import Invalid, NotFound

    try:
        return fn(*args, **kwargs)
    except (Invalid, NotFound) as exc:
        fail(str(exc))


@destinations_app.command("list")
def list_command(workspace: str = WorkspaceOpt, as_json: bool = typer.Option(False, "--json")):
    """The destinations with their counters and queues."""
    from plait.destinations import manage

    repo, ws_id = _repo_and_workspace(workspace)
    rows = [manage.describe(repo.store, repo, ws_id, d["key"])
            for d in manage.documents(repo, ws_id)]  # fmt: skip
    if as_json:
        _print_json(rows)
        return
    table = Table("key", "type", "enabled", "delivered", "filtered", "retrying", "waiting",
                  "failed", "behind", "last status")  # fmt: skip
    for r in rows:
        s = r["status"]
        table.add_row(r["key"], r["type"], "yes" if r.get("enabled", True) else "no",
                      f"{s['delivered']:,}", f"{s['filtered']:,}", f"{s['queue']['retrying']:,}",
                      f"{s['queue']['waiting']:,}", f"{s['queue']['failed']:,}",
                      f"{s['behind']:,}", str(s["last_status"] or ""))  # fmt: skip
    console.print(table)


@destinations_app.command("show")
def show_command(key: str, workspace: str = WorkspaceOpt):
    """One destination: its definition (secrets masked) and status."""
    from plait.destinations import manage

    repo, ws_id = _repo_and_workspace(workspace)
    _print_json(_call(manage.describe, repo.store, repo, ws_id, key))


@destinations_app.command("delete")
def delete_command(key: str, workspace: str = WorkspaceOpt):
    """Remove a destination with its queue and counters."""
    from plait.destinations import manage

    repo, ws_id = _repo_and_workspace(workspace)
    _call(manage.delete, repo, repo.store, ws_id, key)
    console.print(f"deleted {key}")


@deliveries_app.command("list")
def deliveries_command(
    destination: str = typer.Argument(..., help="The destination's key."),
    status: str = typer.Option(None, help="retrying, waiting or failed (default: all)."),
    limit: int = typer.Option(100, min=1, max=10_000),
    workspace: str = WorkspaceOpt,
    as_json: bool = typer.Option(False, "--json"),
):
    """A destination's queue (retrying, waiting) and dead letters (failed)."""
    from plait.destinations import manage

    repo, ws_id = _repo_and_workspace(workspace)
    rows = _call(manage.queued, repo.store, repo, ws_id, destination, status, limit)
    if as_json:
        _print_json(rows)
        return
    table = Table("id", "message", "type", "status", "attempts", "last status", "last response")
    for r in rows:
        table.add_row(str(r["id"]), r["message_id"] or "", r["type"] or "", r["status"],
                      str(r["attempts"]), str(r["last_status"] or ""),
                      (r["last_response"] or "")[:60])  # fmt: skip
    console.print(table)


@deliveries_app.command("message")
def message_command(message_id: str, workspace: str = WorkspaceOpt):
    """A message's delivery status at each destination."""
    from plait.destinations import manage

    repo, ws_id = _repo_and_workspace(workspace)
    _print_json(_call(manage.message_status, repo.store, repo, ws_id, message_id))


@deliveries_app.command("replay")
def replay_command(
    destination: str,
    dead_letters: bool = typer.Option(False, "--dead-letters", help="Its dead letters."),
    start: str = typer.Option(None, help="Or every message from this time (ISO 8601) ..."),
    end: str = typer.Option(None, help="... to this one (excluded)."),
    workspace: str = WorkspaceOpt,
):
    """Queue dead letters, or a time range of past messages, for a destination again."""
    from plait.destinations import manage

    repo, ws_id = _repo_and_workspace(workspace)
    queued = _call(manage.replay, repo.store, repo, ws_id, destination,
                   dead_letters=dead_letters, start=start, end=end)  # fmt: skip
    console.print(f"queued {queued:,} messages for {destination}")


@deliveries_app.command("discard")
def discard_command(destination: str, workspace: str = WorkspaceOpt):
    """Forget a destination's dead letters."""
    from plait.destinations import manage

    repo, ws_id = _repo_and_workspace(workspace)
    gone = _call(manage.discard, repo.store, repo, ws_id, destination)
    console.print(f"discarded {gone:,} dead letters of {destination}")


@deliveries_app.command("send")
def send_command(workspace: str = WorkspaceOpt):
    """Deliver what is due now for the workspace's destinations, then exit (a running
    server or worker does this continuously)."""
    from plait.destinations.dispatcher import Dispatcher

    repo, ws_id = _repo_and_workspace(workspace)
    asyncio.run(Dispatcher(repo.store).drain(ws_id))
    console.print("sent what was due")


def register(app: typer.Typer) -> None:
    app.add_typer(destinations_app, name="destinations")
    app.add_typer(deliveries_app, name="deliveries")
