"""Maintenance windows, pure: cron parsing, open/next-open with an injected clock, DST in two zones, deny
over allow, node zones from labels, and the apiserver's schedule pattern."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from edgewise.api.windows import CRON_PATTERN, TIME_ZONE_PATTERN, Window
from edgewise.core.observed import NodeInfo
from edgewise.core.rollout.windows import gate, is_open, next_open, node_zone, parse_cron, problems

UTC = dt.UTC


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def window(schedule: str, duration: str, zone: str = "UTC", kind: str = "Allow") -> Window:
    return Window.model_validate({"kind": kind, "schedule": schedule, "duration": duration, "timeZone": zone})


# --- cron ----------------------------------------------------------------------------------------


def test_cron_fields_lists_ranges_steps_and_names() -> None:
    c = parse_cron("0,30 8-10 */10 jan,JUL-aug MON-FRI")
    assert c.minutes == (0, 30) and c.hours == (8, 9, 10)
    assert c.days == {1, 11, 21, 31} and c.months == {1, 7, 8} and c.weekdays == {1, 2, 3, 4, 5}
    assert parse_cron("5/20 * * * *").minutes == (5, 25, 45)  # from 5, every 20
    assert parse_cron("0 0 * * 7").weekdays == {0}  # 7 is Sunday too
    assert parse_cron("@weekly") == parse_cron("0 0 * * 0")
    assert parse_cron("@hourly").hours == tuple(range(24))


def test_with_both_day_fields_restricted_either_one_fires_as_in_cron() -> None:
    c = parse_cron("0 0 13 * FRI")
    assert c.fires_on(dt.date(2026, 3, 13))  # the 13th (a Friday)
    assert c.fires_on(dt.date(2026, 3, 20))  # a Friday
    assert c.fires_on(dt.date(2026, 4, 13))  # the 13th, a Monday
    assert not c.fires_on(dt.date(2026, 4, 14))
    only_fridays = parse_cron("0 0 * * FRI")
    assert only_fridays.fires_on(dt.date(2026, 3, 20)) and not only_fridays.fires_on(dt.date(2026, 4, 13))


@pytest.mark.parametrize("schedule, message", [
    ("0 0 * *", "4 fields, not 5"),
    ("0 0 * * * *", "6 fields, not 5"),
    ("0 10-8 * * *", "hour '10-8' must lie within 0-23, low to high"),
    ("*/0 * * * *", "minute step must be at least 1"),
    ("60 * * * *", "minute '60' must lie within 0-59"),
    ("0 0 * * MOON", "'MOON' is not a day-of-week"),
])
def test_cron_mistakes_say_what_to_fix(schedule: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_cron(schedule)


@pytest.mark.parametrize("schedule, ok", [
    ("0 22 * * MON-FRI", True), ("*/15 0-5 1,15 * *", True), ("30 2 1 jan sun", True), ("@daily", True),
    ("0 0 31 12 7", True),
    ("60 * * * *", False), ("0 24 * * *", False), ("0 0 0 * *", False), ("0 0 * 13 *", False),
    ("0 0 * * 8", False), ("0 0 * *", False), ("0 0 * * * *", False), ("@often", False), ("0 0 * * MOON", False),
])
def test_the_apiservers_schedule_pattern_catches_obvious_mistakes(schedule: str, ok: bool) -> None:
    assert bool(re.match(CRON_PATTERN, schedule)) is ok


@pytest.mark.parametrize("name, ok", [("Europe/Berlin", True), ("America/Argentina/Buenos_Aires", True),
                                      ("UTC", True), ("Site", True), ("Etc/GMT+5", True),
                                      ("Europe Berlin", False), ("/Berlin", False), ("", False)])
def test_the_apiservers_time_zone_pattern(name: str, ok: bool) -> None:
    assert bool(re.match(TIME_ZONE_PATTERN, name)) is ok


# --- open and next open ------------------------------------------------------------------------


def test_no_windows_is_always_open() -> None:
    assert is_open([], utc(2026, 5, 1, 3, 0)) and next_open([], utc(2026, 5, 1, 3, 0)) == utc(2026, 5, 1, 3, 0)


def test_an_allow_window_is_open_for_its_duration_from_each_start() -> None:
    nightly = [window("0 22 * * *", "8h")]
    assert not is_open(nightly, utc(2026, 5, 1, 21, 59))
    assert is_open(nightly, utc(2026, 5, 1, 22, 0)) and is_open(nightly, utc(2026, 5, 2, 5, 59))
    assert not is_open(nightly, utc(2026, 5, 2, 6, 0))  # [start, start + duration)
    assert next_open(nightly, utc(2026, 5, 2, 6, 0)) == utc(2026, 5, 2, 22, 0)
    assert next_open(nightly, utc(2026, 5, 2, 3, 17, 42)) == utc(2026, 5, 2, 3, 17, 42)  # open now: now


def test_deny_wins_over_allow_and_deny_alone_closes_only_its_own_time() -> None:
    windows = [window("0 22 * * *", "8h"), window("0 0 * * SAT", "24h", kind="Deny")]
    friday_night, saturday_night = utc(2026, 5, 1, 23, 0), utc(2026, 5, 2, 23, 0)  # 2026-05-02 is a Saturday
    assert is_open(windows, friday_night)
    assert not is_open(windows, utc(2026, 5, 2, 1, 0))  # inside Friday's allow window, but Saturday denies
    assert not is_open(windows, saturday_night)
    assert next_open(windows, utc(2026, 5, 2, 1, 0)) == utc(2026, 5, 3, 0, 0)  # the deny ends inside an allow
    only_deny = [window("0 9 * * MON-FRI", "8h", kind="Deny")]  # never during the working day
    assert is_open(only_deny, utc(2026, 5, 4, 8, 59)) and not is_open(only_deny, utc(2026, 5, 4, 9, 0))
    assert next_open(only_deny, utc(2026, 5, 4, 12, 0)) == utc(2026, 5, 4, 17, 0)


def test_overlapping_starts_make_one_window_and_a_denied_year_never_opens() -> None:
    every_minute = [window("* * * * *", "1m", kind="Deny")]
    assert next_open(every_minute, utc(2026, 1, 1)) is None  # one interval a day, not 525,600 starts
    every_other = [window("*/2 * * * *", "1m", kind="Deny")]
    assert next_open(every_other, utc(2026, 1, 1, 0, 0, 30)) == utc(2026, 1, 1, 0, 1)
    weekdays = [window("* * * * MON-FRI", "1m", kind="Deny"), window("*/2 * * * *", "1m")]
    assert next_open(weekdays, utc(2026, 12, 7, 9, 0)) == utc(2026, 12, 12)  # Monday → Saturday 00:00


def test_a_window_that_does_not_come_within_the_horizon_never_opens() -> None:
    assert next_open([window("0 0 30 2 *", "1h")], utc(2026, 1, 1)) is None  # no 30 February
    leap_day = [window("0 0 29 2 *", "1h")]
    assert next_open(leap_day, utc(2026, 1, 1)) is None  # 2028 is more than 366 days away
    assert next_open(leap_day, utc(2027, 3, 1)) == utc(2028, 2, 29)


def test_durations_are_elapsed_time_across_a_dst_change() -> None:
    # Berlin springs forward at 02:00 CET on 2026-03-29: a 3h window from 01:00 CET ends at 05:00 CEST.
    w = [window("0 1 * * *", "3h", "Europe/Berlin")]
    assert is_open(w, utc(2026, 3, 29, 0, 0)) and is_open(w, utc(2026, 3, 29, 2, 59))
    assert not is_open(w, utc(2026, 3, 29, 3, 0))


# --- DST in two zones (2026: Berlin 29 March / 25 October, New York 8 March / 1 November) ----------


@pytest.mark.parametrize("zone, day, opens, next_day_opens", [
    # 02:30 does not exist: the window opens when the clock jumps to 03:00 (CEST +02:00, EDT -04:00).
    ("Europe/Berlin", 29, utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)),
    ("America/New_York", 8, utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)),
])
def test_spring_forward_a_skipped_start_opens_when_the_clock_jumps(zone: str, day: int, opens: dt.datetime,
                                                                   next_day_opens: dt.datetime) -> None:
    w = [window("30 2 * * *", "1h", zone)]
    assert next_open(w, utc(2026, 3, day - 1, 12, 0)) == opens
    assert is_open(w, opens + dt.timedelta(minutes=59)) and not is_open(w, opens + dt.timedelta(hours=1))
    assert next_open(w, opens + dt.timedelta(hours=1)) == next_day_opens  # back to 02:30, now summer time


@pytest.mark.parametrize("zone, schedule, first_pass, second_pass", [
    # Berlin: 02:30 CEST (00:30 UTC), then 02:30 CET (01:30 UTC) again.
    ("Europe/Berlin", "30 2 * * *", utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)),
    # New York: 01:30 EDT (05:30 UTC), then 01:30 EST (06:30 UTC) again.
    ("America/New_York", "30 1 * * *", utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)),
])
def test_fall_back_a_repeated_start_opens_once_at_its_first_pass(zone: str, schedule: str,
                                                                 first_pass: dt.datetime,
                                                                 second_pass: dt.datetime) -> None:
    w = [window(schedule, "30m", zone)]
    assert next_open(w, first_pass - dt.timedelta(hours=6)) == first_pass
    assert is_open(w, first_pass + dt.timedelta(minutes=29))
    assert not is_open(w, second_pass) and not is_open(w, second_pass + dt.timedelta(minutes=10))
    assert next_open(w, second_pass) == first_pass + dt.timedelta(days=1, hours=1)  # the next day, winter time


def test_an_every_minute_deny_stays_closed_through_the_repeated_hour() -> None:
    deny_sunday = [window("* * * * SUN", "1m", "America/New_York", kind="Deny")]
    assert not is_open(deny_sunday, utc(2026, 11, 1, 6, 15))  # 01:15 EST, the second 01:15 of the day
    assert next_open(deny_sunday, utc(2026, 11, 1, 6, 15)) == utc(2026, 11, 2, 5, 0)  # Monday 00:00 EST


# --- zones -----------------------------------------------------------------------------------------


def test_a_node_label_carries_its_zone_with_dots_for_slashes() -> None:
    assert node_zone(NodeInfo("n", labels={"edgewise.io/time-zone": "America.Argentina.Buenos_Aires"})) == \
        "America/Argentina/Buenos_Aires"
    assert node_zone(NodeInfo("n")) is None


def test_site_windows_open_per_zone_and_a_group_opens_when_every_zone_is_open() -> None:
    night = [window("0 2 * * *", "2h", "Site")]
    now = utc(2026, 11, 22, 12, 0)
    berlin = gate(night, {"Europe/Berlin"}, now)
    new_york = gate(night, {"America/New_York"}, now)
    assert (berlin.open, berlin.opens_at) == (False, utc(2026, 11, 23, 1, 0))  # 02:00 CET
    assert (new_york.open, new_york.opens_at) == (False, utc(2026, 11, 23, 7, 0))  # 02:00 EST
    both = gate(night, {"Europe/Berlin", "America/New_York"}, now)
    assert not both.open and both.opens_at is None and both.problem == ""  # never open in both at once
    long_night = [window("0 2 * * *", "8h", "Site")]
    assert gate(long_night, {"Europe/Berlin", "America/New_York"}, now).opens_at == utc(2026, 11, 23, 7, 0)
    assert gate(long_night, {"Europe/Berlin"}, utc(2026, 11, 23, 3, 0)).open


def test_windows_that_cannot_be_evaluated_keep_the_gate_closed_and_say_why() -> None:
    now = utc(2026, 11, 22, 12, 0)
    unknown = gate([window("0 2 * * *", "2h", "Mars/Olympus_Mons")], set(), now)
    assert not unknown.open and "unknown time zone 'Mars/Olympus_Mons'" in unknown.problem
    site = [window("0 2 * * *", "2h", "Site")]
    unlabelled = gate(site, {"Europe/Berlin", None}, now)
    assert not unlabelled.open and "have no edgewise.io/time-zone label" in unlabelled.problem
    bad_label = gate(site, {"Europe/Nowhere"}, now)
    assert not bad_label.open and "unknown time zone 'Europe/Nowhere'" in bad_label.problem
    assert problems([window("0 10-8 * * *", "1h")]) == ["schedule '0 10-8 * * *': hour '10-8' must lie within "
                                                        "0-23, low to high"]
    assert gate(site, set(), now).open  # no node moves: nothing to hold
    assert gate(None, set(), now).open
