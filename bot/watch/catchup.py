"""Catching up without a flood: fold one chat's many (or old) events from one poll into a single digest.

After downtime the first poll can find dozens of changes at once. Each event is still detected, stored and
de-duplicated as usual (its key goes into the events table, so a re-poll never queues it again), but when one
chat would get more than `threshold` messages from that poll, the chat gets one `digest` event instead whose
`items` are the folded events (`Event.to_json()` each, oldest first) and whose `new_value` is their count.
Events older than `max_age` are never replayed one by one, in any poll: they go into the chat's digest too.
The digest key is derived from the chat and the folded event keys, so detecting the same set twice (a crash
before the commit, then the same poll again) cannot queue two digests.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.events import DIGEST, Event
from state.records import DeliveryRow


def digest_event(chat_id: int, folded: Sequence[Event], now: datetime) -> Event:
    """One `digest` for a chat: the folded events oldest first; the key depends only on chat and their keys."""
    ordered = sorted(folded, key=lambda e: (e.occurred_at, e.key))
    fingerprint = hashlib.sha256("\n".join(sorted(e.key for e in ordered)).encode("utf-8")).hexdigest()[:20]
    return Event(
        kind=DIGEST,
        key=f"{DIGEST}:{chat_id}:{fingerprint}",
        task_id=0,
        task_general=0,
        task_title="",
        occurred_at=now,
        new_value=str(len(ordered)),
        items=tuple(e.to_json() for e in ordered),
    )


def fold(
    events: Sequence[Event],
    rows: Sequence[DeliveryRow],
    now: datetime,
    *,
    threshold: int | None,
    max_age: timedelta | None,
) -> tuple[list[Event], list[DeliveryRow]]:
    """Replace each chat's rows by one digest row where needed; returns (digest events, rows to queue).

    `threshold` None means "not a catch-up poll": only events older than `max_age` are folded then."""
    by_key = {e.key: e for e in events}
    per_chat: dict[int, list[DeliveryRow]] = {}
    for row in rows:
        per_chat.setdefault(row.chat_id, []).append(row)
    digests: list[Event] = []
    kept: list[DeliveryRow] = []
    for chat_id, chat_rows in per_chat.items():
        if threshold is not None and len(chat_rows) > threshold:
            folded = chat_rows
        elif max_age is not None:
            folded = [r for r in chat_rows if r.event_key in by_key and now - by_key[r.event_key].occurred_at > max_age]
        else:
            folded = []
        folded_keys = {r.event_key for r in folded}
        kept.extend(r for r in chat_rows if r.event_key not in folded_keys)
        if not folded:
            continue
        digest = digest_event(chat_id, [by_key[r.event_key] for r in folded if r.event_key in by_key], now)
        digests.append(digest)
        # Quiet hours: the digest waits as long as the latest of the rows it replaces would have waited.
        waits = [r.not_before for r in folded if r.not_before is not None]
        kept.append(dataclasses.replace(folded[0], event_key=digest.key, not_before=max(waits) if waits else None))
    return digests, kept
