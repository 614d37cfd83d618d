"""Canary analysis, the pure part: counters in, a verdict with numbers out.

A provider (edgewise.analysis) reads cumulative counters from pods, or asks Prometheus;
everything that turns those numbers into a decision lives here, without I/O, so every
rule is unit-tested on plain data:

- `delta(prev, now)`: what one pod did during the interval, robust to counter resets
  (a restarted server starts its counters from zero again);
- `aggregate(deltas)`: one cohort's rates, error rate and latencies; p95 comes from the
  merged latency histogram, interpolated the way Prometheus's `histogram_quantile` does,
  so the runtime and Prometheus providers agree on what "p95" means;
- `judge(measurement, thresholds)`: pass, fail or inconclusive, with human reasons that
  carry the numbers ("p95 latency 48.2 ms on canary vs 9.1 ms on stable (+430%, limit +20%)",
  "power +38% (canary 12.4 W vs stable 9.0 W) > maxPowerIncreasePercent 20");
- `sample(pods, k, seed)`: a bounded, deterministic and *stable* choice of pods, so analysis
  cost does not grow with the fleet and the same pods are measured interval after interval
  (deltas need the previous reading of the same pod).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from edgewise.api.model import Analysis, GoldenInputs
from edgewise.api.rollout_status import AnalysisRecord, Outcome
from edgewise.core.durations import iso

T = TypeVar("T")

P95 = 0.95


@dataclass(frozen=True)
class PodSample:
    """Cumulative counters of one pod at one moment, as Triton's statistics report them.

    `latency_buckets` is a cumulative histogram, (upper bound in seconds, count) sorted by
    bound and ending with +Inf, or empty when the runtime exposes none (Triton has no
    request latency histogram; `edgewise serve` does). `at` is a monotonic clock reading
    of the provider, used only to turn counts into rates.
    """

    pod: str
    uid: str
    at: float
    success: float = 0
    failure: float = 0
    inference_count: float = 0
    exec_count: float = 0
    request_duration_us: float = 0  # cumulative, successful and failed requests
    latency_buckets: tuple[tuple[float, float], ...] = ()
    restarts: int = 0
    ready: bool = True
    memory_bytes: float | None = None
    start_time: float | None = None  # process start (seconds since epoch) when the pod says


@dataclass(frozen=True)
class PodDelta:
    """What one pod did between two samples."""

    pod: str
    uid: str
    seconds: float
    success: float
    failure: float
    inference_count: float
    exec_count: float
    request_duration_us: float
    latency_buckets: tuple[tuple[float, float], ...]  # cumulative, like PodSample's
    restarts: int
    ready: bool
    memory_bytes: float | None
    reset: bool  # counters restarted from zero during the interval

    @property
    def requests(self) -> float:
        return self.success + self.failure


@dataclass(frozen=True)
class PodHealth:
    """What Kubernetes says about a pod: readiness and restarts, no I/O to the pod needed.

    Pods on NotReady nodes (`node_ready` false) are disconnected: they are deferred, and
    count neither as ready nor as unready.
    """

    pod: str
    ready: bool = True
    restarts: int = 0
    node_ready: bool = True
    reason: str = ""  # e.g. OOMKilled (last termination) or CrashLoopBackOff (waiting)


@dataclass(frozen=True)
class CohortMetrics:
    """One cohort (the canary or the stable pods of one class) over one interval.

    Latencies are in milliseconds. A value is None when it could not be measured (no
    traffic, no histogram, no memory metric), never zero by default.
    """

    pods: int = 0  # pods whose traffic was measured (the sample size)
    requests: float = 0
    request_rate: float | None = None  # requests per second, summed over measured pods
    error_rate: float | None = None  # failed / all requests
    p95_latency_ms: float | None = None
    mean_latency_ms: float | None = None
    ready_ratio: float | None = None  # ready / pods on reachable nodes
    restarts: int = 0
    restart_reasons: tuple[str, ...] = ()  # "pod-a: OOMKilled"
    memory_bytes: float | None = None  # mean resident memory per pod


@dataclass(frozen=True)
class DeferredPod:
    """A pod left out of this measurement: it neither passes nor fails the analysis."""

    pod: str
    reason: str
    canary: bool = True


@dataclass(frozen=True)
class OutputSimilarity:
    """Cosine similarity of one output of the canary against the reference (worst sample)."""

    output: str
    cosine: float


@dataclass(frozen=True)
class GoldenResult:
    """The golden-input check: stored inputs, canary outputs compared with a reference.

    `error` is set when the check could not run (no canary pod answered, the file is
    unreadable, the model rejected the inputs); an error on the canary side is a failure
    (a wrong model may reject inputs the stable one accepts), see `judge`.
    """

    reference: str  # "stable pod <name>" or "stored expected outputs"
    samples: int = 0
    outputs: tuple[OutputSimilarity, ...] = ()
    error: str | None = None
    canary_error: bool = False  # the canary pod answered the golden inputs with an error


@dataclass(frozen=True)
class NodeReading:
    """A node's power and temperature as its agent reported them; None with a reason when it could not.

    The agent reads sysfs (INA3221, RAPL, thermal zones, hwmon: edgewise.node.telemetry); a node
    whose hardware has no such sensor, or whose agent did not answer, has no number, never a guess.
    """

    node: str
    watts: float | None = None
    celsius: float | None = None
    sensor: str = ""  # the hottest sensor's name
    power_reason: str = ""  # why watts is None
    temperature_reason: str = ""  # why celsius is None

    @classmethod
    def unavailable(cls, node: str, reason: str) -> NodeReading:
        return cls(node, power_reason=reason, temperature_reason=reason)


@dataclass(frozen=True)
class PowerMeasurement:
    """The readings of the class's canary and stable nodes (a bounded sample of each)."""

    canary: tuple[NodeReading, ...] = ()
    stable: tuple[NodeReading, ...] = ()


