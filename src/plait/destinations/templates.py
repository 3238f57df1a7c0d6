"""Message templates (Slack texts, email subjects and bodies): Python format fields over a
message and the person's traits (``{event}``, ``{properties[revenue]}``,
``{traits[first_name]}``); a field that is missing renders empty, never an error."""

from __future__ import annotations

import string
from typing import Any

from plait.store.workspaces import Invalid


class _Lenient(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return _Lenient({k: _wrap(v) for k, v in value.items()})
    return value


def render(template: str, values: dict[str, Any]) -> str:
    try:
        return string.Formatter().vformat(template, (), _wrap(values))
    except (KeyError, IndexError, AttributeError, ValueError, TypeError):
        return template


def check_template(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid(where, "a non-empty text with {fields}")
    try:
        list(string.Formatter().parse(value))
    except ValueError as exc:
        raise Invalid(where, f"not a template: {exc}") from None
    return value
