"""Where an EdgeModel's rollout stands, for `kubectl edgewise status --watch`: done, failed, or not yet.

Pure: a function of the object the API returned. The exit codes are the plugin's contract with CI
(docs/rollouts.md, "Gating a pipeline"); they never change meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    PROMOTED = 0  # every class runs spec.version and the model is Ready
    ERROR = 1  # the plugin could not tell: not found, deleted, API unreachable
    USAGE = 2  # bad arguments (argparse's own code)
    ROLLED_BACK = 3  # the revision was rolled back (automatically, in any class) or aborted
    DEGRADED = 4  # phase Degraded or Failed for another reason (profile missing, artifact refused, deadline)
    TIMED_OUT = 5  # --timeout passed first


@dataclass(frozen=True)
class Verdict:
    exit: Exit | None  # None: still under way, keep watching
    reason: str


def judge(obj: dict[str, Any]) -> Verdict:
    """The verdict on the spec the object carries now; the status must describe that spec."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if observed != generation:
        return Verdict(None, f"waiting for the operator to observe generation {generation} (status has {observed})")
    history = ((status.get("rollout") or {}).get("history")) or []
    record = _current_revision(spec, history)
    outcome = record.get("outcome") if record else None
    phase = status.get("phase")
    if record is not None and outcome in ("RolledBack", "Aborted"):
        return Verdict(Exit.ROLLED_BACK, f"revision {record.get('revision')} ({spec.get('version')}) "
                                         f"{outcome}: {record.get('reason') or '-'}")
    if phase in ("Degraded", "Failed"):
        return Verdict(Exit.DEGRADED, f"{phase}: {_condition_message(status, 'Degraded')}")
    if phase == "Ready" and (outcome == "Succeeded" or (not history and _no_rollout_under_way(status))):
        return Verdict(Exit.PROMOTED, f"{spec.get('version')} promoted: {_condition_message(status, 'Ready')}")
    return Verdict(None, f"phase {phase or '-'}, revision outcome {outcome or '-'}")


def _current_revision(spec: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The history record of spec.version and spec.source, if the operator has started it."""
    if not history:
        return None
    last = history[-1]
    source = spec.get("source") or {}
    same = last.get("version") == spec.get("version") and last.get("sourceUri", source.get("uri")) == source.get("uri")
    return last if same else None


def _no_rollout_under_way(status: dict[str, Any]) -> bool:
    """No revision history (no rollout status at all): done when nothing is progressing."""
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None)
    return not status.get("canaryVersion") and (progressing is None or progressing.get("status") != "True")


def _condition_message(status: dict[str, Any], kind: str) -> str:
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)
    if cond is None:
        return "-"
    return f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ") or "-"


def progress_line(obj: dict[str, Any]) -> str:
    """One line per observable change: the phase and each class's state, step and percent."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    rollout = status.get("rollout") or {}
    classes = class_summaries(obj)
    return (f"{spec.get('version')}: phase {status.get('phase') or '-'}, revision {rollout.get('revision', 0)}"
            + (f"; {', '.join(classes)}" if classes else ""))


def class_summaries(obj: dict[str, Any]) -> list[str]:
    """Per class: `name=State (version)`, with the step and percent while a canary runs."""
    steps = len((((obj.get("spec") or {}).get("rollout") or {}).get("steps")) or [])
    out = []
    for c in ((obj.get("status") or {}).get("rollout") or {}).get("classes") or []:
        where = f" step {c.get('stepIndex', 0) + 1}/{steps} {c.get('percent', 0)}%" if c.get("canaryRevision") else ""
        version = c.get("canaryVersion") or c.get("stableVersion") or "-"
        out.append(f"{c.get('name')}={c.get('state', '-')}{where} ({version})")
    return out
