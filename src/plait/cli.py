"""The ``plait`` command."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from plait.settings import get_settings
from plait.store import Store, open_store
from plait.store.workspaces import Invalid, NotFound, Workspaces

app = typer.Typer(help="Plait: an open-source Customer Data Platform.", no_args_is_help=True)
sources_app = typer.Typer(help="Sources and their write keys.", no_args_is_help=True)
tokens_app = typer.Typer(help="Admin API tokens.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(tokens_app, name="tokens")

console = Console(soft_wrap=True)  # never wrap a printed key or token
err = Console(stderr=True)

WorkspaceOpt = typer.Option("demo", "--workspace", "-w", help="Workspace slug or id.")


def open_configured_store() -> Store:
    settings = get_settings()
    return open_store(settings.resolved_database_url(), settings.sqlite_synchronous)


def fail(message: str, code: int = 1):
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _repo_and_workspace(workspace: str) -> tuple[Workspaces, str]:
    repo = Workspaces(open_configured_store())
    try:
        return repo, repo.get_workspace(workspace)["id"]
    except NotFound as exc:
        fail(str(exc))


@app.command()
def serve(
    host: str = typer.Option(None, help="Address to bind (PLAIT_HOST, default 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (PLAIT_PORT, default 8080)."),
    demo: bool = typer.Option(True, help="Create the demo workspace on first start."),
):
    """Run the server: collection API, admin API, health and metrics."""
    import uvicorn

    from plait.api.app import PlaitApp
    from plait.api.bootstrap import ensure_demo
    from plait.observability import configure_logging

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    store = open_configured_store()
    if demo:
        boot = ensure_demo(Workspaces(store))
        if boot.write_key:
            console.print(f"[bold green]Demo workspace created[/] ({boot.workspace_id})")
            console.print(f"  write key  [bold]{boot.write_key}[/]  (source {boot.source_id})")
            console.print(f"  admin token [bold]{boot.admin_token}[/]")
            console.print("  Keys are stored hashed and shown only now: keep them.")
    console.print(f"Plait on http://{host}:{port}  store: {store.kind}  ({settings.resolved_database_url()})")
    configure_logging(settings.log_level)
    uvicorn.run(
        PlaitApp(settings, store),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=settings.access_log,
        log_config=None,
        timeout_graceful_shutdown=10,
    )


@app.command()
def apply(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Workspace YAML."),
    prune: bool = typer.Option(False, help="Disable sources the file does not list."),
):
    """Apply a workspace file idempotently."""
    from plait.api import workspace_file

    repo = Workspaces(open_configured_store())
    try:
        result = workspace_file.apply(repo, workspace_file.parse(file.read_text()), prune)
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}")
    if not result.changed:
        console.print("No changes.")
    for label, names in (("created", result.created), ("updated", result.updated),
                         ("disabled", result.disabled)):  # fmt: skip
        for name in names:
            console.print(f"{label}: source {name}")
    for name, key in result.new_write_keys.items():
        console.print(f"write key for {name}: [bold]{key}[/]")


@app.command()
def export(
    workspace: str = WorkspaceOpt,
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default stdout)."),
):
    """Export a workspace as YAML (write keys are never exported)."""
    from plait.api import workspace_file

    repo = Workspaces(open_configured_store())
    try:
        text = workspace_file.export(repo, workspace)
    except NotFound as exc:
        fail(str(exc))
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@sources_app.command("list")
def sources_list(workspace: str = WorkspaceOpt):
    """List sources."""
    repo, ws = _repo_and_workspace(workspace)
    table = Table("id", "name", "type", "enabled", "active keys")
    for s in repo.list_sources(ws):
        keys = [k for k in repo.list_write_keys(ws, s["id"]) if k["revoked_at"] is None]
        hints = ", ".join(f"{k['id']} (…{k['hint']})" for k in keys)
        table.add_row(s["id"], s["name"], s["type"], "yes" if s["enabled"] else "no", hints)
    console.print(table)


@sources_app.command("create")
def sources_create(
    name: str,
    type: str = typer.Option("http", "--type", "-t", help="javascript, python, node, http ..."),
    workspace: str = WorkspaceOpt,
):
    """Create a source; prints its first write key."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        source, key = repo.create_source(ws, name, type)
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}")
    console.print(f"source {source['id']} created; write key [bold]{key}[/]")


