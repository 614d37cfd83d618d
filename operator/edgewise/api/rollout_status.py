"""Status of canary rollouts: per class where it stands, and a bounded revision history.

Everything the rollout state machine needs to resume after an operator restart
lives here, in the EdgeModel's status — nothing is kept only in memory.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from edgewise.api.base import ApiModel

ClassRolloutState = Literal["Stable", "Progressing", "Paused", "Degraded", "RolledBack"]

class Outcome(StrEnum):
    """The verdict of one analysis interval (core/analysis.py decides it)."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


RevisionOutcome = Literal["Progressing", "Succeeded", "RolledBack", "Aborted", "Superseded"]
HISTORY_LIMIT = 10


class SiteVerdict(ApiModel):
    """One site's canary pods judged against stable pods (docs/rollouts.md#sites)."""

    site: str = Field(description="Site name (\"\": nodes without the site label).")
    outcome: Outcome = Field(description="Verdict of this site's canary pods.")
    baseline: Literal["site", "fleet"] = Field(
        description="site: against stable pods of the class at the same site; fleet: the site had too few, so "
                    "against the class's stable pods everywhere.")
    message: str = Field(default="", max_length=1024, description="The verdict with its numbers.")


class AnalysisRecord(ApiModel):
    """The last measurement of a class's canary against its stable nodes."""

    time: str = Field(description="When it was measured (RFC 3339).")
    outcome: Outcome = Field(description="Verdict of this measurement.")
    message: str = Field(default="", max_length=4096, description="The verdict with its numbers.")
    canary_pods: int = Field(default=0, description="Canary pods measured.")
    stable_pods: int = Field(default=0, description="Stable pods measured.")
    deferred_pods: int = Field(default=0, description="Pods neither passed nor failed (node NotReady, no answer).")
    sites: list[SiteVerdict] | None = Field(
        default=None, max_length=64,
        description="The verdict per site, when the rollout has site steps: a failing site fails the class's step "
                    "(at most 64, failures first).")


class SiteProgress(ApiModel):
    """Where the rollout of one class stands at one site."""

    site: str = Field(description="Site name (\"\": nodes without the site label).")
    nodes: int = Field(default=0, description="Nodes of the class at this site.")
    canary_nodes: int = Field(default=0, description="Of those, nodes in the canary cohort (on the new version, "
                                                     "or moving to it).")
    ready_nodes: int = Field(default=0, description="Of those, nodes whose Ready condition is true.")
    canary_site: bool = Field(default=False, description="Pinned by a step's canarySites.")
    verdict: Outcome | None = Field(default=None, description="The site's last analysis verdict in this step.")


class CohortStart(ApiModel):
    """When a step asked a range of the class's buckets to take the canary (nodeTimeout counts from it)."""

    below_bucket: int = Field(ge=0, le=1_000_000_000_000,
                              description="Nodes whose place in the rollout order (bucket, or site rank: see "
                                          "orderLabel) is below this (and at or above the previous entry's) were "
                                          "asked at `since`.")
    since: str = Field(description="When the step asked them (RFC 3339).")


class NodeTally(ApiModel):
    """Nodes of a class that tried a canary revision, and how many of them failed (spec.rollout.abort).

    Counts never go down while the revision rolls out (a node that failed once stays failed), and they stay
    after the class's canary ends, so a class rolled back by its own analysis still counts for the fleet."""

    version: str = Field(description="Model version the nodes tried.")
    revision: str = Field(default="", description="Pod-template hash the nodes tried.")
    tried: int = Field(default=0, ge=0, description="Nodes where a canary pod was scheduled, or that timed out.")
    failed_pods: int = Field(default=0, ge=0, description="Nodes whose canary pod is Failed.")
    crash_looped: int = Field(default=0, ge=0, description="Nodes whose canary pod restarted more than "
                                                            "analysis.maxRestarts times.")
    failed_analysis: int = Field(default=0, ge=0, description="Nodes of a class whose canary failed analysis "
                                                               "beyond failureLimit.")
    timed_out: int = Field(default=0, ge=0, description="Nodes offline past spec.rollout.nodeTimeout.")

    @property
    def failed(self) -> int:
        return min(self.tried, self.failed_pods + self.crash_looped + self.failed_analysis + self.timed_out)