@dataclass(frozen=True)
class Measurement:
    """Everything one analysis run measured for one class."""

    canary: CohortMetrics
    stable: CohortMetrics
    power: PowerMeasurement | None = None  # measured only when a power or temperature limit is set
    golden: GoldenResult | None = None
    deferred: tuple[DeferredPod, ...] = ()
    baselined: tuple[str, ...] = ()  # canary pods seen for the first time: nothing to compare yet
    provider: str = ""
    seconds: float | None = None  # length of the measured window


_SPEC = Analysis()  # the API's defaults, so the limits below have one definition: the CRD's


@dataclass(frozen=True)
class Thresholds:
    """The limits a canary must stay within: EdgeModel.spec.rollout.analysis, resolved (`from_spec`).

    None disables a check. `min_requests` is the smallest canary traffic in an interval
    that makes rates and latencies meaningful; below it traffic checks are inconclusive.
    `latency_noise_ms` keeps the relative latency check from failing on increases too
    small to matter (and below the histogram's resolution): +80% of 0.5 ms is noise.
    """

    max_error_rate: float | None = _SPEC.max_error_rate
    max_p95_latency_ms: float | None = _SPEC.max_p95_latency_ms
    max_latency_increase_percent: float | None = _SPEC.max_latency_increase_percent
    max_memory_increase_percent: float | None = _SPEC.max_memory_increase_percent
    min_ready_ratio: float | None = _SPEC.min_ready_ratio
    max_restarts: int | None = _SPEC.max_restarts
    min_requests: int = 20
    min_golden_cosine: float = GoldenInputs.model_fields["min_cosine"].default
    latency_noise_ms: float = 1.0
    max_power_increase_percent: float | None = _SPEC.max_power_increase_percent
    max_temperature_c: float | None = _SPEC.max_temperature_c
    max_power_watts: float | None = None  # the class's slo.maxPowerWatts, on each canary node
    power_noise_watts: float = 0.5  # +50% of 0.4 W is sensor noise, not a regression

    @property
    def wants_power(self) -> bool:
        """True when a rule needs the nodes' power or temperature (then the agents are asked)."""
        return any(x is not None for x in (self.max_power_increase_percent, self.max_temperature_c,
                                           self.max_power_watts))

    @classmethod
    def from_spec(cls, analysis: Analysis, slo_p95_ms: float | None = None,
                  min_requests: int = min_requests, slo_max_power_watts: float | None = None) -> Thresholds:
        """The limits of an EdgeModel's `rollout.analysis`; absolute p95 defaults to the class SLO."""
        return cls(
            max_error_rate=analysis.max_error_rate,
            max_p95_latency_ms=analysis.max_p95_latency_ms if analysis.max_p95_latency_ms is not None
            else slo_p95_ms,
            max_latency_increase_percent=analysis.max_latency_increase_percent,
            max_memory_increase_percent=analysis.max_memory_increase_percent,
            min_ready_ratio=analysis.min_ready_ratio,
            max_restarts=analysis.max_restarts,
            min_requests=min_requests,
            min_golden_cosine=analysis.golden_inputs.min_cosine if analysis.golden_inputs
            else cls.min_golden_cosine,
            max_power_increase_percent=analysis.max_power_increase_percent,
            max_temperature_c=analysis.max_temperature_c,
            max_power_watts=slo_max_power_watts,
        )