def _set_enabled(name: str, workspace: str, enabled: bool) -> None:
    repo, ws = _repo_and_workspace(workspace)
    try:
        repo.update_source(ws, name, enabled=enabled)
    except NotFound as exc:
        fail(str(exc))
    console.print(f"source {name} {'enabled' if enabled else 'disabled'}")


@sources_app.command("enable")
def sources_enable(name: str, workspace: str = WorkspaceOpt):
    """Enable a source."""
    _set_enabled(name, workspace, True)


@sources_app.command("disable")
def sources_disable(name: str, workspace: str = WorkspaceOpt):
    """Disable a source: its write keys get 401 until it is enabled again."""
    _set_enabled(name, workspace, False)


@sources_app.command("add-key")
def sources_add_key(
    name: str,
    rotate: bool = typer.Option(False, help="Revoke every older key of the source."),
    workspace: str = WorkspaceOpt,
):
    """Create a write key for a source (and with --rotate, revoke the others)."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        if rotate:
            key, revoked = repo.rotate_write_key(ws, name)
        else:
            key, revoked = repo.create_write_key(ws, name), []
    except NotFound as exc:
        fail(str(exc))
    console.print(f"write key [bold]{key}[/]")
    for key_id in revoked:
        console.print(f"revoked {key_id}")


@sources_app.command("revoke-key")
def sources_revoke_key(name: str, key_id: str, workspace: str = WorkspaceOpt):
    """Revoke one write key of a source."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        repo.revoke_write_key(ws, name, key_id)
    except NotFound as exc:
        fail(str(exc))
    console.print(f"revoked {key_id}")


@tokens_app.command("create")
def tokens_create(
    name: str,
    scope: list[str] = typer.Option(["admin"], "--scope", "-s", help="Repeat for several."),
    workspace: str = WorkspaceOpt,
):
    """Create an admin API token; prints it once."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        record, secret = repo.create_token(ws, name, scope)
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}")
    console.print(f"token {record['id']} ({' '.join(record['scopes'])}): [bold]{secret}[/]")


@tokens_app.command("list")
def tokens_list(workspace: str = WorkspaceOpt):
    """List tokens (never their secrets)."""
    repo, ws = _repo_and_workspace(workspace)
    table = Table("id", "name", "scopes", "revoked")
    for t in repo.list_tokens(ws):
        table.add_row(t["id"], t["name"], " ".join(t["scopes"]), "yes" if t["revoked_at"] else "")
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str, workspace: str = WorkspaceOpt):
    """Revoke a token."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        repo.revoke_token(ws, token_id)
    except NotFound as exc:
        fail(str(exc))
    console.print(f"revoked {token_id}")


@app.command("workspaces")
def workspaces_list():
    """List workspaces."""
    repo = Workspaces(open_configured_store())
    table = Table("id", "slug", "name")
    for w in repo.list_workspaces():
        table.add_row(w["id"], w["slug"], w["name"])
    console.print(table)


@app.command("workspace-create")
def workspace_create(slug: str, name: str = typer.Option(None)):
    """Create a workspace and an admin token for it."""
    repo = Workspaces(open_configured_store())
    try:
        ws = repo.create_workspace(slug, name)
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}")
    _, token = repo.create_token(ws["id"], "admin", ["admin"])
    console.print(f"workspace {ws['id']} created; admin token [bold]{token}[/]")


# Commands in their own modules (registered here so `plait --help` lists them all).
