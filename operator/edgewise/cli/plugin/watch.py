"""`kubectl edgewise status --watch`: follow one EdgeModel through a Kubernetes watch until a verdict.

The imperative shell around verdict.py: one GET, then a watch from its resourceVersion (no
polling); a watch window the server closes is reopened from the last version seen, and an
expired version (410 Gone) is answered with a fresh GET.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

from edgewise.api.resources import GROUP, VERSION, EdgeModel
from edgewise.cli.plugin.verdict import Exit, Verdict, judge, progress_line

Emit = Callable[[str], None]


def watch_until_verdict(custom: Any, namespace: str, name: str, timeout: float, emit: Emit,
                        clock: Callable[[], float] = time.monotonic) -> Verdict:
    from kubernetes.client import ApiException

    deadline = clock() + timeout
    shown = _Shown(emit)
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, EdgeModel.PLURAL, name)
    while True:
        shown.show(obj)
        verdict = judge(obj)
        if verdict.exit is not None:
            return verdict
        remaining = deadline - clock()
        if remaining <= 0:
            return Verdict(Exit.TIMED_OUT, f"no verdict within {timeout:.0f}s; last: {verdict.reason}")
        try:
            for event in _events(custom, namespace, name, obj["metadata"]["resourceVersion"], remaining):
                if event["type"] == "DELETED":
                    return Verdict(Exit.ERROR, f"EdgeModel {namespace}/{name} was deleted")
                obj = event["object"]
                shown.show(obj)
                verdict = judge(obj)
                if verdict.exit is not None:
                    return verdict
        except ApiException as err:
            if err.status != 410:
                raise
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, EdgeModel.PLURAL, name)


def _events(custom: Any, namespace: str, name: str, resource_version: str, seconds: float
            ) -> Iterator[dict[str, Any]]:
    """The object's changes after `resource_version`, for at most `seconds` (the server ends the window)."""
    from kubernetes import watch

    w = watch.Watch()
    try:
        yield from w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, EdgeModel.PLURAL,
                            field_selector=f"metadata.name={name}", resource_version=resource_version,
                            timeout_seconds=max(1, int(seconds)),
                            # a connection that dies silently must not outlive the deadline by much
                            _request_timeout=(10, seconds + 30))
    finally:
        w.stop()


class _Shown:
    """Prints a progress line when it differs from the last one printed."""

    def __init__(self, emit: Emit) -> None:
        self.emit, self.last = emit, ""

    def show(self, obj: dict[str, Any]) -> None:
        line = progress_line(obj)
        if line != self.last:
            self.last = line
            self.emit(f"{dt.datetime.now(dt.UTC):%H:%M:%S} {line}")
