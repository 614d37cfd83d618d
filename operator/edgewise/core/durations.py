"""Go-style durations ("1h30m", "90s", "500ms") and timestamps, as the API writes them."""

from __future__ import annotations

import datetime as dt
import re

from edgewise.api.base import DURATION_PART

_PART = re.compile(DURATION_PART)  # the grammar the CRD validates, so both agree
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text: str) -> float:
    """Seconds in `text`; raises ValueError when it is not a duration."""
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT[match.group(3)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 10m, 1h30m)")
    return total


# RFC 3339 in UTC, to the second: how status fields and Events write times.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime(TIME_FORMAT)


def parse_time(text: str | None) -> dt.datetime | None:
    """The time `iso` wrote; None for an empty or missing field."""
    if not text:
        return None
    return dt.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=dt.UTC)
