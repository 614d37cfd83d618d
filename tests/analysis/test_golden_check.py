"""The golden-input check against real pods: stored expectations, and whose fault an error is."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from analysis_support import LIMITS, MODEL_NAME, Fleet, target

from edgewise.analysis.golden import GoldenChecker
from edgewise.analysis.provider import GoldenFile, PodEndpoint
from edgewise.analysis.runtime import RuntimeProvider
from edgewise.core.analysis import CohortMetrics, GoldenResult, Measurement, Outcome, judge
from edgewise.devcluster.processes import free_port


def check(golden: Path, canary: list[PodEndpoint], stable: list[PodEndpoint]) -> GoldenResult:
    golden_file = GoldenFile(str(golden), min_cosine=0.99)
    return asyncio.run(GoldenChecker(timeout_s=3).check(golden_file, MODEL_NAME, canary, stable))


def test_stored_expected_outputs_need_no_stable_pod(fleet: Fleet, golden_npz: dict[str, Path]):
    provider = RuntimeProvider(timeout_s=5)
    stored = golden_npz["expected"]
    good = asyncio.run(provider.measure(target("g-good", [fleet.good], (), stored)))
    wrong = asyncio.run(provider.measure(target("g-wrong", [fleet.wrong], (), stored)))
    assert good.golden is not None and good.golden.reference == "stored expected outputs"
    assert good.golden.samples == 8 and good.golden.outputs[0].cosine > 0.9999
    assert wrong.golden is not None and wrong.golden.outputs[0].cosine < 0.99
    # Without a previous reading there is no traffic verdict, but a wrong output fails at once.
    assert judge(good, LIMITS).outcome is Outcome.INCONCLUSIVE
    assert judge(wrong, LIMITS).outcome is Outcome.FAIL


def test_inputs_every_revision_refuses_are_the_files_fault(fleet: Fleet, tmp_path: Path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((2, 63), np.float32))  # the models take 64 features
    got = check(bad, [fleet.wrong.endpoint()], [fleet.stable[0].endpoint()])
    assert not got.canary_error and got.error and "refused by canary" in got.error and "and by stable" in got.error
    # with no stable pod to tell, the canary is held to the declared inputs
    got = check(bad, [fleet.wrong.endpoint()], [])
    assert got.canary_error and "(status 400)" in (got.error or "")
    assert judge_golden_only(got) is Outcome.FAIL


def test_unreachable_canary_or_unreadable_file_is_no_evidence(fleet: Fleet, golden_npz: dict[str, Path],
                                                               tmp_path: Path):
    nobody = PodEndpoint("gone", "uid-gone", "127.0.0.1", http_port=free_port())
    got = check(golden_npz["inputs"], [nobody], [fleet.stable[0].endpoint()])
    assert not got.canary_error and (got.error or "").startswith("no canary pod answered: gone: ")
    got = check(golden_npz["inputs"], [fleet.good.endpoint()], [nobody])
    assert not got.canary_error and (got.error or "").startswith("no stable pod answered")
    got = check(tmp_path / "missing.npz", [fleet.good.endpoint()], [])
    assert not got.canary_error and (got.error or "").startswith("cannot read golden inputs")
    assert judge_golden_only(got) is Outcome.INCONCLUSIVE


def judge_golden_only(golden: GoldenResult) -> Outcome:
    """The verdict of a measurement that has nothing but this golden result."""
    return judge(Measurement(canary=CohortMetrics(), stable=CohortMetrics(), golden=golden), LIMITS).outcome
