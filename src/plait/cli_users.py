"""``plait users``: the console's users and their roles (admin, editor, viewer)."""

from __future__ import annotations

import typer
from rich.table import Table

from plait.cli import WorkspaceOpt, _repo_and_workspace, console, fail
from plait.store.users import ROLES, Users
from plait.store.workspaces import Invalid, NotFound

users_app = typer.Typer(help="Console users and their roles.", no_args_is_help=True)
RoleOpt = typer.Option("viewer", "--role", "-r", help=f"One of {', '.join(ROLES)}.")


def _password(given: str | None) -> str:
    # Asked for (hidden, twice) unless given: a password on the command line is in the
    # shell's history.
    return given or typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def add_command(
    email: str,
    role: str = RoleOpt,
    name: str = typer.Option("", help="Shown in the console (default: the email's name)."),
    password: str = typer.Option(None, help="Asked for when not given.", envvar="PLAIT_PASSWORD"),
    workspace: str = WorkspaceOpt,
):
    """Add a user who signs in to the console with EMAIL and a password."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        user = Users(repo.store).create(ws, email, role, _password(password), name)
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}")
    console.print(f"user {user['id']} {user['email']} ({user['role']})")


@users_app.command("list")
def list_command(workspace: str = WorkspaceOpt):
    """The workspace's users."""
    repo, ws = _repo_and_workspace(workspace)
    table = Table("id", "email", "name", "role", "disabled")
    for u in Users(repo.store).list(ws):
        table.add_row(u["id"], u["email"], u["name"], u["role"], "yes" if u["disabled"] else "")
    console.print(table)


@users_app.command("set")
def set_command(
    user: str = typer.Argument(..., help="Email or id."),
    role: str = typer.Option(None, "--role", "-r", help=f"One of {', '.join(ROLES)}."),
    password: bool = typer.Option(False, "--password", help="Ask for a new password."),
    disable: bool = typer.Option(None, "--disable/--enable"),
    workspace: str = WorkspaceOpt,
):
    """Change a user's role or password, or disable them (their sessions end)."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        found = Users(repo.store).update(ws, user, role=role,
                                         password=_password(None) if password else None,
                                         disabled=disable)  # fmt: skip
    except (Invalid, NotFound) as exc:
        fail(f"{exc.field}: {exc.message}" if isinstance(exc, Invalid) else str(exc))
    state = "disabled" if found["disabled"] else "enabled"
    console.print(f"user {found['email']}: {found['role']}, {state}")


@users_app.command("delete")
def delete_command(user: str = typer.Argument(..., help="Email or id."),
                   workspace: str = WorkspaceOpt):  # fmt: skip
    """Delete a user (their sessions end)."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        Users(repo.store).delete(ws, user)
    except NotFound as exc:
        fail(str(exc))
    console.print(f"deleted {user}")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
