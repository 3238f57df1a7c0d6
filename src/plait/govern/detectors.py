"""PII detectors, normalizers and maskers: pure functions over single values.

A string is classified in three steps, cheapest first, because almost every string in a
real event (names, URLs, SKUs, UUIDs, titles) is not PII:

1. ``Detector.candidate``: a few character tests (first character, '@', ':', length) that
   the walk in ``pii`` inlines; most strings stop here for ~0.1 µs.
2. One compiled regex (the union of the shapes of the detected kinds) in a ``fullmatch``.
3. The precise check of the shape that matched: Luhn and issuer prefix, SSN area rules,
   NINO prefix rules, ``ipaddress``, ``phonenumbers.is_possible_number``.

Detection looks at whole values, not inside free text: "call me at +1 415 555 0100" is not
flagged (name the field in ``pii.fields`` instead). Only strings are detected: numbers in
events are amounts, counts, ids and epoch timestamps, and a 13-digit epoch in milliseconds
would otherwise pass the Luhn check one time in ten.
"""

from __future__ import annotations

import ipaddress
import re

from plait.identity.identifiers import e164

KINDS = ("email", "phone", "card_number", "national_id", "ip")
MAX_LENGTH = 320  # longer strings are free text, not one identifier (an email is <= 254)

# Shapes, one named group each; a kind's shapes join the regex only when it is detected.
_EMAIL_CHAR = r"""[^\s@<>(),;:"\[\]\\/.]"""  # a domain label's characters
_EMAIL = (
    r"""[^\s@<>(),;:"\[\]\\]{1,64}@"""  # local part
    rf"(?:{_EMAIL_CHAR}+\.)+(?:(?!\d){_EMAIL_CHAR}){{2,63}}"  # domain; a TLD has no digits
)
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_IPV6 = r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?::\d{1,3}(?:\.\d{1,3}){3})?(?:%[\w.]+)?"
_SSN = r"\d{3}[- ]\d{2}[- ]\d{4}"
_NINO = r"[A-Za-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d]"
# Cards and phones: digits with the usual separators ('/' is left out: it writes dates).
_DIGITS = r"[+(]?\d[\d \-().]{4,28}\d"

_SHAPES = {
    "email": (("email", _EMAIL),),
    "ip": (("ipv4", _IPV4), ("ipv6", _IPV6)),
    "national_id": (("ssn", _SSN), ("nino", _NINO)),
    "card_number": (("digits", _DIGITS),),
    "phone": (("digits", _DIGITS),),
}
# The first alternative that matches the whole string wins, so the narrow shapes (an SSN,
# an IPv4 address) come before the catch-all run of digits.
_ORDER = ("email", "ipv4", "ssn", "nino", "digits", "ipv6")
_SPACE = " \t\r\n\f\v"  # what \s matches under re.ASCII


def _compile(pattern: str) -> re.Pattern[str]:
    # ASCII: \d must not match other scripts' digits ("٠"), which no detector handles.
    return re.compile(pattern, re.ASCII)


NINO_THIRD = frozenset("0123456789 ")  # what follows the two letters of a NINO

# Precise checks -------------------------------------------------------------------------

