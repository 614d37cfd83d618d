"""Canary rollouts, pure: spec.rollout + the plan + what was observed → what to apply, delete and report.

One entry point, `advance` (all_classes.py). Inside, one module per job:

- `buckets`: every node's stable bucket 0–99, and a percentage as a bucket threshold;
- `observe`: what one class looks like now (its buckets, ready canary pods, live slots);
- `class_machine`: the state machine of one class (steps, pauses, analysis, commands, rollback);
- `deadline`: spec.rollout.progressDeadline, the one rule for "no progress";
- `abort`: per-node facts of the canaries (failed, crash-looped, timed out: spec.rollout.nodeTimeout) and
  the fleet-wide abort rule (spec.rollout.abort);
- `switch`: how a node changes version (make-before-break or replace) and where the slots go now;
- `placement`: the final DaemonSets per slot, and the one decision of what is deleted;
- `history`: the revision history in status;
- `windows`: maintenance windows (spec.rollout.windows): open now, next opening, per-zone gates;
- `all_classes`: every class together, the class policy, and `advance`.

Nothing here reads a clock, the API or the network: the shell (controller) reads, measures
(edgewise.analysis), and applies the result with edgewise.kube.
"""

from edgewise.core.rollout.all_classes import (
    Observed,
    RolloutResult,
    StageRequest,
    advance,
    due_analyses,
    needs_pods,
)

__all__ = ["Observed", "RolloutResult", "StageRequest", "advance", "due_analyses", "needs_pods"]
