"""User commands to a rollout (`kubectl edgewise promote|abort|…`), carried by an annotation.

Commands go through the API, never around it: the plugin writes the
annotation, the operator handles it once and records its id in
`status.rollout.lastCommand`, so a command is neither lost nor applied twice.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

COMMAND_ANNOTATION = "edgewise.io/command"
VERBS = ("promote", "promote-full", "abort", "pause", "resume", "retry")


@dataclass(frozen=True)
class Command:
    verb: str
    id: str
    classes: tuple[str, ...] = ()  # empty: every class

    def applies_to(self, class_name: str) -> bool:
        return not self.classes or class_name in self.classes

    def to_annotation(self) -> str:
        return json.dumps({"verb": self.verb, "id": self.id, "classes": list(self.classes)}, sort_keys=True)

    @staticmethod
    def new(verb: str, classes: tuple[str, ...] = ()) -> Command:
        if verb not in VERBS:
            raise ValueError(f"unknown command {verb!r}; one of {', '.join(VERBS)}")
        return Command(verb=verb, id=uuid.uuid4().hex[:12], classes=classes)


def parse(annotations: dict[str, str] | None) -> Command | None:
    """The command in `annotations`, or None when there is none or it is malformed."""
    raw = (annotations or {}).get(COMMAND_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        verb, cid = str(data["verb"]), str(data["id"])
        classes = tuple(str(c) for c in data.get("classes") or ())
    except (ValueError, KeyError, TypeError):
        return None
    return Command(verb, cid, classes) if verb in VERBS else None
