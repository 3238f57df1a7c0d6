"""The workspace file: apply is idempotent, prune disables, export round-trips."""

from __future__ import annotations

import itertools

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.api import workspace_file
from plait.store.workspaces import SOURCE_TYPES, Invalid, Workspaces

FILE = """
workspace: {slug: shop, name: Shop Inc.}
sources:
  - {name: Website, type: javascript}
  - {name: Backend, type: python, enabled: true}
  - {name: Legacy, type: http, enabled: false}
  - {name: Hooks}
"""


def sources(repo: Workspaces, workspace_id: str) -> dict[str, dict]:
    return {s["name"]: s for s in repo.list_sources(workspace_id)}


def test_apply_creates_the_workspace_and_sources_with_keys(store):
    repo = Workspaces(store)
    result = workspace_file.apply(repo, workspace_file.parse(FILE))
    workspace = repo.get_workspace("shop")
    assert result.workspace_id == workspace["id"] and workspace["name"] == "Shop Inc."
    assert result.created == ["Website", "Backend", "Legacy", "Hooks"]
    assert (result.updated, result.disabled, result.changed) == ([], [], True)
    got = sources(repo, workspace["id"])
    assert {n: (s["type"], s["enabled"]) for n, s in got.items()} == {
        "Website": ("javascript", True),
        "Backend": ("python", True),
        "Legacy": ("http", False),
        "Hooks": ("http", True),
    }
    assert set(result.new_write_keys) == set(got)
    for name, key in result.new_write_keys.items():
        auth = repo.authenticate_write_key(key)
        assert (auth.source_id, auth.workspace_id) == (got[name]["id"], workspace["id"])
        assert auth.enabled == (name != "Legacy")


def test_a_second_apply_changes_nothing_and_issues_no_keys(store):
    repo = Workspaces(store)
    doc = workspace_file.parse(FILE)
    first = workspace_file.apply(repo, doc)
    before = sources(repo, first.workspace_id)
    keys_before = {n: repo.list_write_keys(first.workspace_id, n) for n in before}
    for _ in range(2):
        again = workspace_file.apply(repo, workspace_file.parse(FILE))
        assert again.workspace_id == first.workspace_id
        assert (again.created, again.updated, again.disabled) == ([], [], [])
        assert again.new_write_keys == {} and not again.changed
    assert sources(repo, first.workspace_id) == before  # not even updated_at moved
    assert {n: repo.list_write_keys(first.workspace_id, n) for n in before} == keys_before
    for key in first.new_write_keys.values():
        assert repo.authenticate_write_key(key) is not None
    assert [w["slug"] for w in repo.list_workspaces()] == ["shop"]


def test_changed_sources_are_updated_in_place(store):
    repo = Workspaces(store)
    first = workspace_file.apply(repo, workspace_file.parse(FILE))
    ids = {n: s["id"] for n, s in sources(repo, first.workspace_id).items()}
    changed = (
        FILE.replace("Shop Inc.", "Shop GmbH")
        .replace("{name: Backend, type: python, enabled: true}", "{name: Backend, type: go}")
        .replace("enabled: false", "enabled: true")
    )
    result = workspace_file.apply(repo, workspace_file.parse(changed))
    assert result.created == [] and result.new_write_keys == {}
    assert sorted(result.updated) == ["Backend", "Legacy"]
    got = sources(repo, first.workspace_id)
    assert {n: s["id"] for n, s in got.items()} == ids
    assert (got["Backend"]["type"], got["Legacy"]["enabled"]) == ("go", True)
    assert repo.get_workspace("shop")["name"] == "Shop GmbH"
    assert repo.authenticate_write_key(first.new_write_keys["Legacy"]).enabled


def test_prune_disables_unlisted_sources_and_never_deletes(store):
    repo = Workspaces(store)
    first = workspace_file.apply(repo, workspace_file.parse(FILE))
    workspace_id = first.workspace_id
    repo.create_source(workspace_id, "Made by hand", "ios")
    short = workspace_file.parse(
        "workspace: {slug: shop}\nsources:\n  - {name: Website, type: javascript}\n"
    )
    kept = workspace_file.apply(repo, short)
    assert kept.disabled == [] and not kept.changed
    assert all(s["enabled"] for n, s in sources(repo, workspace_id).items() if n != "Legacy")

    pruned = workspace_file.apply(repo, short, prune=True)
    assert sorted(pruned.disabled) == ["Backend", "Hooks", "Made by hand"]  # Legacy already off
    got = sources(repo, workspace_id)
    assert len(got) == 5
    assert [n for n, s in got.items() if s["enabled"]] == ["Website"]
    assert repo.authenticate_write_key(first.new_write_keys["Backend"]).enabled is False
    assert workspace_file.apply(repo, short, prune=True).disabled == []
    assert repo.get_workspace("shop")["name"] == "Shop Inc."  # a file without a name keeps it

    back = workspace_file.apply(repo, workspace_file.parse(FILE), prune=True)
    assert sorted(back.updated) == ["Backend", "Hooks"] and back.disabled == []  # already off


