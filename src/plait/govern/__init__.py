"""Governance and privacy: tracking plans, transformations, PII, consent, privacy requests,
retention and the audit log. Configuration errors raise ``plait.store.workspaces.Invalid``
(field, message), which the API answers with a 400 naming the field."""
