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