def test_export_round_trips(store):
    repo = Workspaces(store)
    result = workspace_file.apply(repo, workspace_file.parse(FILE))
    text = workspace_file.export(repo, "shop")
    assert text == workspace_file.export(repo, result.workspace_id)
    doc = yaml.safe_load(text)
    assert doc["workspace"] == {"slug": "shop", "name": "Shop Inc."}
    assert sorted(doc["sources"], key=lambda s: s["name"]) == [
        {"name": "Backend", "type": "python", "enabled": True},
        {"name": "Hooks", "type": "http", "enabled": True},
        {"name": "Legacy", "type": "http", "enabled": False},
        {"name": "Website", "type": "javascript", "enabled": True},
    ]
    assert "key" not in text.lower()  # secrets never appear in the file
    again = workspace_file.apply(repo, workspace_file.parse(text), prune=True)
    assert not again.changed and again.new_write_keys == {}
    assert workspace_file.export(repo, "shop") == text

    # applied to a fresh workspace, the export reproduces it exactly
    copy = text.replace("slug: shop", "slug: shop-copy")
    workspace_file.apply(repo, workspace_file.parse(copy))
    assert workspace_file.export(repo, "shop-copy") == copy


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("workspace: [unclosed", "yaml"),
        ("", "workspace"),
        ("- a\n- b\n", "workspace"),
        ("workspace: shop\n", "workspace"),
        ("workspace: {slug: shop}\nsources: {name: Website}\n", "sources"),
    ],
)
def test_parse_errors_name_the_field(text, field):
    with pytest.raises(Invalid) as info:
        workspace_file.parse(text)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("workspace: {name: Shop}\n", "workspace.slug"),
        ("workspace: {slug: 5}\n", "workspace.slug"),
        ("workspace: {slug: Not A Slug}\n", "slug"),
        ("workspace: {slug: shop}\nsources:\n  - Website\n", "sources[0].name"),
        ("workspace: {slug: shop}\nsources:\n  - {name: A}\n  - {type: go}\n", "sources[1].name"),
        ("workspace: {slug: shop}\nsources:\n  - {name: A, enabled: 'no'}\n", "sources[0].enabled"),
        ("workspace: {slug: shop}\nsources:\n  - {name: A, enabled: 1}\n", "sources[0].enabled"),
        ("workspace: {slug: shop}\nsources:\n  - {name: A, type: cobol}\n", "type"),
        ("workspace: {slug: shop}\nsources:\n  - {name: '  '}\n", "name"),
        ("workspace: {slug: shop}\nsources:\n  - {name: A}\n  - {name: A}\n", "name"),
    ],
)
def test_apply_errors_name_the_field(store, text, field):
    repo = Workspaces(store)
    with pytest.raises(Invalid) as info:
        workspace_file.apply(repo, workspace_file.parse(text))
    assert info.value.field == field


_slugs = itertools.count()
source_specs = st.lists(
    st.tuples(
        st.text("abcXYZ -_é", min_size=1, max_size=12).filter(str.strip),
        st.sampled_from(sorted(SOURCE_TYPES)),
        st.booleans(),
    ),
    max_size=5,
    unique_by=lambda s: s[0],
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=source_specs, second=source_specs, prune=st.booleans())
def test_apply_converges_for_any_file(store, first, second, prune):
    repo = Workspaces(store)
    slug = f"ws-{next(_slugs)}"

    def doc(specs):
        return {
            "workspace": {"slug": slug},
            "sources": [{"name": n, "type": t, "enabled": e} for n, t, e in specs],
        }

    workspace_file.apply(repo, doc(first))
    result = workspace_file.apply(repo, doc(second), prune=prune)
    assert set(result.new_write_keys) == {n for n, _, _ in second} - {n for n, _, _ in first}
    settled = workspace_file.apply(repo, doc(second), prune=prune)
    assert not settled.changed and settled.new_write_keys == {}
    got = sources(repo, result.workspace_id)
    for name, type_, enabled in second:
        assert (got[name]["type"], got[name]["enabled"]) == (type_, enabled)
    for name in set(got) - {n for n, _, _ in second}:
        assert name in {n for n, _, _ in first}
        if prune:
            assert got[name]["enabled"] is False
    exported = workspace_file.parse(workspace_file.export(repo, slug))
    assert not workspace_file.apply(repo, exported, prune=True).changed
