"""Maintenance windows (spec.rollout.windows), pure: is a moment open, and when does it open next.

A moment is open when no Deny window covers it and either there is no Allow window or an Allow window
covers it. A window covers [start, start + duration) for every start its cron schedule fires, read as
wall-clock time in its time zone; the duration is real elapsed time.

Daylight-saving changes, defined as Vixie cron/cronie define them for jobs:

- a start the clock skips (02:30 on a spring-forward day in Berlin) opens when the clock jumps (03:00
  CEST), and lasts its full duration from there;
- a start the clock passes twice (01:30 on a fall-back day in New York) opens once, at its first pass
  (01:30 EDT). Starts that follow each other closer than the duration make one continuous window, so
  `* * * * *` stays open through the repeated hour.

`next_open` does not step minute by minute: each window's starts are grouped per day into runs of
starts closer together than its duration (computed once per schedule and duration), every run is one
interval, and a sweep moves from interval edge to interval edge. A year of a daily window is 366
intervals; `* * * * *` is one interval a day.

Time zones come from the tz database (`zoneinfo`: the system's, else the `tzdata` package). A window
with `timeZone: Site` is read in each node's own zone, from its `edgewise.io/time-zone` label ('.' for
'/'); `gate` evaluates a group of nodes: open when the windows are open in every zone among them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edgewise.api.windows import SITE_TIME_ZONE, TIME_ZONE_LABEL, Window
from edgewise.core.durations import seconds
from edgewise.core.observed import NodeInfo

HORIZON = dt.timedelta(days=366)  # how far ahead next_open looks
_DAY = dt.timedelta(days=1)
_SECOND = dt.timedelta(seconds=1)

_MONTHS = {n: i + 1 for i, n in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_WEEKDAYS = {n: i for i, n in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field schedule. Weekdays 0-6 from Sunday."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # day-of-month started with '*'
    any_weekday: bool  # day-of-week started with '*'

    def fires_on(self, day: dt.date) -> bool:
        """Cron's rule: with both day fields restricted, either one matching is enough."""
        if day.month not in self.months:
            return False
        by_day = day.day in self.days
        by_weekday = day.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return by_day and by_weekday
        return by_day or by_weekday


@lru_cache(maxsize=512)
def parse_cron(text: str) -> Cron:
    """The schedule; ValueError with a message a person can act on."""
    expanded = _MACROS.get(text.strip().lower(), text)
    fields = expanded.split()
    if len(fields) != 5:
        raise ValueError(f"schedule {text!r} has {len(fields)} fields, not 5 (minute hour day-of-month month "
                         "day-of-week)")
    minute, hour, day, month, weekday = fields
    weekdays = _values(weekday, 0, 7, _WEEKDAYS, "day-of-week", text)
    return Cron(minutes=tuple(sorted(_values(minute, 0, 59, {}, "minute", text))),
                hours=tuple(sorted(_values(hour, 0, 23, {}, "hour", text))),
                days=_values(day, 1, 31, {}, "day-of-month", text),
                months=_values(month, 1, 12, _MONTHS, "month", text),
                weekdays=frozenset(d % 7 for d in weekdays),
                any_day=day.startswith("*"), any_weekday=weekday.startswith("*"))


def _values(field: str, lo: int, hi: int, names: dict[str, int], what: str, text: str) -> frozenset[int]:
    out: set[int] = set()
    for item in field.split(","):
        body, slash, step_text = item.partition("/")
        step = _number(step_text, {}, what, text) if slash else 1
        if step < 1:
            raise ValueError(f"schedule {text!r}: the {what} step must be at least 1")
        if body == "*":
            first, last = lo, hi
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _number(a, names, what, text), _number(b, names, what, text)
        else:
            first = _number(body, names, what, text)
            last = hi if slash else first  # "5/15": from 5, every 15
        if not lo <= first <= last <= hi:
            raise ValueError(f"schedule {text!r}: {what} {body!r} must lie within {lo}-{hi}, low to high")
        out.update(range(first, last + 1, step))
    return frozenset(out)