class AbortRecord(ApiModel):
    """The fleet-wide abort rule fired for a version."""

    version: str = Field(description="The version that was aborted.")
    at: str = Field(description="When the rule fired (RFC 3339).")
    message: str = Field(default="", max_length=4096, description="Which rule fired, with its numbers.")
class SiteStaging(ApiModel):
    """Staging of a class's artifact at one site, as its bandwidth budget paces it."""

    site: str = Field(description="Site (the value of the operator's site label; \"\" for nodes without it).")
    nodes: int = Field(default=0, ge=0, description="Nodes of the class at the site.")
    bytes: int | None = Field(default=None, ge=0, description="Bytes the site downloads from outside: one copy "
                                                               "with one copy per site; null when the artifact's "
                                                               "size is unknown.")
    bytes_per_second: int | None = Field(default=None, description="The site's byte rate; null: no limit.")
    daily_bytes: int | None = Field(default=None, description="The site's daily cap; null: no cap.")
    estimated_seconds: int | None = Field(default=None, ge=0,
                                          description="Estimated staging time at the site: bytes / rate, plus "
                                                      "whole days of waiting when a copy exceeds the daily cap.")


class ClassRollout(ApiModel):
    """Where the rollout of one hardware class stands."""

    name: str = Field(description="Hardware class.")
    state: ClassRolloutState = Field(default="Stable", description="Stable, Progressing, Paused, Degraded or "
                                                                   "RolledBack.")
    stable_slot: Literal["a", "b"] = Field(default="a", description="DaemonSet slot serving the stable revision.")
    stable_revision: str | None = Field(default=None, description="Pod-template hash of the stable revision.")
    stable_version: str | None = Field(default=None, description="Model version of the stable revision.")
    canary_revision: str | None = Field(default=None, description="Pod-template hash being rolled out.")
    canary_version: str | None = Field(default=None, description="Model version being rolled out.")
    step_index: int = Field(default=0, ge=0, description="Index of the current step in spec.rollout.steps.")
    percent: int = Field(default=0, ge=0, le=100, description="Percent of the class's nodes on the canary.")
    bucket_threshold: int = Field(default=0, ge=0, le=1_000_000_000_000,
                                  description="Nodes whose order label (orderLabel) is below this run the canary.")
    order_label: str | None = Field(
        default=None, description="The node label the threshold applies to: edgewise.io/bucket (unset), or for a "
                                  "rollout with site steps the site-ordered rank label edgewise.io/site-rank-<hash "
                                  "of the site label>. Fixed when the canary starts.")
    site_label: str | None = Field(default=None, description="The site label of a rollout with site steps.")
    canary_sites: list[str] | None = Field(default=None, description="Sites pinned on the canary by the "
                                                                      "steps reached (canarySites).")
    cohort_step: int | None = Field(default=None, description="Index of the step whose cohort is placed (site "
                                                              "rollouts).")
    sites: list[SiteProgress] | None = Field(default=None, max_length=64,
                                             description="Progress per site, in rollout order, canary sites "
                                                         "first (site rollouts; at most 64).")
    canary_nodes: int = Field(default=0, description="Nodes in the canary cohort.")
    stable_nodes: int = Field(default=0, description="Nodes of the class outside the canary cohort.")
    step_started_at: str | None = Field(default=None, description="When the current step began (RFC 3339).")
    last_analysis_at: str | None = Field(default=None, description="When the canary was last measured.")
    passes: int = Field(default=0, ge=0, description="Passing measurements in the current step.")
    failures: int = Field(default=0, ge=0, description="Failed measurements of this revision.")
    last_analysis: AnalysisRecord | None = Field(default=None, description="The last measurement.")
    failed_revision: str | None = Field(
        default=None, description="A revision that failed here: while the spec asks for it again, nothing is "
                                  "deployed until a user runs `kubectl edgewise retry`.")
    paused_by_user: bool = Field(default=False, description="`kubectl edgewise pause` holds this class.")
    switch: Literal["MakeBeforeBreak", "Replace"] | None = Field(
        default=None, description="How this class's nodes change version (spec.rollout.switch, resolved).")
    switch_reason: str = Field(default="", max_length=1024, description="Why the class uses that switch mode.")
    message: str = Field(default="", max_length=4096, description="What is happening and why.")
    soak_until: str | None = Field(
        default=None, description="The step passed and soaks (spec.rollout.minSuccessTime) until this time "
                                  "(RFC 3339) before the next step.")
    cohorts: list[CohortStart] | None = Field(
        default=None, max_length=64, description="When each step asked its nodes to take the canary, by bucket "
                                                 "range (for spec.rollout.nodeTimeout).")
    tally: NodeTally | None = Field(default=None, description="Nodes that tried the canary and failed it (for "
                                                              "spec.rollout.abort).")
    waiting_for_window: bool = Field(
        default=False, description="A due step waits for spec.rollout.windows.activation to open (see "
                                   "windowOpensAt and message); a rollback never waits.")
    window_opens_at: str | None = Field(
        default=None, description="While waitingForWindow: when the activation window opens for the nodes the "
                                  "step moves (RFC 3339); unset when it does not open within 366 days.")
    staged_threshold: int = Field(
        default=0, ge=0, le=1_000_000_000_000,
        description="Nodes whose place in the rollout order (edgewise.io/bucket, or site rank: see orderLabel) is "
                    "below this were asked to prefetch the canary's artifact (staging runs ahead of a step that "
                    "waits for its activation window).")
    staged_sites: list[str] | None = Field(
        default=None, description="Canary sites a step pins whose nodes were asked to prefetch the canary's "
                                  "artifact (asked once, also while the step waits for its activation window).")
    staging: list[SiteStaging] | None = Field(
        default=None, description="While a canary rolls out: per site, the artifact's bytes from outside the "
                                  "site and the estimated staging time within the site's bandwidth budget.")
    staging_seconds: int | None = Field(
        default=None, ge=0, description="Estimated staging time of the canary artifact: the slowest site's "
                                        "(sites stage in parallel).")


