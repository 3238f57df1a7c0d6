"""Computed traits and audiences: definitions in a readable language (and its JSON form),
evaluated in memory as events arrive (the pipeline's stage) and in batch over the lake with
DuckDB (backfills, previews, reconciliations), the two agreeing. Importing the package adds
its step to privacy deletions: a deleted person's memberships, their history and computed
values go with the rest."""

from plait.govern import erase
from plait.store.schema import (
    audience_history,
    audience_members,
    audience_schedule,
    computed_values,
)


def erase_audience_state(e: erase.Erasure) -> None:
    """A deleted person's memberships, membership history, computed values and schedule."""
    for table in (audience_members, audience_history, computed_values, audience_schedule):
        e.delete_in(table, "profile_id", e.person.profile_ids)


if erase_audience_state not in erase.ERASURE_STEPS:
    erase.ERASURE_STEPS.append(erase_audience_state)
