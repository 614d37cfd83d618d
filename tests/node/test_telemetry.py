"""The agent's power and temperature readers, against sysfs trees laid out as the drivers lay them out."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.node.telemetry import NodeTelemetry, RaplReader, read_ina3221, read_temperature
from sysfs_support import (
    hwmon_temp,
    ina3221,
    ina3221x,
    jetson_orin_nano,
    rapl_zone,
    set_energy,
    set_ina3221_current,
    thermal_zone,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_jetson_power_is_the_input_rail_voltage_times_current(tmp_path: Path) -> None:
    hw = jetson_orin_nano(tmp_path, vdd_in_ma=1800)
    reading = read_ina3221(tmp_path)
    assert reading is not None and reading.watts == pytest.approx(9.0)  # 5000 mV × 1800 mA
    assert reading.source == "ina3221 VDD_IN"
    assert {r.name: round(r.watts, 3) for r in reading.rails} == {"VDD_IN": 9.0, "VDD_CPU_GPU_CV": 3.0, "VDD_SOC": 2.0}
    set_ina3221_current(hw, 1, 2480)
    assert read_ina3221(tmp_path).watts == pytest.approx(12.4)  # type: ignore[union-attr]


def test_ina3221_without_an_input_rail_reports_rails_but_no_node_power(tmp_path: Path) -> None:
    ina3221(tmp_path, {"VDD_GPU_SOC": (5000, 1000), "VDD_CPU_CV": (5000, 500), "NC": (0, 0)})
    reading = read_ina3221(tmp_path)
    assert reading is not None and reading.watts is None
    assert "no input rail" in reading.reason and "VDD_GPU_SOC" in reading.reason
    assert [r.name for r in reading.rails] == ["VDD_GPU_SOC", "VDD_CPU_CV"]  # the unconnected channel is skipped


def test_a_disabled_ina3221_channel_that_does_not_read_is_skipped(tmp_path: Path) -> None:
    hw = ina3221(tmp_path, {"VDD_IN": (5000, 1000), "VDD_SOC": (5000, 300)})
    (hw / "curr2_input").unlink()  # the driver answers ENODATA; a missing file reads the same here
    reading = read_ina3221(tmp_path)
    assert reading is not None and reading.watts == pytest.approx(5.0) and len(reading.rails) == 1


def test_jetpack4_iio_layout_reports_the_input_rail_in_milliwatts(tmp_path: Path) -> None:
    ina3221x(tmp_path, {"POM_5V_IN": 4200, "POM_5V_GPU": 800, "POM_5V_CPU": 1100})
    reading = read_ina3221(tmp_path)
    assert reading is not None and reading.watts == pytest.approx(4.2) and reading.source == "ina3221 POM_5V_IN"


def test_rapl_power_is_the_energy_difference_over_time_and_survives_a_wrap(tmp_path: Path) -> None:
    clock = Clock()
    pkg = rapl_zone(tmp_path, 0, "package-0", 1_000_000, max_range_uj=10_000_000)
    rapl_zone(tmp_path, 0, "core", 500_000, sub=0)  # a subzone: inside package-0, never added to it
    rapl = RaplReader(tmp_path, clock)
    first = rapl.read()
    assert first is not None and first.watts is None and "first RAPL reading" in first.reason
    clock.now += 2.0
    set_energy(pkg, 9_000_000)  # +8 J in 2 s
    second = rapl.read()
    assert second is not None and second.watts == pytest.approx(4.0) and second.source == "rapl package-0"
    clock.now += 2.0
    set_energy(pkg, 1_000_000)  # wrapped: 9 J → 10 J (the range) → 1 J, so 2 J used
    third = rapl.read()
    assert third is not None and third.watts == pytest.approx(1.0)


def test_rapl_sums_packages_and_prefers_psys_when_the_platform_has_it(tmp_path: Path) -> None:
    clock = Clock()
    p0 = rapl_zone(tmp_path, 0, "package-0", 0)
    p1 = rapl_zone(tmp_path, 1, "package-1", 0)
    rapl = RaplReader(tmp_path, clock)
    rapl.read()
    clock.now += 1.0
    set_energy(p0, 10_000_000)
    set_energy(p1, 5_000_000)
    reading = rapl.read()
    assert reading is not None and reading.watts == pytest.approx(15.0)
    assert reading.source == "rapl package-0+package-1"
    psys = rapl_zone(tmp_path, 2, "psys", 0)
    rapl = RaplReader(tmp_path, clock)
    rapl.read()
    clock.now += 1.0
    set_energy(psys, 40_000_000)
    reading = rapl.read()
    assert reading is not None and reading.watts == pytest.approx(40.0) and reading.source == "rapl psys"


def test_a_rapl_read_too_soon_after_the_last_keeps_the_last_power(tmp_path: Path) -> None:
    clock = Clock()
    pkg = rapl_zone(tmp_path, 0, "package-0", 0)
    rapl = RaplReader(tmp_path, clock)
    rapl.read()
    clock.now += 1.0
    set_energy(pkg, 7_000_000)
    assert rapl.read().watts == pytest.approx(7.0)  # type: ignore[union-attr]
    clock.now += 0.01
    set_energy(pkg, 7_100_000)  # 0.1 J in 10 ms would read as 10 W: too short a window to trust
    assert rapl.read().watts == pytest.approx(7.0)  # type: ignore[union-attr]


def test_temperature_is_the_hottest_sensor_of_thermal_zones_and_hwmon_ignoring_the_pmic(tmp_path: Path) -> None:
    jetson_orin_nano(tmp_path, millicelsius=48_500)
    reading = read_temperature(tmp_path)
    assert reading.celsius == pytest.approx(48.5) and reading.sensor == "cpu-thermal"  # not PMIC-Die's 100
    hwmon_temp(tmp_path, 3, "coretemp", {"Package id 0": 71_000, "Core 0": 69_000})
    reading = read_temperature(tmp_path)
    assert reading.celsius == pytest.approx(71.0) and reading.sensor == "coretemp Package id 0"
    assert len(reading.sensors) == 6


def test_a_machine_without_monitors_reports_unavailable_with_reasons_never_a_number(tmp_path: Path) -> None:
    (tmp_path / "class" / "thermal").mkdir(parents=True)
    telemetry = NodeTelemetry(tmp_path).read()
    assert telemetry.power.watts is None and "no power monitor" in telemetry.power.reason
    assert telemetry.temperature.celsius is None and "no thermal zone" in telemetry.temperature.reason
    assert telemetry.to_json()["power"]["watts"] is None


def test_an_unreadable_thermal_zone_is_left_out(tmp_path: Path) -> None:
    zone = thermal_zone(tmp_path, 0, "iwlwifi_1", 40_000)
    (zone / "temp").write_text("")  # the driver answers an error while the device sleeps
    thermal_zone(tmp_path, 1, "x86_pkg_temp", 55_000)
    reading = read_temperature(tmp_path)
    assert reading.celsius == pytest.approx(55.0) and [s.name for s in reading.sensors] == ["x86_pkg_temp"]


def test_the_node_prefers_the_jetson_input_rail_and_falls_back_to_rapl(tmp_path: Path) -> None:
    clock = Clock()
    jetson = tmp_path / "jetson"
    jetson_orin_nano(jetson, vdd_in_ma=2000)
    assert NodeTelemetry(jetson, clock).power().watts == pytest.approx(10.0)
    intel = tmp_path / "intel"
    pkg = rapl_zone(intel, 0, "package-0", 0)
    node = NodeTelemetry(intel, clock)
    assert node.power().watts is None
    clock.now += 5.0
    set_energy(pkg, 50_000_000)
    assert node.power().watts == pytest.approx(10.0)