class RevisionRecord(ApiModel):
    """One revision of the model and how its rollout ended."""

    revision: int = Field(ge=1, description="Revision number, increasing with every new version/source.")
    version: str = Field(description="spec.version of the revision.")
    source_uri: str = Field(default="", description="spec.source.uri of the revision.")
    source_sha256: str = Field(default="", description="spec.source.sha256 of the revision.")
    outcome: RevisionOutcome = Field(description="Progressing, Succeeded, RolledBack, Aborted or Superseded.")
    started_at: str = Field(description="When the rollout of this revision began.")
    finished_at: str | None = Field(default=None, description="When it ended.")
    reason: str = Field(default="", max_length=4096, description="Why it ended so, with numbers.")


class RolloutStatus(ApiModel):
    """Canary rollouts of the model: per class, and the history of revisions."""

    revision: int = Field(default=0, ge=0, description="Current revision number (see history).")
    classes: list[ClassRollout] | None = Field(default=None, description="Per-class rollout state.")
    history: list[RevisionRecord] | None = Field(
        default=None, description=f"The last {HISTORY_LIMIT} revisions, newest last.")
    last_command: str | None = Field(default=None, description="The last `kubectl edgewise` command handled.")
    aborted: AbortRecord | None = Field(
        default=None, description="The fleet-wide abort rule (spec.rollout.abort) fired: which rule, with its "
                                  "numbers.")

    def class_state(self, name: str) -> ClassRollout | None:
        return next((c for c in self.classes or [] if c.name == name), None)
