"""The agent serves its node's power and temperature, read from the sysfs root it is pointed at."""

from __future__ import annotations

import json
from pathlib import Path

from cache_support import OPERATOR, POD, AgentProcess, get_json, http

from edgewise.contract import AGENT_TELEMETRY_PATH
from sysfs_support import hwmon_temp, jetson_orin_nano, set_ina3221_current


def test_the_operator_reads_power_and_temperature_from_the_agents_sysfs_root(agents, tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    hwmon = jetson_orin_nano(sysfs, vdd_in_ma=1800, millicelsius=52_000)
    agent: AgentProcess = agents("--sysfs-root", str(sysfs))
    body = get_json(agent.url + AGENT_TELEMETRY_PATH, token=OPERATOR)
    assert body["node"] == "node-a"
    assert body["power"]["watts"] == 9.0 and body["power"]["source"] == "ina3221 VDD_IN"
    assert body["temperature"]["celsius"] == 52.0 and body["temperature"]["sensor"] == "cpu-thermal"
    set_ina3221_current(hwmon, 1, 2480)  # read on each request, not cached
    assert get_json(agent.url + AGENT_TELEMETRY_PATH, token=OPERATOR)["power"]["watts"] == 12.4
    status, _, metrics = http("GET", agent.url + "/metrics")
    text = metrics.decode()
    assert status == 200
    assert 'edgewise_agent_power_watts{source="ina3221 VDD_IN"} 12.4' in text
    assert 'edgewise_agent_temperature_celsius{sensor="cpu-thermal"} 52.0' in text


def test_without_monitors_the_agent_says_unavailable_and_exports_no_number(agents, tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    hwmon_temp(sysfs, 0, "acpitz", {"": 27_800})  # a temperature, but no power monitor
    agent = agents("--sysfs-root", str(sysfs))
    body = get_json(agent.url + AGENT_TELEMETRY_PATH, token=OPERATOR)
    assert body["power"]["watts"] is None and "no power monitor under" in body["power"]["reason"]
    assert body["temperature"]["celsius"] == 27.8 and body["temperature"]["sensor"] == "acpitz"
    text = http("GET", agent.url + "/metrics")[2].decode()
    assert "edgewise_agent_power_watts{" not in text  # absent, not 0
    assert 'edgewise_agent_temperature_celsius{sensor="acpitz"} 27.8' in text


def test_telemetry_is_for_the_operator_only(agents, tmp_path: Path) -> None:
    agent = agents("--sysfs-root", str(tmp_path / "sys"))
    assert http("GET", agent.url + AGENT_TELEMETRY_PATH)[0] == 401
    status, _, body = http("GET", agent.url + AGENT_TELEMETRY_PATH, token=POD)
    assert status == 403, body
    assert "error" in json.loads(body)
