"""The model's revision history in status.rollout: one record per version/source, with how it ended."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from edgewise.api.resources import EdgeModel
from edgewise.api.rollout_status import HISTORY_LIMIT, AbortRecord, ClassRollout, RevisionRecord, RolloutStatus
from edgewise.core.durations import iso
from edgewise.core.rollout.class_machine import Decision


def revision_history(model: EdgeModel, old: RolloutStatus, decisions: Mapping[str, Decision],
                     classes: list[ClassRollout], now: dt.datetime, aborted: AbortRecord | None = None
                     ) -> list[RevisionRecord]:
    """The history with the spec's revision last: a new spec supersedes a revision still in progress,
    and a revision ends once no class has a canary of it left."""
    history = list(old.history or [])
    spec = model.spec
    digest = spec.source.digest()
    last = history[-1] if history else None
    if last is None or (last.version, last.source_sha256, last.source_uri) != (spec.version, digest,
                                                                                   spec.source.uri):
        if last is not None and last.outcome == "Progressing":
            history[-1] = last.model_copy(update={"outcome": "Superseded", "finished_at": iso(now)})
        history.append(RevisionRecord(revision=(last.revision + 1) if last else 1, version=spec.version,
                                      source_uri=spec.source.uri, source_sha256=digest, outcome="Progressing",
                                      started_at=iso(now)))
    current = history[-1]
    # A class waiting for its previous canary to drain has not started this revision: not finished yet.
    if current.outcome == "Progressing" and not any(c.canary_revision for c in classes) \
            and not any(d.waiting_to_start for d in decisions.values()):
        finished = {d.finished for d in decisions.values() if d.finished}
        rolled_back = [c for c in classes if c.state == "RolledBack"]
        if "Aborted" in finished:
            outcome, reason = "Aborted", "aborted by a user"
        elif rolled_back and aborted is not None and aborted.version == spec.version:
            outcome, reason = "RolledBack", aborted.message  # the fleet-wide rule, said once
        elif rolled_back:
            outcome, reason = "RolledBack", "; ".join(f"{c.name}: {c.message}" for c in rolled_back)
        else:
            outcome, reason = "Succeeded", "every class runs this version"
        history[-1] = current.model_copy(update={"outcome": outcome, "finished_at": iso(now),
                                                 "reason": reason[:4096]})
    return history[-HISTORY_LIMIT:]