@dataclass(frozen=True)
class Check:
    """One rule applied to the numbers: its name, whether it held, and a sentence with the numbers."""

    name: str
    ok: bool
    message: str


@dataclass(frozen=True)
class Verdict:
    """The decision for one interval.

    `reasons` says why the verdict is not a pass (failed checks, or why it is
    inconclusive); `checks` holds every rule that was applied, passed or not, for status.
    """

    outcome: Outcome
    reasons: tuple[str, ...] = ()
    checks: tuple[Check, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL

    def summary(self) -> str:
        """One line for conditions, Events and `kubectl edgewise status`."""
        if self.reasons:
            return f"{self.outcome.value}: " + "; ".join(self.reasons)
        return f"{self.outcome.value}: " + "; ".join(c.message for c in self.checks)


def record(verdict: Verdict, now: datetime, canary_pods: int, stable_pods: int, deferred: int) -> AnalysisRecord:
    """The verdict as the class's status keeps it (`lastAnalysis`)."""
    return AnalysisRecord(time=iso(now), outcome=verdict.outcome, message=verdict.summary()[:4096],
                          canary_pods=canary_pods, stable_pods=stable_pods, deferred_pods=deferred)


# --- deltas -----------------------------------------------------------------------------------


def delta(prev: PodSample, now: PodSample) -> PodDelta:
    """What a pod did between two samples, like Prometheus's `increase()` without extrapolation.

    A counter that went down, or a new process start time, means the server restarted and
    its counters began again at zero: the interval then counts what the new process did
    (`now`'s values), not a negative number. Where the pod exposes no start time (Triton),
    a container restart count that went up says the same. With a start time, it is the
    better witness: Kubernetes may report a restart only after the new process was read.
    """
    counters = (now.success < prev.success or now.failure < prev.failure
                or now.inference_count < prev.inference_count or now.exec_count < prev.exec_count
                or now.request_duration_us < prev.request_duration_us
                or _bucket_total(now.latency_buckets) < _bucket_total(prev.latency_buckets))
    if now.start_time is not None and prev.start_time is not None:
        restarted = now.start_time != prev.start_time
    else:
        restarted = now.restarts > prev.restarts
    reset = counters or restarted
    base = _ZERO if reset else prev
    return PodDelta(
        pod=now.pod, uid=now.uid, seconds=max(now.at - prev.at, 0.0),
        success=now.success - base.success, failure=now.failure - base.failure,
        inference_count=now.inference_count - base.inference_count,
        exec_count=now.exec_count - base.exec_count,
        request_duration_us=now.request_duration_us - base.request_duration_us,
        latency_buckets=_bucket_delta(base.latency_buckets, now.latency_buckets),
        restarts=max(now.restarts - prev.restarts, 0), ready=now.ready, memory_bytes=now.memory_bytes,
        reset=reset,
    )


_ZERO = PodSample(pod="", uid="", at=0.0)


def _bucket_total(buckets: Sequence[tuple[float, float]]) -> float:
    return buckets[-1][1] if buckets else 0.0


def _bucket_delta(prev: Sequence[tuple[float, float]],
                  now: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Per-bound difference of two cumulative histograms (bounds of `now`; missing in prev = 0)."""
    before = dict(prev)
    return tuple((bound, max(count - before.get(bound, 0.0), 0.0)) for bound, count in now)


# --- aggregation ------------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram, as PromQL's `histogram_quantile` computes it.

    The bucket holding rank q·total is found and the value interpolated linearly inside it,
    the lowest bucket starting at 0. A rank in the +Inf bucket returns the highest finite
    bound (nothing more is known). None when the histogram is empty or has no finite bucket.
    """
    if not buckets or not math.isinf(buckets[-1][0]) or len(buckets) < 2:
        return None
    # Counts must not decrease with the bound; scrapes of a live server can race, so
    # enforce monotonicity as Prometheus does.
    fixed, running = [], 0.0
    for bound, count in buckets:
        running = max(running, count)
        fixed.append((bound, running))
    total = fixed[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, (bound, count) in enumerate(fixed):
        if count >= rank:
            if math.isinf(bound):
                return fixed[i - 1][0]
            if i == 0 and bound <= 0:
                return bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return fixed[-2][0]  # unreachable with a consistent histogram; kept for safety


def merge_histograms(histograms: Iterable[Sequence[tuple[float, float]]]) -> tuple[tuple[float, float], ...]:
    """Sum cumulative histograms over the bounds every one of them has.

    Pods of one class run the same server, so bounds normally agree; if they do not, only
    the common bounds are exact for the sum (a cumulative count at a bound one pod lacks is
    unknown), and +Inf is always common. Empty histograms (no histogram exposed) are skipped.
    """
    present = [dict(h) for h in histograms if h]
    if not present:
        return ()
    common = set(present[0])
    for h in present[1:]:
        common &= set(h)
    return tuple((bound, sum(h[bound] for h in present)) for bound in sorted(common))


def aggregate(deltas: Sequence[PodDelta], health: Sequence[PodHealth] = ()) -> CohortMetrics:
    """One cohort's metrics from its pods' deltas.

    Ready ratio and restarts come from `health` (what Kubernetes says about every pod of
    the cohort, sampled or not) when given, else from the measured pods themselves.
    """
    requests = sum(d.requests for d in deltas)
    failures = sum(d.failure for d in deltas)
    rate_parts = [d.requests / d.seconds for d in deltas if d.seconds > 0]
    p95_s = histogram_quantile(P95, merge_histograms(d.latency_buckets for d in deltas))
    memories = [d.memory_bytes for d in deltas if d.memory_bytes is not None]
    if health:
        ready_ratio, restarts, reasons = _health(health)
    else:
        ready_ratio = (sum(d.ready for d in deltas) / len(deltas)) if deltas else None
        restarts, reasons = sum(d.restarts for d in deltas), ()
    return CohortMetrics(
        pods=len(deltas),
        requests=requests,
        request_rate=sum(rate_parts) if rate_parts else None,
        error_rate=failures / requests if requests > 0 else None,
        p95_latency_ms=p95_s * 1000 if p95_s is not None else None,
        mean_latency_ms=(sum(d.request_duration_us for d in deltas) / requests / 1000
                         if requests > 0 else None),
        ready_ratio=ready_ratio,
        restarts=restarts,
        restart_reasons=reasons,
        memory_bytes=sum(memories) / len(memories) if memories else None,
    )


def _health(health: Sequence[PodHealth]) -> tuple[float | None, int, tuple[str, ...]]:
    reachable = [h for h in health if h.node_ready]
    ratio = sum(h.ready for h in reachable) / len(reachable) if reachable else None
    # Restarts count on every pod, reachable or not: a node that comes back reports them.
    restarts = sum(h.restarts for h in health)
    reasons = tuple(f"{h.pod}: {h.reason}" for h in health if h.reason and (h.restarts or not h.ready))
    return ratio, restarts, reasons


# --- sampling ---------------------------------------------------------------------------------


def sample(pods: Iterable[T], k: int, seed: str, key: Callable[[T], str] = str) -> list[T]:
    """At most k pods, chosen by rendezvous hashing on (seed, key(pod)).

    Deterministic (same pods and seed, same choice, in the same order) and stable as the
    cohort changes: a pod joining or leaving changes at most one pick, so the pods measured
    last interval are measured again and their deltas exist. Different seeds (one per model
    and class) spread analysis load over different pods.
    """
    if k <= 0:
        return []

    def score(pod: T) -> tuple[str, str]:
        ident = key(pod)
        return hashlib.sha256(f"{seed}\x00{ident}".encode()).hexdigest(), ident

    return sorted(pods, key=score)[:k]


# --- judging ----------------------------------------------------------------------------------


def judge(m: Measurement, t: Thresholds) -> Verdict:
    """Pass, fail or inconclusive for one interval.

    Order matters: what Kubernetes reports (restarts, readiness) and the golden check fail
    a canary even without traffic; traffic-based checks need `min_requests` canary requests
    in the interval, and without them the verdict is inconclusive rather than a pass, as it
    is when every canary pod was deferred or only just baselined.
    """
    checks: list[Check] = []
    c, s = m.canary, m.stable

    reasons = f" ({', '.join(c.restart_reasons)})" if c.restart_reasons else ""
    if t.max_restarts is not None:
        checks.append(Check("restarts", c.restarts <= t.max_restarts,
                            f"{c.restarts} container restart(s) on canary pods{reasons} "
                            f"(limit {t.max_restarts})"))
    if t.min_ready_ratio is not None and c.ready_ratio is not None:
        checks.append(Check("ready", c.ready_ratio >= t.min_ready_ratio,
                            f"ready ratio {_pct(c.ready_ratio)} on canary{reasons} "
                            f"(minimum {_pct(t.min_ready_ratio)})"))
    if m.golden is not None:
        checks.extend(_golden_checks(m.golden, t))
    # Power and heat need no traffic: an idle canary that draws more is already a regression.
    power_checks, power_missing = _power_checks(m.power, t)
    checks.extend(power_checks)

    failed = [ch for ch in checks if not ch.ok]
    traffic_missing = _inconclusive_reasons(m, t) + power_missing
    if traffic_missing:
        if failed:
            return Verdict(Outcome.FAIL, tuple(ch.message for ch in failed), tuple(checks))
        return Verdict(Outcome.INCONCLUSIVE, tuple(traffic_missing), tuple(checks))

    checks.extend(_traffic_checks(c, s, t))
    failed = [ch for ch in checks if not ch.ok]
    if failed:
        return Verdict(Outcome.FAIL, tuple(ch.message for ch in failed), tuple(checks))
    return Verdict(Outcome.PASS, (), tuple(checks))


def _inconclusive_reasons(m: Measurement, t: Thresholds) -> list[str]:
    """Why traffic checks cannot run this interval (empty: they can)."""
    deferred = [d for d in m.deferred if d.canary]
    if m.canary.pods == 0:
        why = []
        if m.baselined:
            why.append(f"first reading of {len(m.baselined)} canary pod(s) "
                       f"({_names(m.baselined)}): baseline taken, compared next interval")
        if deferred:
            why.append(f"{len(deferred)} canary pod(s) deferred ({_deferred(deferred)})")
        return why or ["no canary pod to measure"]
    if m.canary.requests < t.min_requests:
        return [f"{m.canary.requests:.0f} request(s) on canary in the interval "
                f"(at least {t.min_requests} needed for a verdict)"]
    return []


def _traffic_checks(c: CohortMetrics, s: CohortMetrics, t: Thresholds) -> list[Check]:
    checks: list[Check] = []
    comparable = s.pods > 0 and s.requests >= t.min_requests
    if t.max_error_rate is not None and c.error_rate is not None:
        vs = f" vs {_pct(s.error_rate)} on stable" if comparable and s.error_rate is not None else ""
        checks.append(Check("error-rate", c.error_rate <= t.max_error_rate,
                            f"error rate {_pct(c.error_rate)} on canary{vs} "
                            f"(limit {_pct(t.max_error_rate)})"))

    # p95 from the histogram; Triton pods expose none, so fall back to the mean there.
    cv: float | None
    sv: float | None
    if c.p95_latency_ms is not None:
        what, cv, sv = "p95 latency", c.p95_latency_ms, s.p95_latency_ms
    else:
        what, cv, sv = "mean latency", c.mean_latency_ms, s.mean_latency_ms
    if cv is not None and t.max_p95_latency_ms is not None:
        checks.append(Check("latency", cv <= t.max_p95_latency_ms,
                            f"{what} {cv:.1f} ms on canary (limit {t.max_p95_latency_ms:g} ms)"))
    if cv is not None and t.max_latency_increase_percent is not None:
        if comparable and sv:
            increase = (cv - sv) / sv * 100
            ok = increase <= t.max_latency_increase_percent or cv - sv <= t.latency_noise_ms
            checks.append(Check("latency-increase", ok,
                                f"{what} {cv:.1f} ms on canary vs {sv:.1f} ms on stable "
                                f"({increase:+.0f}%, limit +{t.max_latency_increase_percent:g}%)"))
        else:
            # Not a failure: an idle stable cohort says nothing about the canary.
            checks.append(Check("latency-increase", True,
                                f"{what} not compared with stable: {s.requests:.0f} request(s) on "
                                f"{s.pods} stable pod(s) (at least {t.min_requests} needed)"))

    if (t.max_memory_increase_percent is not None and c.memory_bytes is not None
            and s.memory_bytes):
        increase = (c.memory_bytes - s.memory_bytes) / s.memory_bytes * 100
        checks.append(Check("memory-increase", increase <= t.max_memory_increase_percent,
                            f"memory {_mib(c.memory_bytes)} on canary vs {_mib(s.memory_bytes)} on stable "
                            f"({increase:+.0f}%, limit +{t.max_memory_increase_percent:g}%)"))
    return checks


def _power_checks(p: PowerMeasurement | None, t: Thresholds) -> tuple[list[Check], list[str]]:
    """The power and temperature rules, and why some could not be applied (no reading: inconclusive).

    Nodes without a reading are left out of the numbers and named; a rule with no reading at all on
    a side it needs makes the interval inconclusive rather than pass or fail on invented data.
    """
    if not t.wants_power:
        return [], []
    if p is None:
        return [], ["power and temperature not measured"]
    checks: list[Check] = []
    missing: list[str] = []
    canary_w = [r for r in p.canary if r.watts is not None]
    stable_w = [r for r in p.stable if r.watts is not None]
    power_gaps = _gaps([r for r in (*p.canary, *p.stable) if r.watts is None], "power_reason")

    if t.max_power_watts is not None:
        if canary_w:
            worst = max(canary_w, key=lambda r: r.watts or 0.0)
            watts = worst.watts or 0.0
            checks.append(Check("power", watts <= t.max_power_watts,
                                f"power {watts:.1f} W on canary node {worst.node} "
                                f"{'>' if watts > t.max_power_watts else '<='} slo.maxPowerWatts "
                                f"{t.max_power_watts:g}{power_gaps}"))
        else:
            missing.append(f"power of canary nodes unavailable{_gaps(p.canary, 'power_reason') or ' (none sampled)'}"
                           f": slo.maxPowerWatts inconclusive")
    if t.max_power_increase_percent is not None:
        if canary_w and stable_w:
            cm = sum(r.watts or 0.0 for r in canary_w) / len(canary_w)
            sm = sum(r.watts or 0.0 for r in stable_w) / len(stable_w)
            increase = (cm - sm) / sm * 100 if sm > 0 else math.inf
            ok = increase <= t.max_power_increase_percent or cm - sm <= t.power_noise_watts
            shown = f"{increase:+.0f}%" if math.isfinite(increase) else "up"
            checks.append(Check("power-increase", ok,
                                f"power {shown} (canary {cm:.1f} W vs stable {sm:.1f} W, mean of "
                                f"{len(canary_w)} and {len(stable_w)} node(s)) "
                                f"{'<=' if ok else '>'} maxPowerIncreasePercent {t.max_power_increase_percent:g}"
                                f"{power_gaps}"))
        elif canary_w and not p.stable:
            # At 100% no stable node is left to compare with: like latency, not a failure.
            cm = sum(r.watts or 0.0 for r in canary_w) / len(canary_w)
            checks.append(Check("power-increase", True, f"power {cm:.1f} W on canary not compared: no stable "
                                                        f"node of the class"))
        else:
            side = "canary" if not canary_w else "stable"
            gaps = _gaps(p.canary if not canary_w else p.stable, "power_reason") or " (none sampled)"
            missing.append(f"power of {side} nodes unavailable{gaps}: maxPowerIncreasePercent inconclusive")
    if t.max_temperature_c is not None:
        canary_t = [r for r in p.canary if r.celsius is not None]
        if canary_t:
            hottest = max(canary_t, key=lambda r: r.celsius or 0.0)
            celsius = hottest.celsius or 0.0
            sensor = f" ({hottest.sensor})" if hottest.sensor else ""
            gaps = _gaps([r for r in p.canary if r.celsius is None], "temperature_reason")
            checks.append(Check("temperature", celsius <= t.max_temperature_c,
                                f"temperature {celsius:.1f} °C on canary node {hottest.node}{sensor} "
                                f"{'>' if celsius > t.max_temperature_c else '<='} maxTemperatureC "
                                f"{t.max_temperature_c:g}{gaps}"))
        else:
            gaps = _gaps(p.canary, "temperature_reason") or " (none sampled)"
            missing.append(f"temperature of canary nodes unavailable{gaps}: maxTemperatureC inconclusive")
    return checks, missing


def _gaps(readings: Sequence[NodeReading], reason: str, limit: int = 3) -> str:
    """" (no reading from n1: why; n2: why)", or "" when every node gave one."""
    if not readings:
        return ""
    shown = "; ".join(f"{r.node}: {getattr(r, reason) or 'no reading'}" for r in readings[:limit])
    more = f" and {len(readings) - limit} more" if len(readings) > limit else ""
    return f" (no reading from {shown}{more})"


def _golden_checks(g: GoldenResult, t: Thresholds) -> list[Check]:
    if g.error is not None:
        # Only the canary's own error is its fault; an unreachable reference says nothing.
        if g.canary_error:
            return [Check("golden", False, f"golden inputs: canary answered with an error: {g.error}")]
        return []
    return [
        Check(f"golden:{o.output}", o.cosine >= t.min_golden_cosine,
              f"golden output {o.output!r}: cosine {o.cosine:.4f} on canary vs {g.reference} "
              f"over {g.samples} sample(s) (minimum {t.min_golden_cosine:g})")
        for o in g.outputs
    ]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def _mib(b: float) -> str:
    return f"{b / 2**20:.0f} MiB"


def _names(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _deferred(pods: Sequence[DeferredPod], limit: int = 3) -> str:
    shown = ", ".join(f"{d.pod}: {d.reason}" for d in pods[:limit])
    return shown + (f" and {len(pods) - limit} more" if len(pods) > limit else "")