_NOT_DIGIT = _compile(r"\D")
_ID_SEPARATORS = _compile(r"[\s-]")
# Dates and decimal amounts are runs of digits too; they are never phones.
_DATE_OR_AMOUNT = _compile(
    r"\d{4}[-. ]\d{1,2}[-. ]\d{1,2}|\d{1,2}[-. ]\d{1,2}[-. ]\d{2,4}|\d+(?:\.\d+)?"
)
_PHONE_SEPARATOR = _compile(r"\d[ \-.]+\d")
_CARD_SHAPE = _compile(r"\d{4}(?:[ -]?\d{1,4}){2,5}|\d{4}[ -]?\d{6}[ -]?\d{4,5}")
# Issuer prefixes and lengths of the major networks: a Luhn-valid run of digits without
# one is an id (one random number in ten passes Luhn).
_CARD_NETWORK = _compile(
    r"4(?:\d{12}|\d{15}|\d{18})"  # Visa: 13, 16 or 19 digits
    r"|(?:5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # American Express
    r"|(?:6011|65\d{2}|64[4-9]\d)\d{12,15}"  # Discover
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB
    r"|3(?:0[0-5]|[689]\d)\d{11,16}"  # Diners Club
    r"|62\d{14,17}"  # UnionPay
    r"|(?:50|5[6-9]|6\d)\d{10,17}"  # Maestro
)
# SSA: area 000, 666 and 900-999, group 00 and serial 0000 are never issued.
_SSN_VALID = _compile(r"(?!000|666|9)\d{3}[- ](?!00)\d{2}[- ](?!0000)\d{4}")
# HMRC: first letter not D F I Q U V, second not D F I O Q U V; BG GB KN NK NT TN ZZ unused.
_NINO_VALID = _compile(
    r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
)
# Strict dotted quad (no leading zeros, as ``ipaddress`` requires): the common case of
# context.ip, checked and masked without building an address object.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_ADDRESS = _compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        n = ord(char) - 48
        if position & 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def is_card_number(text: str) -> bool:
    """13-19 digits (single spaces or dashes between groups allowed) with a major
    network's issuer prefix and length, passing the Luhn check."""
    text = text.strip()
    if not _CARD_SHAPE.fullmatch(text):
        return False
    digits = _NOT_DIGIT.sub("", text)
    return 13 <= len(digits) <= 19 and bool(_CARD_NETWORK.fullmatch(digits)) and luhn_valid(digits)


phone_e164 = e164  # identity's normalization: a hashed phone matches its identifier


def looks_like_phone(text: str) -> bool:
    """Written like a phone number: a leading "+", parentheses, or three groups of digits.
    A bare run of digits is an id (an order number, an epoch), not a phone."""
    text = text.strip()
    if text.startswith("+") or "(" in text:
        return True
    return len(_PHONE_SEPARATOR.findall(text)) >= 2 and not _DATE_OR_AMOUNT.fullmatch(text)


def is_phone(text: str, region: str | None) -> bool:
    digits = len(_NOT_DIGIT.sub("", text))
    if not 7 <= digits <= 15 or not looks_like_phone(text):
        return False
    return phone_e164(text.strip(), region) is not None


def is_ip(text: str) -> bool:
    text = text.strip()
    return IPV4_ADDRESS.fullmatch(text) is not None or parse_ip(text) is not None


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def is_national_id(text: str) -> bool:
    """A US Social Security number written with separators ("123-45-6789"; nine bare
    digits are indistinguishable from an id) or a UK National Insurance number."""
    text = text.strip()
    if text[:1].isdigit():
        return _SSN_VALID.fullmatch(text) is not None
    return _NINO_VALID.fullmatch(text.upper()) is not None


