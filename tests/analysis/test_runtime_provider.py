"""The runtime provider against real `edgewise serve` pods with real inference traffic.

A good canary passes, a slow one fails on latency, a wrong one (fast, healthy, other
weights) fails the golden check; a pod that stops answering is deferred, and one that
restarts is measured from its fresh counters.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from analysis_support import LIMITS, Fleet, target, traffic

from edgewise.analysis.provider import AnalysisTarget
from edgewise.analysis.runtime import RuntimeProvider
from edgewise.core.analysis import Measurement, Outcome, judge


def measure_all(provider: RuntimeProvider, targets: dict[str, AnalysisTarget]) -> dict[str, Measurement]:
    async def run() -> list[Measurement]:
        return await asyncio.gather(*(provider.measure(t) for t in targets.values()))

    return dict(zip(targets, asyncio.run(run()), strict=True))


def test_good_passes_slow_fails_on_latency_wrong_fails_golden(fleet: Fleet, golden_npz: dict[str, Path]):
    provider = RuntimeProvider(timeout_s=5)
    golden = golden_npz["inputs"]
    targets = {
        "good": target("good", [fleet.good], fleet.stable, golden),
        "slow": target("slow", [fleet.slow], fleet.stable, golden),
        "wrong": target("wrong", [fleet.wrong], fleet.stable, golden),
        # one stable pod out of two is read: the sample bound, not the cohort size, sets the cost
        "bounded": target("bounded", [fleet.good], fleet.stable, sample_size=1),
    }

    first = measure_all(provider, targets)
    for name in ("good", "slow", "bounded"):
        v = judge(first[name], LIMITS)
        assert v.outcome is Outcome.INCONCLUSIVE, (name, v)
        assert v.reasons[0].startswith("first reading of 1 canary pod(s)"), v.reasons
    # The golden check needs no traffic and no previous reading: the wrong model fails at once.
    assert judge(first["wrong"], LIMITS).outcome is Outcome.FAIL

    sent = traffic([*fleet.stable, fleet.good, fleet.slow, fleet.wrong], seconds=4)
    second = measure_all(provider, targets)

    good = second["good"]
    v = judge(good, LIMITS)
    assert v.outcome is Outcome.PASS, v.summary()
    # Counters are exact: the test's requests plus the golden requests of the first interval
    # (the canary's own one; the stable pods were the reference of up to three classes).
    assert good.canary.requests == sent["canary-good"] + 1
    assert 0 <= good.stable.requests - (sent["stable-1"] + sent["stable-2"]) <= 3
    assert good.canary.pods == 1 and good.stable.pods == 2 and good.canary.error_rate == 0
    assert good.canary.p95_latency_ms is not None and good.stable.p95_latency_ms is not None
    assert good.canary.memory_bytes and good.canary.memory_bytes > 10 * 2**20
    assert good.golden is not None and good.golden.reference.startswith("stable pod stable-")
    assert good.golden.outputs[0].output == "y" and good.golden.outputs[0].cosine > 0.9999

    slow = second["slow"]
    v = judge(slow, LIMITS)
    assert v.outcome is Outcome.FAIL, v.summary()
    assert [c.name for c in v.checks if not c.ok] == ["latency-increase"]
    assert slow.canary.p95_latency_ms > 2 * slow.stable.p95_latency_ms
    assert v.reasons[0].startswith(f"p95 latency {slow.canary.p95_latency_ms:.1f} ms on canary vs "
                                   f"{slow.stable.p95_latency_ms:.1f} ms on stable (+")
    assert slow.golden is not None and slow.golden.outputs[0].cosine > 0.9999  # slow, but right

    wrong = second["wrong"]
    v = judge(wrong, LIMITS)
    assert v.outcome is Outcome.FAIL, v.summary()
    assert [c.name for c in v.checks if not c.ok] == ["golden:y"]
    assert wrong.golden is not None and wrong.golden.outputs[0].cosine < 0.99
    assert "golden output 'y': cosine" in v.reasons[0] and "minimum 0.99" in v.reasons[0]

    assert second["bounded"].stable.pods == 1
    assert judge(second["bounded"], LIMITS).outcome is Outcome.PASS


def test_unanswering_pod_is_deferred_and_a_restarted_one_counts_from_zero(fleet: Fleet):
    provider = RuntimeProvider(timeout_s=1.5)
    flaky = fleet.flaky
    both = target("deferral", [fleet.good, flaky], fleet.stable)
    alone = target("alone", [flaky], fleet.stable)
    measure_all(provider, {"both": both, "alone": alone})  # baselines

    flaky.pause()
    try:
        sent = traffic([*fleet.stable, fleet.good], seconds=2)
        got = measure_all(provider, {"both": both, "alone": alone})
    finally:
        flaky.resume()

    # The answering canary decides; the hung one is deferred. (Latency is the other tests' topic:
    # one pod's p95 over two seconds on a busy machine is not what this test is about.)
    v = judge(got["both"], replace(LIMITS, max_latency_increase_percent=None))
    assert v.outcome is Outcome.PASS, v.summary()
    assert got["both"].canary.pods == 1 and got["both"].canary.requests == sent["canary-good"]
    [deferred] = got["both"].deferred
    assert deferred.pod == "canary-flaky" and deferred.canary and "timed out" in deferred.reason
    v = judge(got["alone"], LIMITS)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert v.reasons == ("1 canary pod(s) deferred (canary-flaky: no answer: timed out after 1.5s)",)

    # A disconnected node's pod is deferred without being contacted.
    offline = target("alone", [flaky], fleet.stable, node_ready=False)
    m = asyncio.run(provider.measure(offline))
    assert [(d.pod, d.reason) for d in m.deferred] == [("canary-flaky", "node node-canary-flaky NotReady")]

    # The pod is restarted (same address, new process): 10 requests before, 25 after. A delta
    # that ignored the reset would see 25 - 10 = 15.
    restart = target("restart", [flaky], fleet.stable)
    asyncio.run(provider.measure(restart))
    assert traffic([flaky], count=10)["canary-flaky"] == 10
    assert asyncio.run(provider.measure(restart)).canary.requests == 10
    flaky.stop()
    flaky.start().wait_ready()
    assert traffic([flaky], count=25)["canary-flaky"] == 25
    # Read before Kubernetes reports the restart: the new process start time tells.
    assert asyncio.run(provider.measure(restart)).canary.requests == 25
    # Then the restart shows in the pod status: counted against the canary, the requests not twice.
    reported = asyncio.run(provider.measure(target("restart", [flaky], fleet.stable, restarts=1)))
    assert reported.canary.requests == 0 and reported.canary.restarts == 1
    v = judge(reported, LIMITS)
    assert v.outcome is Outcome.FAIL and v.reasons == ("1 container restart(s) on canary pods (limit 0)",)
