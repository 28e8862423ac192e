"""No flood: fold one chat's many (or old) events from one poll into a single digest.

After downtime the first poll can find dozens of changes at once, and while running a bulk change in Planfix
(150 tasks moved at once) does the same. Each event is still detected, stored and de-duplicated as usual (its key
goes into the events table, so a re-poll never queues it again), but when one chat would get more than
`threshold` messages from that poll (the catch-up threshold after downtime, the burst threshold otherwise), the
chat gets one `digest` event instead (payload `Digest`) whose `items` are the folded events (`Event.to_json()`
each, oldest first); it says why (CATCHUP or BURST) and, when Telegram's length limit forces a burst into several
messages, which part this is of how many, and how many changes the whole burst holds. A burst
is never cut: `split` (from the notify layer, which knows how long each line renders) decides where its parts
end. A catch-up is split the same way but into at most CATCHUP_MAX_PARTS messages, the last one counting what
does not fit ("and N more"): a few minutes of downtime names every change, days of changes cannot flood a chat.
Events older than `max_age` are never replayed one by one, in any poll: they go into the chat's digest too.
The digest key is derived from the chat and the folded event keys, so detecting the same set twice (a crash
before the commit, then the same poll again) cannot queue two digests.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from bot.events import DIGEST, Digest, Event
from state.records import DeliveryRow

CATCHUP, BURST = "catchup", "burst"  # why a digest was made: downtime (or old news), or a burst while running
PART_SIZE = 25  # items per digest part when no `split` is given (the notify layer measures the real lines)
CATCHUP_MAX_PARTS = 5  # a catch-up digest names ~150+ changes in at most this many messages, then counts the rest

Split = Callable[[Sequence[Event]], list[list[Event]]]


def split_evenly(events: Sequence[Event], size: int = PART_SIZE) -> list[list[Event]]:
    return [list(events[i : i + size]) for i in range(0, len(events), size)] or [[]]


def digest_event(chat_id: int, folded: Sequence[Event], now: datetime, *, why: str = CATCHUP,
                 part: tuple[int, int] = (1, 1), of: int | None = None) -> Event:
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
        payload=Digest(why, tuple(e.to_json() for e in ordered), part=part[0], parts=part[1],
                       total=None if part == (1, 1) else of or len(ordered)),
    )


def fold(
    events: Sequence[Event],
    rows: Sequence[DeliveryRow],
    now: datetime,
    *,
    threshold: int | None,
    max_age: timedelta | None,
    why: str = CATCHUP,
    split: Split | None = None,
) -> tuple[list[Event], list[DeliveryRow]]:
    """Replace each chat's rows by one digest (in as many parts as the message length needs) where needed;
    returns (digest events, rows to queue).

    `threshold` None means "fold no crowd": only events older than `max_age` are folded then."""
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
        events_folded = sorted((by_key[r.event_key] for r in folded if r.event_key in by_key),
                               key=lambda e: (e.occurred_at, e.key))
        crowd = threshold is not None and len(chat_rows) > threshold
        # A live burst names every change, in as many messages as it takes; a catch-up (possibly days of changes)
        # takes at most CATCHUP_MAX_PARTS messages, the last one counting its tail ("and N more").
        burst = crowd and why == BURST
        parts = [p for p in (split or split_evenly)(events_folded) if p] or [events_folded]
        if not burst and len(parts) > CATCHUP_MAX_PARTS:
            parts = [*parts[: CATCHUP_MAX_PARTS - 1], [e for p in parts[CATCHUP_MAX_PARTS - 1 :] for e in p]]
        # Quiet hours: the digest waits as long as the latest of the rows it replaces would have waited.
        waits = [r.not_before for r in folded if r.not_before is not None]
        for index, part in enumerate(parts, 1):
            digest = digest_event(chat_id, part, now, why=why if crowd else CATCHUP, part=(index, len(parts)),
                                  of=len(events_folded))
            digests.append(digest)
            kept.append(dataclasses.replace(folded[0], event_key=digest.key, not_before=max(waits) if waits else None))
    return digests, kept
