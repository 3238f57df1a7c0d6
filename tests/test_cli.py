"""The plait command: workspaces, sources, keys, tokens, apply and export."""

import re

import pytest
from typer.testing import CliRunner

from plait.cli import app
from plait.settings import get_settings
from plait.store.workspaces import Workspaces


@pytest.fixture
def plait(store_url, monkeypatch):
    monkeypatch.setenv("PLAIT_DATABASE_URL", store_url)
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args, ok=True):
        result = runner.invoke(app, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    yield run
    get_settings.cache_clear()


def test_sources_keys_and_tokens_through_the_cli(plait, store):
    out = plait("workspace-create", "acme", "--name", "Acme").output
    assert "admin token plt_" in out
    out = plait("sources", "create", "Backend", "--type", "python", "-w", "acme").output
    first_key = re.search(r"write key (\w+)", out).group(1)
    repo = Workspaces(store)
    assert repo.authenticate_write_key(first_key).enabled

    plait("sources", "disable", "Backend", "-w", "acme")
    assert not repo.authenticate_write_key(first_key).enabled
    plait("sources", "enable", "Backend", "-w", "acme")

    out = plait("sources", "add-key", "Backend", "--rotate", "-w", "acme").output
    second_key = re.search(r"write key (\w+)", out).group(1)
    assert repo.authenticate_write_key(first_key) is None
    assert repo.authenticate_write_key(second_key) is not None
    listing = plait("sources", "list", "-w", "acme").output
    assert "Backend" in listing and second_key[-4:] in listing

    key_id = repo.list_write_keys(repo.get_workspace("acme")["id"], "Backend")[-1]["id"]
    plait("sources", "revoke-key", "Backend", key_id, "-w", "acme")
    assert repo.authenticate_write_key(second_key) is None

    out = plait("tokens", "create", "reader", "-s", "sources:read", "-w", "acme").output
    token = re.search(r"(plt_\w+)", out).group(1)
    auth = repo.authenticate_token(token)
    assert auth.scopes == {"sources:read"} and not auth.allows("sources:write")
    token_id = re.search(r"token (tok_\w+)", out).group(1)
    plait("tokens", "revoke", token_id, "-w", "acme")
    assert repo.authenticate_token(token) is None


def test_clear_errors_for_bad_input(plait):
    result = plait("sources", "list", "-w", "nowhere", ok=False)
    assert result.exit_code == 1 and "not found" in result.output
    plait("workspace-create", "acme")
    result = plait("sources", "create", "X", "--type", "fax", "-w", "acme", ok=False)
    assert result.exit_code == 1 and "type" in result.output
    result = plait("tokens", "create", "t", "-s", "everything", "-w", "acme", ok=False)
    assert result.exit_code == 1 and "scopes" in result.output


def test_apply_is_idempotent_and_export_round_trips(plait, tmp_path):
    spec = tmp_path / "acme.yaml"
    spec.write_text(
        "workspace: {slug: acme, name: Acme}\n"
        "sources:\n  - {name: Website, type: javascript}\n  - {name: Backend, type: python}\n"
    )
    first = plait("apply", str(spec)).output
    assert first.count("write key for") == 2
    assert "No changes." in plait("apply", str(spec)).output
    exported = plait("export", "-w", "acme").output
    out = tmp_path / "again.yaml"
    out.write_text(exported)
    assert "No changes." in plait("apply", str(out)).output
    assert "name: Backend" in exported and "write" not in exported.lower()

    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [\n")
    result = plait("apply", str(bad), ok=False)
    assert result.exit_code == 1 and "yaml" in result.output


def test_identity_rules_in_the_workspace_file(plait, store, tmp_path):
    spec = tmp_path / "acme.yaml"
    spec.write_text(
        "workspace: {slug: acme, name: Acme}\n"
        "identity:\n"
        "  identifiers: {anonymous_id: {limit: 3, window: weekly},"
        " crm_id: {limit: 1, paths: [traits.crm_id]}}\n"
        "  priority: [user_id, crm_id, email]\n"
    )
    assert "identity" in plait("apply", str(spec)).output
    assert "No changes." in plait("apply", str(spec)).output
    exported = plait("export", "-w", "acme").output
    assert "window: weekly" in exported and "crm_id" in exported
    (tmp_path / "again.yaml").write_text(exported)
    assert "No changes." in plait("apply", str(tmp_path / "again.yaml")).output
    spec.write_text("workspace: {slug: acme}\nidentity: {identifiers: {email: {limit: 0}}}\n")
    result = plait("apply", str(spec), ok=False)
    assert result.exit_code == 1 and "identity.identifiers.email.limit" in result.output


def test_worker_rebuild_explain_and_unmerge_through_the_cli(plait, store):
    from log_messages import append

    plait("workspace-create", "acme")
    ws = Workspaces(store).get_workspace("acme")["id"]
    append(store, ws, [
        {"type": "identify", "anonymousId": "pc", "userId": "ann", "traits": {"name": "Ann"}},
        {"type": "identify", "anonymousId": "pc", "traits": {"email": "bob@x.com"}},
    ])  # fmt: skip
    assert "processed 2 messages" in plait("worker", "--once").output
    out = plait("profiles", "explain", "user_id:ann", "-w", "acme").output
    assert "email:bob@x.com" in out and "anonymous_id:pc" in out
    out = plait("profiles", "unmerge", "user_id:ann", "-i", "anonymous_id:pc", "-w", "acme",
                "--reason", "shared pc").output  # fmt: skip
    assert "2 messages resolved again into" in out
    out = plait("profiles", "explain", "email:bob@x.com", "-w", "acme", "--json").output
    assert '"user_id"' not in out and "shared pc" in out
    assert "rebuilt from 2 messages" in plait("rebuild", "-w", "acme", "--yes").output
    missing = plait("profiles", "explain", "email:nobody@x.com", "-w", "acme", ok=False)
    assert missing.exit_code == 1 and "no profile" in missing.output
