"""kube/convert.runtime_pod: what canary analysis learns from a pod's status, including why its fetch failed."""

from __future__ import annotations

from typing import Any

from edgewise.kube.convert import runtime_pod


def pod(init: list[dict[str, Any]] | None = None, containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "m-arm-a-x1", "uid": "u1"}, "spec": {"nodeName": "n1"},
            "status": {"phase": "Pending", "podIP": "10.0.0.1", "initContainerStatuses": init or [],
                       "containerStatuses": containers or []}}


REFUSED = ("2026-12-04 10:20:31,990 WARNING edgewise.fetch node agent could not deliver a616 (...)\n"
           "2026-12-04 10:20:32,436 ERROR edgewise.fetch fetch failed: the attestation of sha256 8f74 is signed by "
           "key e9e2d8b12402cc7d, which is not among the 1 trusted key(s) (d55caa89fc135f31)\n")


def test_a_failed_fetch_gives_its_last_words_as_the_reason() -> None:
    crashing = {"name": "fetch", "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": REFUSED}}}
    got = runtime_pod(pod([crashing]))
    assert got.reason == ("init container fetch failed: 2026-12-04 10:20:32,436 ERROR edgewise.fetch fetch failed: "
                          "the attestation of sha256 8f74 is signed by key e9e2d8b12402cc7d, which is not among the "
                          "1 trusted key(s) (d55caa89fc135f31)")
    assert not got.ready and got.restarts == 0  # a retried fetch is not a container restart of the server


def test_without_a_message_the_reason_and_exit_code_are_said() -> None:
    failed = {"name": "fetch", "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}
    assert runtime_pod(pod([failed])).reason == "init container fetch failed: Error"


def test_a_fetch_that_completed_says_nothing() -> None:
    done = {"name": "fetch", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    oom = {"name": "server", "restartCount": 1, "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    got = runtime_pod(pod([done], [oom]))
    assert got.reason == "OOMKilled" and got.restarts == 1
