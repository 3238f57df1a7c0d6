"""Email over SMTP, for messages such as an audience's entries ("Audience Entered", or its
identify): one email a message, to the person's address (``to``: a trait of the profile,
``email`` by default, else the message's ``traits.email`` or ``context.traits.email``),
from ``from``, with ``subject`` and ``body`` templates over the message and the person's
traits (``{traits[first_name]}``, ``{properties[audience_key]}``; plait.destinations.
templates). Choose which messages send with the destination's ``audiences``, ``types`` and
``filter``, e.g. ``filter: "event == 'Audience Entered'"``.

A batch is sent over one SMTP session (STARTTLS and login when set). A refused recipient
or another 5xx is a dead letter; a 4xx, a lost connection or a timeout is retried; a
message with no address for the person is a dead letter saying so. The ``Message-ID``
header derives from the delivery key, so a receiver can drop a repeat.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import httpx

from plait.destinations.connectors.base import Connector, Item, Outcome, Setting, known_settings
from plait.destinations.templates import check_template, render
from plait.store.workspaces import Invalid

SETTINGS = {
    "host": Setting(required=True, example="smtp.example.com"),
    "port": Setting("number", example=587, about="587 with STARTTLS, else 25"),
    "username": Setting(example="mailer"),
    "password": Setting(example="smtp-password"),
    "starttls": Setting("boolean", example=True),
    "from": Setting(required=True, example="plait@example.com", about="the sender's address"),
    "to": Setting(example="email", about="the trait holding the recipient's address"),
    "subject": Setting(example="{event}", about="a template: {event}, {traits[first_name]}"),
    "body": Setting(example="{event}: {properties[revenue]}"),
    "timeout": Setting("number", example=10, about="seconds"),
}


def _address(item: Item, trait: str) -> str | None:
    msg = item.message
    for value in (item.traits.get(trait), (msg.get("traits") or {}).get(trait),
                  ((msg.get("context") or {}).get("traits") or {}).get(trait)):  # fmt: skip
        if isinstance(value, str) and "@" in value:
            return value
    return None


class EmailSmtp(Connector):
    name = "email"
    max_batch = 100
    default_batch = 20
    secrets = ("password",)
    needs_traits = True
    lanes = 2

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        host = settings.get("host")
        if not isinstance(host, str) or not host:
            raise Invalid(f"{where}.host", "required: the SMTP server's host")
        port = settings.get("port", 587 if settings.get("starttls", True) else 25)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise Invalid(f"{where}.port", "a port number")
        sender = settings.get("from")
        if not isinstance(sender, str) or "@" not in sender:
            raise Invalid(f"{where}.from", "required: the sender's address")
        starttls = settings.get("starttls", True)
        if not isinstance(starttls, bool):
            raise Invalid(f"{where}.starttls", "must be true or false")
        for name in ("username", "password", "to"):
            if settings.get(name) is not None and not isinstance(settings[name], str):
                raise Invalid(f"{where}.{name}", "must be a string")
        timeout = settings.get("timeout", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise Invalid(f"{where}.timeout", "seconds, more than 0")
        return {
            "host": host, "port": port, "from": sender, "starttls": starttls,
            "username": settings.get("username"), "password": settings.get("password"),
            "to": settings.get("to", "email"), "timeout": float(timeout),
            "subject": check_template(settings.get("subject", "{event}"), f"{where}.subject"),
            "body": check_template(settings.get("body", "{event}"), f"{where}.body"),
        }  # fmt: skip

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        return await asyncio.to_thread(self.deliver, settings, items)

    def email(self, settings: dict[str, Any], item: Item, to: str) -> EmailMessage:
        values = {**item.message, "traits": {**(item.message.get("traits") or {}),
                                             **item.traits}}  # fmt: skip
        mail = EmailMessage()
        mail["From"], mail["To"] = settings["from"], to
        mail["Subject"] = render(settings["subject"], values)
        mail["Date"] = formatdate(usegmt=True)
        mail["Message-ID"] = f"<{item.key}@plait>"
        mail.set_content(render(settings["body"], values))
        return mail

    def deliver(self, settings: dict[str, Any], items: list[Item]) -> list[Outcome]:
        try:
            smtp = smtplib.SMTP(settings["host"], settings["port"], timeout=settings["timeout"])
        except (OSError, smtplib.SMTPException) as exc:
            return [Outcome(False, retry=True, response=f"connect: {exc}"[:1000])] * len(items)
        outcomes: list[Outcome] = []
        try:
            if settings["starttls"]:
                smtp.starttls(context=ssl.create_default_context())
            if settings["username"]:
                smtp.login(settings["username"], settings["password"] or "")
            for item in items:
                to = _address(item, settings["to"])
                if to is None:
                    outcomes.append(Outcome(False, response=f"no {settings['to']!r} address "
                                                             "for the person"))  # fmt: skip
                    continue
                try:
                    smtp.send_message(self.email(settings, item, to))
                    outcomes.append(Outcome(True, status=250, response=f"sent to {to}"))
                except smtplib.SMTPRecipientsRefused as exc:
                    code, text = next(iter(exc.recipients.values()))
                    outcomes.append(Outcome(False, retry=400 <= code < 500, status=code,
                                            response=str(text)[:1000]))  # fmt: skip
                except smtplib.SMTPResponseException as exc:
                    outcomes.append(Outcome(False, retry=400 <= exc.smtp_code < 500,
                                            status=exc.smtp_code,
                                            response=str(exc.smtp_error)[:1000]))  # fmt: skip
        except (OSError, smtplib.SMTPException) as exc:  # the session broke: retry the rest
            left = len(items) - len(outcomes)
            outcomes += [Outcome(False, retry=True, response=f"{type(exc).__name__}: {exc}"[:1000])
                         ] * left  # fmt: skip
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return outcomes