def _number(text: str, names: dict[str, int], what: str, schedule: str) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise ValueError(f"schedule {schedule!r}: {text!r} is not a {what}")
    return int(text)


def zone(name: str) -> ZoneInfo:
    """The zone of an IANA name; ValueError when the tz database does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or "
                         "America/New_York") from err


def node_zone(node: NodeInfo) -> str | None:
    """The node's own zone from its label, '.' read as '/' (Europe.Berlin → Europe/Berlin); None without it."""
    value = node.labels.get(TIME_ZONE_LABEL)
    return value.replace(".", "/") if value else None


def uses_site_zone(windows: Sequence[Window]) -> bool:
    return any(w.time_zone == SITE_TIME_ZONE for w in windows)


def problems(windows: Sequence[Window]) -> list[str]:
    """What makes these windows impossible to evaluate (schedules, fixed zones, durations)."""
    out = []
    for w in windows:
        try:
            parse_cron(w.schedule)
            seconds(w.duration)
            if w.time_zone != SITE_TIME_ZONE:
                zone(w.time_zone)
        except ValueError as err:
            out.append(str(err))
    return out


def is_open(windows: Sequence[Window], now: dt.datetime, site_zone: str | None = None) -> bool:
    return next_open(windows, now, site_zone) == now


def next_open(windows: Sequence[Window], now: dt.datetime, site_zone: str | None = None,
              horizon: dt.timedelta = HORIZON) -> dt.datetime | None:
    """The first moment at or after `now` that is open; None if none within `horizon`.

    `site_zone` is the zone of `timeZone: Site` windows (a node's zone). Raises ValueError for a window
    that cannot be evaluated (see `problems`), or a Site window without `site_zone`.
    """
    if not windows:
        return now
    end = now + horizon
    denies = [_Cursor(_intervals(w, _zone_of(w, site_zone), now, end)) for w in windows if w.kind == "Deny"]
    allows = [_Cursor(_intervals(w, _zone_of(w, site_zone), now, end)) for w in windows if w.kind == "Allow"]
    t = now
    # The open set changes only where a Deny interval ends or an Allow interval starts: jump between those.
    while t <= end:
        moved = False
        for cursor in denies:
            covering = cursor.ending_after(t)
            if covering is not None and covering[0] <= t:
                t, moved = covering[1], True
        if allows:
            ahead = [iv for c in allows if (iv := c.ending_after(t)) is not None]
            if not ahead:
                return None
            start = min(max(iv[0], t) for iv in ahead)
            if start > t:
                t, moved = start, True
        if not moved:
            return t if t <= end else None
    return None


def _zone_of(w: Window, site_zone: str | None) -> ZoneInfo:
    if w.time_zone != SITE_TIME_ZONE:
        return zone(w.time_zone)
    if site_zone is None:
        raise ValueError(f"a window with timeZone Site needs the node's {TIME_ZONE_LABEL} label")
    return zone(site_zone)


