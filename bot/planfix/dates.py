"""Planfix `dd-mm-yyyy[ hh:mm]` dates to aware datetimes in the API user's zone, and back (PLANFIX-API.md §6.6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import Enum

from bot.planfix.models import Deadline

DATE_FORMAT = "%d-%m-%Y"
DATETIME_FORMAT = "%d-%m-%Y %H:%M"

# A date-only deadline falls due at the last minute of its day: Planfix itself reports such deadlines as
# `dd-mm-yyyy 23:59` inside <taskExpectDateChanged> (GO fixture action.getList.xml), and the API has minute
# resolution, so 23:59 is the last instant it can name.
END_OF_DAY = time(23, 59)


def localize(naive: datetime, tz: tzinfo) -> datetime:
    """Attach `tz` to a wall-clock time, DST-safe.

    Ambiguous times (the repeated hour when clocks go back) take the first occurrence (fold=0). Non-existent
    times (the skipped hour when clocks go forward) are moved forward by the gap, e.g. 02:30 → 03:30, so the
    result always shows a wall time that really exists in `tz`.
    """
    return naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)


def parse_date(text: str | None) -> date | None:
    """`dd-mm-yyyy` → date; None or blank → None. Raises ValueError on anything else."""
    text = (text or "").strip()
    if not text:
        return None
    return datetime.strptime(text, DATE_FORMAT).date()


def parse_datetime(text: str | None, tz: tzinfo) -> datetime | None:
    """`dd-mm-yyyy hh:mm` (or a bare `dd-mm-yyyy`, read as 00:00) → aware datetime in `tz`; blank → None.

    Raises ValueError on anything else.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        naive = datetime.strptime(text, DATETIME_FORMAT)
    except ValueError:
        naive = datetime.strptime(text, DATE_FORMAT)
    return localize(naive, tz)


def deadline_for_date(day: date, tz: tzinfo) -> Deadline:
    """The Deadline of a date-only deadline: due at 23:59 local time that day (see END_OF_DAY)."""
    return Deadline(due=localize(datetime.combine(day, END_OF_DAY), tz), date_only=True)


def parse_deadline(text: str | None, tz: tzinfo) -> Deadline | None:
    """A Planfix deadline text → Deadline; blank → None. Raises ValueError on anything else.

    `dd-mm-yyyy` gives a date-only Deadline due at 23:59 that day in `tz` (the last minute the API can
    express); `dd-mm-yyyy hh:mm` gives an exact one.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        return Deadline(due=localize(datetime.strptime(text, DATETIME_FORMAT), tz))
    except ValueError:
        return deadline_for_date(datetime.strptime(text, DATE_FORMAT).date(), tz)


def format_datetime(moment: datetime, tz: tzinfo) -> str:
    """An aware datetime → `dd-mm-yyyy hh:mm` in `tz` (seconds truncated), for request parameters."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: Planfix dates need an aware datetime")
    return moment.astimezone(tz).strftime(DATETIME_FORMAT)


class Covered(Enum):
    EXACT = "exact"  # the moment's own wall minute reads the same whichever way the server resolves it
    WIDENED = "widened"  # an ambiguous wall time (clocks went back) was moved outward to cover both readings


@dataclass(frozen=True)
class CoveringWallTime:
    wall: datetime  # naive, minute resolution, in the zone asked for
    reason: Covered


def _readings(wall: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    return tuple(wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1))  # type: ignore[return-value]


def covering_wall_time(moment: datetime, tz: tzinfo, *, earliest: bool) -> CoveringWallTime:
    """The local wall minute to send for one bound of a window so that the window covers `moment` however the
    server reads an ambiguous wall time (in the hour repeated when clocks go back, "02:30" is two moments).

    `earliest` (a from-bound): every reading is at or before `moment`'s minute; else (a to-bound) every reading
    is at or after it. Only the repeated hour is widened, outward to its unambiguous edge."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: Planfix dates need an aware datetime")
    minute = moment.astimezone(UTC).replace(second=0, microsecond=0)
    wall = minute.astimezone(tz).replace(tzinfo=None, fold=0)
    step = timedelta(minutes=-1 if earliest else 1)
    reason = Covered.EXACT
    # A repeated hour is at most a few hours long anywhere (usually 1 h, 30 min on Lord Howe): a bounded walk.
    for _ in range(24 * 60):
        readings = _readings(wall, tz)
        if (max(readings) <= minute) if earliest else (min(readings) >= minute):
            return CoveringWallTime(wall, reason)
        wall += step
        reason = Covered.WIDENED
    raise ValueError(f"no wall time in {tz} covers {moment.isoformat()}")


def format_wall(wall: datetime) -> str:
    """A naive local wall time → `dd-mm-yyyy hh:mm`."""
    return wall.strftime(DATETIME_FORMAT)


def format_date(day: date) -> str:
    """A calendar date → `dd-mm-yyyy`."""
    return day.strftime(DATE_FORMAT)
