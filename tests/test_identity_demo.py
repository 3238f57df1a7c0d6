"""The demo's multi-channel journeys end as one profile per person: devices, sign-up,
logins, email, in-store purchases known by email and calls known by phone."""

from __future__ import annotations

import sqlalchemy as sa
from log_messages import append

from plait.demo import Cast
from plait.pipeline.runner import Pipeline
from plait.store.schema import identifiers, log_messages, message_profiles, traits
from plait.store.workspaces import Workspaces


def test_each_demo_person_becomes_one_profile(store):
    ws = Workspaces(store).create_workspace("demo")["id"]
    cast = Cast(60, seed=7, days=20)
    person_of = {}
    for index in range(cast.count):
        for _, msg in cast.journey(index):
            person_of[msg["messageId"]] = index
    append(store, ws, list(cast.messages()))
    Pipeline(store).catch_up(ws)

    with store.engine.connect() as conn:
        placed = conn.execute(
            sa.select(log_messages.c.message_id, message_profiles.c.profile_id).join(
                message_profiles, message_profiles.c.log_offset == log_messages.c.log_offset
            )
        ).all()
        owned = conn.execute(
            sa.select(identifiers.c.type, identifiers.c.value, identifiers.c.profile_id)
        ).all()
        query = sa.select(traits.c.profile_id, traits.c.value).where(traits.c.key == "name")
        names = {pid: value for pid, value in conn.execute(query)}
    assert len(placed) == len(person_of)
    people_of_profile: dict[str, set[int]] = {}
    for message_id, profile_id in placed:
        assert profile_id is not None
        people_of_profile.setdefault(profile_id, set()).add(person_of[message_id])
    # No profile mixes two people.
    assert all(len(people) == 1 for people in people_of_profile.values())

    profile_by_identifier = {(t, v): pid for t, v, pid in owned}
    signed_up = [p for p in cast.people() if p.signs_up]
    assert len(signed_up) > 20
    for person in signed_up:
        profile = profile_by_identifier.get(("user_id", person.user_id))
        if profile is None:  # the journey ended before the sign-up
            continue
        assert profile_by_identifier[("email", person.email)] == profile
        if ("phone", person.phone) in profile_by_identifier:  # called support
            assert profile_by_identifier[("phone", person.phone)] == profile
        assert names[profile] == f'"{person.name}"'
        # Every message carrying the person's userId is on that one profile.
        mine = {mid for mid, who in person_of.items() if who == person.index}
        profiles = {pid for mid, pid in placed if mid in mine}
        assert profile in profiles
