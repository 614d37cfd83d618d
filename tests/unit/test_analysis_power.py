"""The power and temperature rules of canary analysis: numbers in the verdict, unavailable → inconclusive."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgewise.api.crd import crd
from edgewise.api.model import Analysis
from edgewise.api.profile import Slo
from edgewise.api.resources import DeploymentProfile, EdgeModel
from edgewise.core.analysis import (
    CohortMetrics,
    Measurement,
    NodeReading,
    Outcome,
    PowerMeasurement,
    Thresholds,
    Verdict,
    judge,
)

BUSY = CohortMetrics(pods=1, requests=100, request_rate=10, error_rate=0.0, p95_latency_ms=5.0)


def m(canary: list[NodeReading], stable: list[NodeReading], traffic: CohortMetrics = BUSY) -> Measurement:
    return Measurement(canary=traffic, stable=traffic, power=PowerMeasurement(tuple(canary), tuple(stable)))


def r(node: str, watts: float | None = None, celsius: float | None = None, why: str = "no INA3221") -> NodeReading:
    return NodeReading(node, watts, celsius, sensor="cpu-thermal" if celsius is not None else "",
                       power_reason="" if watts is not None else why,
                       temperature_reason="" if celsius is not None else why)


POWER = Thresholds(max_power_increase_percent=20)


def check(v: Verdict, name: str) -> str:
    (found,) = [c.message for c in v.checks if c.name == name]
    return found


def test_a_canary_drawing_more_power_fails_with_the_numbers() -> None:
    v = judge(m([r("c1", 12.4)], [r("s1", 9.0), r("s2", 9.0)]), POWER)
    assert v.outcome is Outcome.FAIL
    assert v.reasons == ("power +38% (canary 12.4 W vs stable 9.0 W, mean of 1 and 2 node(s)) "
                         "> maxPowerIncreasePercent 20",)


def test_power_within_the_limit_or_within_sensor_noise_passes() -> None:
    assert judge(m([r("c1", 10.0)], [r("s1", 9.0)]), POWER).outcome is Outcome.PASS  # +11%
    v = judge(m([r("c1", 0.6)], [r("s1", 0.3)]), POWER)  # +100%, but 0.3 W is noise
    assert v.outcome is Outcome.PASS and "<= maxPowerIncreasePercent 20" in check(v, "power-increase")


def test_power_fails_without_traffic_too() -> None:
    idle = CohortMetrics(pods=1, requests=0)
    v = judge(m([r("c1", 15.0)], [r("s1", 9.0)], traffic=idle), POWER)
    assert v.outcome is Outcome.FAIL and "power +67%" in v.reasons[0]


def test_no_reading_on_a_side_is_inconclusive_and_says_why() -> None:
    v = judge(m([r("c1", why="no power monitor under /sys (INA3221 or RAPL powercap)")], [r("s1", 9.0)]), POWER)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reasons == ("power of canary nodes unavailable (no reading from c1: no power monitor under /sys "
                         "(INA3221 or RAPL powercap)): maxPowerIncreasePercent inconclusive",)
    v = judge(m([r("c1", 9.0)], [r("s1", why="agent did not answer (timed out)")]), POWER)
    assert v.outcome is Outcome.INCONCLUSIVE and "power of stable nodes unavailable" in v.reasons[0]


def test_nodes_without_a_reading_are_left_out_and_named() -> None:
    v = judge(m([r("c1", 9.5), r("c2")], [r("s1", 9.0)]), POWER)
    assert v.outcome is Outcome.PASS
    message = check(v, "power-increase")
    assert "mean of 1 and 1 node(s)" in message and "no reading from c2: no INA3221" in message


def test_an_unavailable_reading_never_hides_another_rule_failing() -> None:
    t = Thresholds(max_power_increase_percent=20, max_restarts=0)
    broken = CohortMetrics(pods=1, requests=100, restarts=3)
    v = judge(m([r("c1")], [r("s1")], traffic=broken), t)
    assert v.outcome is Outcome.FAIL and "restart" in v.reasons[0]


def test_temperature_is_an_absolute_limit_on_the_hottest_canary_node() -> None:
    t = Thresholds(max_temperature_c=80)
    v = judge(m([r("c1", celsius=71.0), r("c2", celsius=86.5)], [r("s1", celsius=99.0)]), t)
    assert v.outcome is Outcome.FAIL
    assert v.reasons == ("temperature 86.5 °C on canary node c2 (cpu-thermal) > maxTemperatureC 80",)
    assert judge(m([r("c1", celsius=71.0)], []), t).outcome is Outcome.PASS  # stable nodes play no part
    v = judge(m([r("c1")], []), t)
    assert v.outcome is Outcome.INCONCLUSIVE and "temperature of canary nodes unavailable" in v.reasons[0]


def test_the_class_slo_max_power_watts_applies_to_each_canary_node() -> None:
    t = Thresholds.from_spec(Analysis(), slo_max_power_watts=10)
    assert t.max_power_watts == 10 and t.max_power_increase_percent is None
    v = judge(m([r("c1", 9.0), r("c2", 10.5)], []), t)
    assert v.outcome is Outcome.FAIL and v.reasons == ("power 10.5 W on canary node c2 > slo.maxPowerWatts 10",)


def test_limits_come_from_the_spec_and_are_off_by_default() -> None:
    assert not Thresholds.from_spec(Analysis()).wants_power
    t = Thresholds.from_spec(Analysis.model_validate({"maxPowerIncreasePercent": 15, "maxTemperatureC": 85}))
    assert (t.max_power_increase_percent, t.max_temperature_c, t.wants_power) == (15, 85, True)
    v = judge(Measurement(canary=BUSY, stable=BUSY), t)  # limits set but nothing measured
    assert v.outcome is Outcome.INCONCLUSIVE and v.reasons == ("power and temperature not measured",)
    assert judge(Measurement(canary=BUSY, stable=BUSY), Thresholds()).outcome is Outcome.PASS


def test_with_no_stable_node_left_power_is_not_compared_and_does_not_hold_the_step() -> None:
    v = judge(m([r("c1", 12.0)], []), POWER)
    assert v.outcome is Outcome.PASS
    assert check(v, "power-increase") == "power 12.0 W on canary not compared: no stable node of the class"


def test_the_limits_are_bounded_and_in_the_crds() -> None:
    for bad in ({"maxTemperatureC": 0}, {"maxTemperatureC": 500}, {"maxPowerIncreasePercent": -1}):
        with pytest.raises(ValidationError):
            Analysis.model_validate(bad)
    with pytest.raises(ValidationError):
        Slo.model_validate({"maxPowerWatts": 0})
    model = crd(EdgeModel)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    analysis = model["properties"]["rollout"]["properties"]["analysis"]["properties"]
    assert analysis["maxTemperatureC"]["maximum"] == 200 and analysis["maxPowerIncreasePercent"]["minimum"] == 0
    profile = crd(DeploymentProfile)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    slo = profile["properties"]["classes"]["items"]["properties"]["slo"]["properties"]
    assert "maxPowerWatts" in slo and "power" in slo["maxPowerWatts"]["description"]
