"""PII handling at ingestion: detect personal data in a message and keep, mask, hash, drop or
encrypt it before the message is written to the log, so the log never holds what the
workspace's policy removes.

```yaml
pii:
  detect: [email, phone, card_number, national_id, ip]   # default: all five
  actions: {email: hash, phone: mask, card_number: drop, national_id: drop, ip: mask}
  fields:                                                 # per path; beats detection
    properties.ssn: drop
    traits.email: encrypt
    traits.mobile: {action: hash, kind: phone}            # normalize as a phone
  scan: [properties, traits, context.traits]              # where detectors look (default)
  phone_region: US                                        # for numbers without "+"
```

``compile_policy`` validates that section once; ``PiiPolicy.apply`` then walks the scanned
roots, where most strings are rejected by a few character tests and the rest by one regex
(see ``detectors``). Precedence for a value: a ``fields`` rule, then a tracking plan's
``pii:`` kind for the path, then detection. ``context.ip`` (where Segment keeps the
client's address) gets the ``ip`` action whenever ``ip`` is detected.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import phonenumbers

from plait.govern import detectors
from plait.govern.crypto import Keyring, PiiKeyError, is_encrypted
from plait.govern.detectors import IPV4_ADDRESS, KINDS, MAX_LENGTH, NINO_THIRD
from plait.store.workspaces import Invalid

__all__ = [
    "ACTIONS", "KINDS", "Finding", "Keyring", "PiiKeyError", "PiiPolicy", "compile_policy",
]  # fmt: skip

ACTIONS = ("keep", "mask", "hash", "drop", "encrypt")
# Cards and national ids have no use in a CDP; emails, phones and ips drive identity and
# messaging, so by default they are only reported until the workspace says otherwise.
DEFAULT_ACTIONS = {
    "email": "keep", "phone": "keep", "card_number": "drop", "national_id": "drop", "ip": "keep",
}  # fmt: skip
DEFAULT_SCAN = ("properties", "traits", "context.traits")
ROOTS = ("properties", "traits", "context")
DEFAULT_REGION = "US"
_KEYS = ("detect", "actions", "fields", "scan", "phone_region")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_ALL_KINDS = frozenset(KINDS)


class Finding(NamedTuple):
    """A value the policy acted on: where (``properties.products[0].email``), what kind
    (None for a ``fields`` rule whose value is not a recognised kind) and the action."""

    path: str
    kind: str | None
    action: str


@dataclass(frozen=True, slots=True)
class _Rule:
    path: str
    keys: tuple[str, ...]
    action: str
    kind: str | None  # declared (plan, or ``fields`` with a kind); else detected per value


class _Node:
    """The rule tree: one node per path segment, so the detection walk can skip what a rule
    owns with one dict lookup per key, and only under keys that have rules."""

    __slots__ = ("rule", "children")

    def __init__(self) -> None:
        self.rule: _Rule | None = None
        self.children: dict[str, _Node] = {}


class PiiPolicy:
    """A compiled ``pii:`` section; ``apply`` is the per-message work."""

    def __init__(
        self,
        kinds: frozenset[str],
        actions: dict[str, str],
        scan: tuple[tuple[str, ...], ...],
        rules: list[_Rule],
        region: str | None,
    ):
        self.kinds = kinds
        self.actions = actions
        self.region = region
        # Deepest first: "properties.address.city: drop" runs before "properties.address:
        # encrypt", so both apply.
        self.rules = sorted(rules, key=lambda rule: -len(rule.keys))
        self.encrypts = any(rule.action == "encrypt" for rule in rules) or any(
            actions[kind] == "encrypt" for kind in kinds
        )
        self.detector = detectors.Detector(kinds, region)
        # Values under a rule without a declared kind are classified against every kind,
        # so "traits.email: mask" masks like an email.
        self._any = detectors.Detector(_ALL_KINDS, region)
        self._tree = _Node()
        for rule in rules:
            node = self._tree
            for key in rule.keys:
                node = node.children.setdefault(key, _Node())
            node.rule = rule
        # (root keys, dotted root, rule node under it); a root a rule owns is not scanned.
        self._scan: list[tuple[str, tuple[str, ...], str, _Node | None]] = []
        if self.detector.pattern is not None:
            for keys in scan:
                node: _Node | None = self._tree
                for key in keys:
                    node = node.children.get(key) if node is not None else None
                    if node is not None and node.rule is not None:
                        break
                else:
                    self._scan.append((keys[0], keys[1:], ".".join(keys), node))
        # Segment keeps the client's address in context.ip, outside the default roots.
        ip_node = self._tree.children.get("context")
        ip_node = ip_node.children.get("ip") if ip_node is not None else None
        self._context_ip = (
            "ip" in kinds
            and actions["ip"] != "keep"  # an address in every message: not worth a finding
            and (ip_node is None or ip_node.rule is None)
            and ("context",) not in scan
        )
        self._ip_finding = Finding("context.ip", "ip", actions["ip"])  # immutable: shared

    def apply(self, msg: dict, keyring: Keyring | None, workspace_id: str) -> list[Finding]:
        """Detect and handle PII in ``msg`` in place; what was done, one Finding a value.

        Raises ``PiiKeyError`` when the policy encrypts and ``keyring`` is None."""
        if self.encrypts and keyring is None:
            raise PiiKeyError(
                "the workspace's pii policy encrypts, but no keys are configured: set "
                "PLAIT_PII_KEYS (make a key with Keyring.generate_key())"
            )
        findings: list[Finding] = []
        ctx = (findings, keyring, workspace_id)
        for rule in self.rules:
            self._rule(msg, rule, 0, "", ctx)
        for first, rest, dotted, node in self._scan:
            container = msg.get(first)
            for key in rest:
                container = container.get(key) if type(container) is dict else None
            if type(container) is dict and container:
                self._walk(container, dotted, node, ctx)
        if self._context_ip:
            context = msg.get("context")
            if type(context) is dict:
                value = context.get("ip")
                if type(value) is str and self._ip(context, value, ctx):
                    del context["ip"]
        return findings

    def _ip(self, context: dict, value: str, ctx: tuple) -> bool:
        """context.ip, in every message from a collector: the common IPv4 case without
        building an address object. True when it is to be dropped."""
        action = self.actions["ip"]
        if IPV4_ADDRESS.fullmatch(value) is None:
            return detectors.is_ip(value) and self._act(
                context, "ip", value, "ip", "context.ip", ctx
            )
        ctx[0].append(self._ip_finding)
        if action == "mask":
            context["ip"] = value[: value.rindex(".")] + ".0"
        elif action == "drop":
            return True
        else:
            context["ip"] = self._transform(value, "ip", action, ctx)
        return False

    # Detection ------------------------------------------------------------------------

    def _walk(self, obj: dict, prefix: str, node: _Node | None, ctx: tuple) -> None:
        # Step 1 of detection is inlined here (see detectors.Detector.candidate): this loop
        # runs for every value under the scanned roots, so it does as little as it can.
        detector = self.detector
        lead, email, colon, nino = detector.lead, detector.email, detector.colon, detector.nino
        drops = None
        for key, value in obj.items():
            if node is not None:
                child = node.children.get(key)
                if child is not None and child.rule is not None:
                    continue  # a rule owns this value and has handled it
            else:
                child = None
            kind_of = type(value)
            if kind_of is str:
                if (
                    not (
                        value[:1] in lead
                        or (email and "@" in value)
                        or (colon and ":" in value and "/" not in value)
                        or (nino and value[2:3] in NINO_THIRD and len(value) >= 9)
                    )
                    or len(value) > MAX_LENGTH
                ):
                    continue
                kind = detector.precise(value)
                if kind is None or (kind == "ip" and "version" in key.lower()):
                    continue  # "1.2.3.4" under a *version* key is a version
                if self._act(obj, key, value, kind, f"{prefix}.{key}", ctx):
                    drops = drops or []
                    drops.append(key)
            elif kind_of is dict:
                if value:
                    self._walk(value, f"{prefix}.{key}", child, ctx)
            elif kind_of is list:
                if value:
                    self._walk_list(value, f"{prefix}.{key}", child, key, ctx)
        if drops:
            for key in drops:
                del obj[key]

    def _walk_list(
        self, items: list, prefix: str, node: _Node | None, key: str, ctx: tuple
    ) -> None:
        classify = self.detector.classify
        drops = None
        for index, value in enumerate(items):
            kind_of = type(value)
            if kind_of is str:
                kind = classify(value)
                if kind is None or (kind == "ip" and "version" in key.lower()):
                    continue
                if self._act(items, index, value, kind, f"{prefix}[{index}]", ctx):
                    drops = drops or []
                    drops.append(index)
            elif kind_of is dict:
                self._walk(value, f"{prefix}[{index}]", node, ctx)
            elif kind_of is list:
                self._walk_list(value, f"{prefix}[{index}]", node, key, ctx)
        if drops:
            for index in reversed(drops):
                del items[index]

    def _act(
        self, parent: dict | list, key: Any, value: str, kind: str, path: str, ctx: tuple
    ) -> bool:
        """Apply ``kind``'s action to a detected value; True when it is to be dropped
        (the caller deletes after its loop, as it is iterating ``parent``)."""
        action = self.actions[kind]
        ctx[0].append(Finding(path, kind, action))
        if action == "drop":
            return True
        if action != "keep":
            parent[key] = self._transform(value, kind, action, ctx)
        return False

    # Rules ------------------------------------------------------------------------------

    def _rule(self, parent: Any, rule: _Rule, depth: int, prefix: str, ctx: tuple) -> None:
        if type(parent) is list:
            for index, item in enumerate(parent):
                self._rule(item, rule, depth, f"{prefix}[{index}]", ctx)
            return
        if type(parent) is not dict:
            return
        key = rule.keys[depth]
        if key not in parent:
            return
        path = f"{prefix}.{key}" if prefix else key
        if depth + 1 < len(rule.keys):
            self._rule(parent[key], rule, depth + 1, path, ctx)
            return
        if rule.action == "keep":
            return  # an exemption from detection, not a finding
        value = parent[key]
        if value is None and rule.action != "drop":
            return  # nothing to protect in a null
        kind = rule.kind
        if kind is None and type(value) is str:
            kind = self._any.classify(value)
        ctx[0].append(Finding(path, kind, rule.action))
        if rule.action == "drop":
            del parent[key]
        elif isinstance(value, dict | list):
            parent[key] = self._transform_tree(value, rule.kind, rule.action, ctx)
        else:
            parent[key] = self._transform_leaf(value, kind, rule.action, ctx)

    def _transform_tree(self, value: Any, kind: str | None, action: str, ctx: tuple) -> Any:
        """A rule's action on a container: it keeps its shape and every scalar inside is
        masked, hashed or encrypted."""
        if isinstance(value, dict):
            return {k: self._transform_tree(v, kind, action, ctx) for k, v in value.items()}
        if isinstance(value, list):
            return [self._transform_tree(v, kind, action, ctx) for v in value]
        if kind is None and isinstance(value, str):
            kind = self._any.classify(value)
        return self._transform_leaf(value, kind, action, ctx)

    def _transform_leaf(self, value: Any, kind: str | None, action: str, ctx: tuple) -> Any:
        """Numbers and booleans become text first (a masked, hashed or encrypted number is
        a string); null stays null."""
        if value is None:
            return None
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = value
        else:
            text = str(value)
        # Idempotent: a value that is already a token, or already a SHA-256 (clients often
        # send pre-hashed emails), is left as it is.
        if action == "encrypt" and is_encrypted(text):
            return text
        if action == "hash" and _HEX64.fullmatch(text.strip()):
            return text.strip().lower()
        return self._transform(text, kind, action, ctx)

    def _transform(self, text: str, kind: str | None, action: str, ctx: tuple) -> str:
        if action == "mask":
            return detectors.mask(kind, text)
        if action == "hash":
            normalized = detectors.normalize(kind, text, self.region)
            return hashlib.sha256(normalized.encode()).hexdigest()
        if action == "encrypt":
            # A known kind is encrypted in its canonical form (equal emails give equal
            # tokens); anything else exactly as sent, so decryption gives it back.
            plain = detectors.normalize(kind, text, self.region) if kind is not None else text
            return ctx[1].encrypt(plain, ctx[2])
        raise AssertionError(f"unexpected action {action!r}")


# Compiling -------------------------------------------------------------------------------


def _path(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, str) or not value:
        raise Invalid(field, "a path must be a non-empty string like 'properties.email'")
    keys = tuple(value.split("."))
    if any(not key for key in keys):
        raise Invalid(field, f"{value!r} has an empty segment")
    if keys[0] not in ROOTS:
        raise Invalid(field, f"{value!r} must start with one of {', '.join(ROOTS)}")
    return keys


def _kind(value: Any, field: str) -> str:
    if value not in KINDS:
        raise Invalid(field, f"unknown kind {value!r}; expected one of {', '.join(KINDS)}")
    return value


def _action(value: Any, field: str) -> str:
    if value not in ACTIONS:
        raise Invalid(field, f"unknown action {value!r}; expected one of {', '.join(ACTIONS)}")
    return value


def compile_policy(doc: dict | None, plan_fields: dict[str, str] | None = None) -> PiiPolicy | None:
    """The workspace's ``pii:`` section (``doc``) and the tracking plan's ``pii:`` fields
    (path -> kind) as one policy, or None when it would change nothing. Without a ``pii:``
    section nothing is detected; plan fields still get their kind's (default) action."""
    if doc is not None and not isinstance(doc, dict):
        raise Invalid("pii", "must be a mapping")
    section = doc or {}
    for key in section:
        if key not in _KEYS:
            raise Invalid(f"pii.{key}", f"unknown key; expected one of {', '.join(_KEYS)}")

    # A key given as null (``detect:`` with nothing after it) means its default.
    detect = section.get("detect")
    if detect is None:
        detect = list(KINDS) if doc is not None else []
    if not isinstance(detect, list):
        raise Invalid("pii.detect", f"must be a list of kinds ({', '.join(KINDS)})")
    kinds = frozenset(_kind(kind, f"pii.detect[{i}]") for i, kind in enumerate(detect))

    actions = dict(DEFAULT_ACTIONS)
    given = section.get("actions") or {}
    if not isinstance(given, dict):
        raise Invalid("pii.actions", "must map kinds to actions")
    for kind, action in given.items():
        actions[_kind(kind, f"pii.actions.{kind}")] = _action(action, f"pii.actions.{kind}")

    scan_doc = section.get("scan")
    if scan_doc is None:
        scan_doc = list(DEFAULT_SCAN)
    if not isinstance(scan_doc, list) or not scan_doc:
        raise Invalid("pii.scan", "must be a non-empty list of paths like 'properties'")
    scan_all = [_path(value, f"pii.scan[{i}]") for i, value in enumerate(scan_doc)]
    # A root inside another is already scanned with it.
    scan = tuple(
        dict.fromkeys(
            keys
            for keys in scan_all
            if not any(other != keys and keys[: len(other)] == other for other in scan_all)
        )
    )

    region = section.get("phone_region", DEFAULT_REGION)
    if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
        raise Invalid("pii.phone_region", f"{region!r} is not an ISO 3166 country code")

    rules: dict[tuple[str, ...], _Rule] = {}
    for path, kind in (plan_fields or {}).items():
        field = f"plan_fields.{path}"
        keys = _path(path, field)
        kind = _kind(kind, field)
        rules[keys] = _Rule(path, keys, actions[kind], kind)
    fields = section.get("fields") or {}
    if not isinstance(fields, dict):
        raise Invalid("pii.fields", "must map paths to actions")
    for path, spec in fields.items():
        field = f"pii.fields.{path}"
        keys = _path(path, field)
        kind = None
        if isinstance(spec, dict):
            extra = set(spec) - {"action", "kind"}
            if extra:
                raise Invalid(f"{field}.{sorted(extra)[0]}", "unknown key; use action and kind")
            if "kind" in spec:
                kind = _kind(spec["kind"], f"{field}.kind")
            action = _action(spec.get("action"), f"{field}.action")
        else:
            action = _action(spec, field)
        rules[keys] = _Rule(path, keys, action, kind)

    active = any(actions[kind] != "keep" for kind in kinds) or any(
        rule.action != "keep" for rule in rules.values()
    )
    if not active:
        return None
    return PiiPolicy(kinds, actions, scan, list(rules.values()), region)
