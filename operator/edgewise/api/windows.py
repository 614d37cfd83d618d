"""spec.rollout.windows: maintenance windows for staging and activation (as Argo CD's sync windows).

The types and their apply-time rules only; what a window means over time is `core/rollout/windows.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgewise.api.base import ApiModel, Duration, cel, duration_bounds, validations

# `timeZone: Site`: each node's own zone, from this node label. Label values cannot hold '/', so an IANA
# name is written with '.' in its place (Europe/Berlin → Europe.Berlin); no IANA name contains a '.'.
SITE_TIME_ZONE = "Site"
TIME_ZONE_LABEL = "edgewise.io/time-zone"

# Five cron fields (minute hour day-of-month month day-of-week) with lists, ranges, steps and names, or a
# macro. The values' ranges are in the pattern (minute 0-59, hour 0-23, day 1-31, month 1-12 or JAN-DEC,
# weekday 0-7 or SUN-SAT, 0 and 7 both Sunday), so `kubectl apply` refuses most mistakes; the operator
# parses the rest (a range that runs backwards, a zero step) and says so in the WindowsValid condition.
# No backslashes: the pattern goes into a CEL string as it is (RE2 and Python's re read it alike).


def _field(value: str) -> str:
    item = f"([*]|{value}(-{value})?)([/][0-9]{{1,2}})?"
    return f"{item}(,{item})*"


_MINUTE = "([0-5]?[0-9])"
_HOUR = "([01]?[0-9]|2[0-3])"
_DOM = "(0?[1-9]|[12][0-9]|3[01])"
_MONTH = "(0?[1-9]|1[0-2]|JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)"
_DOW = "([0-7]|SUN|MON|TUE|WED|THU|FRI|SAT)"
CRON_PATTERN = ("(?i)^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
                + " +".join(_field(v) for v in (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)) + ")$")
# An IANA name (Area/Location[/Sublocation]), UTC, or Site. Whether the zone exists only the operator
# knows (its tz database): an unknown one is reported in the WindowsValid condition.
TIME_ZONE_PATTERN = r"^(Site|UTC|[A-Za-z][-+_A-Za-z0-9]{0,31}(/[-+_A-Za-z0-9]{1,32}){0,2})$"

MAX_WINDOWS = 16


class Window(ApiModel):
    """A recurring window: from each time the cron schedule fires, for duration, in a time zone."""

    kind: Literal["Allow", "Deny"] = Field(
        default="Allow",
        description="Allow: the work may happen inside the window (with any Allow window, only inside one). "
                    "Deny: never inside the window; Deny wins over Allow.")
    schedule: str = Field(
        max_length=128,
        description="When the window opens: a 5-field cron expression (minute hour day-of-month month "
                    "day-of-week; lists, ranges, steps, JAN-DEC, SUN-SAT) in timeZone, e.g. '0 22 * * MON-FRI', "
                    "or @daily, @weekly, @monthly, @yearly, @hourly. A start the clock skips (spring forward) "
                    "opens when the clock jumps; a start it passes twice (fall back) opens once, at the first.",
        json_schema_extra=validations(cel(
            f"self.matches('{CRON_PATTERN}')",
            "schedule must be a 5-field cron expression (minute hour day-of-month month day-of-week) with "
            "values in range, e.g. '0 22 * * MON-FRI' or '30 2 1 * *', or @daily/@weekly/@monthly/@hourly")))
    duration: Duration = Field(
        description="How long the window stays open from each start (1m to 744h), e.g. 2h or 30m. Real "
                    "elapsed time: a 2h window across a DST change is 2 hours long.",
        json_schema_extra=duration_bounds("1m", "744h", "a window's duration"))
    time_zone: str = Field(
        default="UTC", max_length=72,
        description="IANA time zone the schedule is read in, e.g. Europe/Berlin; or Site: each node's zone "
                    f"from its {TIME_ZONE_LABEL} label, with '.' for '/' (label values cannot hold '/'): "
                    f"{TIME_ZONE_LABEL}=America.New_York.",
        json_schema_extra=validations(cel(
            f"self.matches('{TIME_ZONE_PATTERN}')",
            "timeZone must be an IANA time zone name such as Europe/Berlin or America/New_York, UTC, or Site "
            f"(each node's {TIME_ZONE_LABEL} label)")))


class Windows(ApiModel):
    """When a rollout may download artifacts (staging) and switch nodes (activation)."""

    staging: list[Window] | None = Field(
        default=None, max_length=MAX_WINDOWS,
        description="When node agents may prefetch a canary's artifact into their caches (e.g. at night). "
                    "Outside it nothing is prefetched: a node whose step comes first fetches at pod start. "
                    "Unset: any time.")
    activation: list[Window] | None = Field(
        default=None, max_length=MAX_WINDOWS,
        description="When a due step may move nodes to the new version: the first canary step, each next "
                    "step and the promotion wait while it is closed (the class says until when). A step "
                    "already moving finishes; a rollback never waits. Unset: any time.")