class _Cursor:
    """Walks one window's intervals forward, never back (the sweep's time only grows)."""

    def __init__(self, intervals: Iterator[tuple[dt.datetime, dt.datetime]]) -> None:
        self._it = intervals
        self._current = next(self._it, None)

    def ending_after(self, t: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
        """The first interval that ends after t (it may start later); None when there is none."""
        while self._current is not None and self._current[1] <= t:
            self._current = next(self._it, None)
        return self._current


def _intervals(w: Window, tz: ZoneInfo, since: dt.datetime, until: dt.datetime
               ) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """The window's merged intervals in time order, from any that still covers `since`, to `until`."""
    cron = parse_cron(w.schedule)
    length = dt.timedelta(seconds=seconds(w.duration))
    runs = _day_runs(cron, int(length.total_seconds() // 60))
    day = (since - length).astimezone(tz).date() - _DAY
    last = until.astimezone(tz).date() + _DAY
    current: tuple[dt.datetime, dt.datetime] | None = None
    while day <= last:
        if cron.fires_on(day):
            for first, final in runs:
                start, stop = _instant(day, first, tz), _instant(day, final, tz) + length
                if current is not None and start <= current[1]:
                    current = (current[0], max(current[1], stop))
                    continue
                if current is not None:
                    yield current
                current = (start, stop)
        day += _DAY
    if current is not None:
        yield current


@lru_cache(maxsize=512)
def _day_runs(cron: Cron, gap_minutes: int) -> tuple[tuple[int, int], ...]:
    """A day's starts (minutes since midnight) as runs: starts at most `gap_minutes` apart are one run,
    since their windows overlap. At most 1,440 starts, once per schedule and duration."""
    runs: list[tuple[int, int]] = []
    for start in (h * 60 + m for h in cron.hours for m in cron.minutes):
        if runs and start - runs[-1][1] <= gap_minutes:
            runs[-1] = (runs[-1][0], start)
        else:
            runs.append((start, start))
    return tuple(runs)


def _instant(day: dt.date, minute: int, tz: ZoneInfo) -> dt.datetime:
    """The moment a wall-clock time of `day` happens in `tz` (UTC): its first pass when the clock passes it
    twice, the moment the clock jumps when it skips it."""
    wall = dt.datetime.combine(day, dt.time(minute // 60, minute % 60))
    first = wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first  # exists (fold=0 is the first pass of a repeated time)
    # Skipped: the two readings of `wall` fall either side of the jump; find the jump to the second.
    a, b = sorted((first, wall.replace(tzinfo=tz, fold=1).astimezone(dt.UTC)))
    after = b.astimezone(tz).utcoffset()
    while b - a > _SECOND:
        mid = a + (b - a) / 2
        if mid.astimezone(tz).utcoffset() == after:
            b = mid
        else:
            a = mid
    return b.replace(microsecond=0)


@dataclass(frozen=True)
class Gate:
    """Windows evaluated for a group of nodes at one moment."""

    open: bool
    opens_at: dt.datetime | None = None  # closed: when it opens for every zone of the group (None: not within HORIZON)
    problem: str = ""  # closed because the windows cannot be evaluated: why


def gate(windows: Sequence[Window] | None, zones: Collection[str | None], now: dt.datetime) -> Gate:
    """Are `windows` open now for nodes in `zones` (their `node_zone`, None for a node without the label)?

    With `timeZone: Site` windows, open means open in every zone of the group at once, and `opens_at` is
    the first moment that holds (a step that moves nodes of two zones waits for both). Windows that cannot
    be evaluated keep the gate closed and say why: a step never goes out on a guess.
    """
    if not windows:
        return Gate(open=True)
    found = problems(windows)
    if found:
        return Gate(open=False, problem="; ".join(found))
    groups: set[str | None] = {None}
    if uses_site_zone(windows):
        if None in zones:
            return Gate(open=False, problem=f"a window has timeZone Site and some nodes have no {TIME_ZONE_LABEL} "
                                            "label (an IANA name with '.' for '/', e.g. Europe.Berlin)")
        groups = set(zones)
        bad = sorted(problem for z in groups if (problem := _zone_problem(z)))
        if bad:
            return Gate(open=False, problem=f"label {TIME_ZONE_LABEL}: {bad[0]}")
        if not groups:
            return Gate(open=True)  # no node in the group: nothing to hold
    t, end = now, now + HORIZON
    while t <= end:
        latest = t
        for z in groups:
            opens = next_open(windows, t, z, end - t)
            if opens is None:
                return Gate(open=False)
            latest = max(latest, opens)
        if latest == t:
            return Gate(open=t == now, opens_at=None if t == now else t)
        t = latest
    return Gate(open=False)


def _zone_problem(name: str | None) -> str:
    try:
        zone(name or "")
    except ValueError as err:
        return str(err)
    return ""