class Detector:
    """The detectors of a set of kinds, compiled once per policy."""

    __slots__ = ("kinds", "region", "pattern", "lead", "email", "colon", "nino")

    def __init__(self, kinds: frozenset[str], region: str | None):
        self.kinds = kinds
        self.region = region
        parts = dict(shape for kind in kinds for shape in _SHAPES[kind])
        alternatives = [f"(?P<{name}>{parts[name]})" for name in _ORDER if name in parts]
        self.pattern = (
            _compile(r"\s*(?:" + "|".join(alternatives) + r")\s*") if alternatives else None
        )
        # What step 1 lets through: a string starting like a number, an address or a
        # phone ("+", "("), or holding '@' (email) or ':' (IPv6), or NINO-sized.
        lead = _SPACE
        if kinds & {"phone", "card_number", "national_id", "ip"}:
            lead += "0123456789"
        if "phone" in kinds:
            lead += "+("
        self.lead = frozenset(lead)
        self.email = "email" in kinds
        self.colon = "ip" in kinds
        self.nino = "national_id" in kinds

    def candidate(self, text: str) -> bool:
        """Step 1 (``pii`` inlines the same tests in its walk)."""
        return bool(text) and (
            text[0] in self.lead
            or (self.email and "@" in text)
            or (self.colon and ":" in text and "/" not in text)
            or (self.nino and text[2:3] in NINO_THIRD and len(text) >= 9)
        )

    def classify(self, text: str) -> str | None:
        """The kind of PII ``text`` is, among ``kinds``, or None (steps 1 to 3)."""
        if len(text) > MAX_LENGTH or not self.candidate(text):
            return None
        return self.precise(text)

    def precise(self, text: str) -> str | None:
        """Steps 2 and 3, for a string that passed step 1."""
        if self.pattern is None:
            return None
        match = self.pattern.fullmatch(text)
        if match is None:
            return None
        shape = match.lastgroup
        if shape == "email":
            return "email"
        if shape == "ipv4" or shape == "ipv6":
            return "ip" if is_ip(text) else None
        if shape == "ssn" or shape == "nino":
            return "national_id" if is_national_id(text) else None
        # A run of digits: a card (13-19 digits) or a phone (7-15).
        if "card_number" in self.kinds and is_card_number(text):
            return "card_number"
        if "phone" in self.kinds and is_phone(text, self.region):
            return "phone"
        return None


# Normalization (what hash and encrypt see) ----------------------------------------------


def normalize(kind: str | None, text: str, region: str | None) -> str:
    """The canonical form of a value of ``kind``, so equal values hash and encrypt equally:
    email trimmed and lower-cased; phone E.164 ("+14155550100"); card digits only; national
    id upper-case without separators; ip in ``ipaddress``'s compressed form; else trimmed."""
    text = text.strip()
    if kind == "email":
        return text.lower()
    if kind == "phone":
        return phone_e164(text, region) or text
    if kind == "card_number":
        return _NOT_DIGIT.sub("", text)
    if kind == "national_id":
        return _ID_SEPARATORS.sub("", text).upper()
    if kind == "ip":
        if IPV4_ADDRESS.fullmatch(text):
            return text
        address = parse_ip(text)
        return str(address) if address is not None else text
    return text


# Masking -----------------------------------------------------------------------------------

GENERIC_MASK = "****"


def mask(kind: str | None, text: str) -> str:
    """A redacted form that keeps what support staff need to recognise a value: the first
    letter and domain of an email, the last 4 digits of a phone or card, the network part
    of an ip, the last 4 characters of a national id; "****" for anything else."""
    text = text.strip()
    if kind == "email" and "@" in text:
        local, _, domain = text.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if kind == "phone" or kind == "card_number":
        digits = _NOT_DIGIT.sub("", text)
        if len(digits) >= 8:
            return "*" * (len(digits) - 4) + digits[-4:]
    elif kind == "ip":
        return mask_ip(text)
    elif kind == "national_id":
        compact = _ID_SEPARATORS.sub("", text).upper()
        if len(compact) == 9 and compact.isdigit():
            return "***-**-" + compact[-4:]  # SSN
        if len(compact) == 9:
            return "*****" + compact[-4:]  # NINO: the last three digits and the letter
    return GENERIC_MASK


def mask_ip(text: str) -> str:
    """IPv4: the last octet zeroed (/24); IPv6: the last 80 bits zeroed (/48)."""
    text = text.strip()
    if IPV4_ADDRESS.fullmatch(text):
        return text[: text.rindex(".")] + ".0"
    address = parse_ip(text)
    if address is None:
        return GENERIC_MASK
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return "::ffff:" + mask_ip(str(mapped))
        return str(ipaddress.IPv6Address(int(address) >> 80 << 80))
    return mask_ip(str(address))
