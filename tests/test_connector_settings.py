"""Each connector's declared settings (what the console's form and the destination-types API
show) are held to its check(): the examples pass, the required ones are required, the
optional ones are optional, and a value of the wrong kind is refused with its field."""

from __future__ import annotations

import sys

import pytest

from plait.destinations.connectors import CONNECTORS
from plait.store.workspaces import Invalid

WRONG = {"number": "not a number", "boolean": "yes", "choice": "no such choice", "json": "text"}
KINDS = {"text": str, "number": int | float, "boolean": bool, "choice": str, "json": dict}
WHERE = "destinations.x.settings"


def declared(name: str) -> dict:
    return sys.modules[type(CONNECTORS[name]).__module__].SETTINGS


def refused(name: str, settings: dict) -> str:
    with pytest.raises(Invalid) as caught:
        CONNECTORS[name].check(settings, WHERE)
    return caught.value.field


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_the_declared_settings_are_what_the_connector_checks(name):
    settings = declared(name)
    connector = CONNECTORS[name]
    assert settings and set(connector.secrets) <= set(settings)
    required = {k: s.example for k, s in settings.items() if s.required}
    connector.check({k: s.example for k, s in settings.items()}, WHERE)  # every example
    connector.check(dict(required), WHERE)  # the required alone are enough
    for key in required:
        rest = {k: v for k, v in required.items() if k != key}
        assert refused(name, rest) == f"{WHERE}.{key}"
    for key, setting in settings.items():
        assert isinstance(setting.example, KINDS[setting.kind]), key  # the kind's own values
        assert setting.kind == "number" or not isinstance(setting.example, int | float) or (
            setting.kind == "boolean" and isinstance(setting.example, bool)), key  # fmt: skip
        if setting.kind == "choice":
            assert setting.example in setting.choices
            for choice in setting.choices:
                connector.check({**required, key: choice}, WHERE)
        if setting.kind in WRONG:
            assert refused(name, {**required, key: WRONG[setting.kind]}) == f"{WHERE}.{key}"
    assert refused(name, {**required, "no_such_setting": 1}) == f"{WHERE}.no_such_setting"
