"""Every write the operator makes, counted.

Writes are skipped when the object already says what we would write (the
planner's spec hash for workloads, equality for status), which is what keeps a
restart or a resync free of API writes.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client

from edgewise.api.resources import GROUP, VERSION
from edgewise.core import names
from edgewise.core.durations import iso
from edgewise.core.observed import NodeInfo, Service, Workload
from edgewise.core.rollout.buckets import BUCKET_LABEL, bucket_of
from edgewise.core.rollout.sites import rank_label, rank_of
from edgewise.kube.convert import workload

log = logging.getLogger("edgewise.kube")

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
LABEL_WORKERS = 8  # concurrent node label patches (the client's connection pool holds 10)


class Writes:
    """Idempotent writes, with a per-verb count of the requests actually sent."""

    def __init__(self, api: client.ApiClient, component: str = "edgewise-operator") -> None:
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.component = component
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        """Writes to resources (Events excluded: they are a log, not state)."""
        return sum(n for verb, n in self.counts.items() if verb != "event")

    def apply_daemonset(self, manifest: dict[str, Any], current: Workload | None) -> tuple[str, Workload]:
        """Server-side apply unless `current` already carries the manifest's spec hash.

        Returns ("created" | "updated" | "unchanged", the object as it now is).
        """
        want = manifest["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION]
        if current is not None and current.annotations.get(names.SPEC_HASH_ANNOTATION) == want:
            return "unchanged", current
        meta = manifest["metadata"]
        resp = self.apps.patch_namespaced_daemon_set(
            meta["name"], meta["namespace"], manifest, field_manager=names.FIELD_MANAGER, force=True,
            _content_type=APPLY_PATCH, _preload_content=False)
        verb = "created" if current is None else "updated"
        self.counts[verb] += 1
        return verb, workload(json.loads(cast(Any, resp).data))  # raw response: _preload_content=False

    def apply_service(self, manifest: dict[str, Any], current: Service | None) -> str:
        """Server-side apply a Service unless `current` already carries its spec hash; the verb."""
        want = manifest["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION]
        if current is not None and current.annotations.get(names.SPEC_HASH_ANNOTATION) == want:
            return "unchanged"
        meta = manifest["metadata"]
        self.core.patch_namespaced_service(meta["name"], meta["namespace"], manifest, field_manager=names.FIELD_MANAGER,
                                           force=True, _content_type=APPLY_PATCH, _preload_content=False)
        verb = "created" if current is None else "updated"
        self.counts[f"service-{verb}"] += 1
        return verb

    def delete_daemonset(self, namespace: str, name: str, uid: str = "") -> bool:
        """Delete (only the object with `uid`, when given); False if it was already gone."""
        body = client.V1DeleteOptions(propagation_policy="Background",
                                      preconditions=client.V1Preconditions(uid=uid) if uid else None)
        try:
            self.apps.delete_namespaced_daemon_set(name, namespace, body=body)
        except client.ApiException as err:
            if err.status in (404, 409):
                return False
            raise
        self.counts["deleted"] += 1
        return True

    def create_job(self, manifest: dict[str, Any]) -> str | None:
        """Create an optimization Job; its uid, or None when one of that name exists (the caller adopts it)."""
        meta = manifest["metadata"]
        created: list[str] = []
        self._create("job-created", lambda: created.append(
            self.batch.create_namespaced_job(meta["namespace"], manifest).metadata.uid))
        return created[0] if created else None

    def create_secret(self, manifest: dict[str, Any]) -> bool:
        """Create a Secret (an optimization Job's upload token); False when one of that name exists."""
        meta = manifest["metadata"]
        return self._create("secret-created",
                            lambda: self.core.create_namespaced_secret(meta["namespace"], manifest))

    def own_secret(self, namespace: str, name: str, owner: dict[str, str]) -> None:
        """Make `owner` (a Job) the Secret's owner, so the Secret goes when the Job goes."""
        self.core.patch_namespaced_secret(name, namespace, {"metadata": {"ownerReferences": [owner]}})
        self.counts["secret-owned"] += 1

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and, in the background, its pods; False if it was already gone."""
        return self._delete("job-deleted", lambda: self.batch.delete_namespaced_job(
            name, namespace, propagation_policy="Background"))

    def delete_secret(self, namespace: str, name: str) -> bool:
        return self._delete("secret-deleted", lambda: self.core.delete_namespaced_secret(name, namespace))

    def _create(self, verb: str, create: Callable[[], object]) -> bool:
        try:
            create()
        except client.ApiException as err:
            if err.status == 409:
                return False
            raise
        self.counts[verb] += 1
        return True

    def _delete(self, verb: str, delete: Callable[[], object]) -> bool:
        try:
            delete()
        except client.ApiException as err:
            if err.status == 404:
                return False
            raise
        self.counts[verb] += 1
        return True

    def label_buckets(self, nodes: Sequence[NodeInfo]) -> int:
        """Give every node its rollout bucket label (core/rollout/buckets.py), once; the number written."""
        return self._label_nodes(nodes, BUCKET_LABEL, lambda n: str(bucket_of(n.name)), "bucket-label")

    def label_ranks(self, nodes: Sequence[NodeInfo], site_label: str) -> int:
        """Give every node its site-ordered rank for one site label (core/rollout/sites.py): once per node and
        site label, and again only when a node moves to another site; the number written."""
        return self._label_nodes(nodes, rank_label(site_label),
                                 lambda n: str(rank_of(n.name, n.labels.get(site_label, ""))), "rank-label")

    def _label_nodes(self, nodes: Sequence[NodeInfo], key: str, value_of: Callable[[NodeInfo], str],
                     count: str) -> int:
        """Set label `key` to `value_of(node)` on the nodes that lack that value; the number written.

        A new fleet of thousands of nodes needs thousands of patches once: they go LABEL_WORKERS at a time,
        since each one mostly waits for the apiserver."""
        todo = [(node.name, value) for node in nodes if node.labels.get(key) != (value := value_of(node))]
        if not todo:
            return 0

        def label(name: str, value: str) -> bool:
            try:
                self.core.patch_node(name, {"metadata": {"labels": {key: value}}})
            except client.ApiException as err:
                if err.status != 404:  # a node that left meanwhile needs no label
                    raise
                return False
            return True

        with ThreadPoolExecutor(max_workers=min(LABEL_WORKERS, len(todo)), thread_name_prefix="label") as pool:
            written = sum(pool.map(lambda nv: label(*nv), todo))
        self.counts[count] += written
        return written

    def patch_status(self, plural: str, namespace: str, name: str, old: dict[str, Any],
                     new: dict[str, Any]) -> bool:
        """Merge-patch status to `new` when it differs from `old`; True if a write was made."""
        patch = merge_patch(old, new)
        if not patch:
            return False
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": patch}, _content_type=MERGE_PATCH)
        self.counts["status"] += 1
        return True

    def event(self, involved: dict[str, str], type_: str, reason: str, message: str) -> None:
        """Record an Event; failures are logged, never raised (Events are best effort)."""
        now = iso(datetime.now(UTC))
        body = {
            "metadata": {"name": f"{involved['name']}.{uuid.uuid4().hex[:16]}",
                         "namespace": involved["namespace"]},
            "involvedObject": involved,
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(involved["namespace"], cast(Any, body))
            self.counts["event"] += 1
        except client.ApiException as err:
            log.warning("could not record event %s on %s: %s", reason, involved["name"], err.reason)


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning `old` into `new` ({} or None when equal).

    Keys absent from `new` become null (removed); lists are replaced whole,
    which is what status lists such as conditions need.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        patch: dict[str, Any] = {}
        for key in old.keys() - new.keys():
            patch[key] = None
        for key, value in new.items():
            if key not in old:
                patch[key] = value
            elif old[key] != value:
                sub = merge_patch(old[key], value)
                patch[key] = value if not isinstance(value, dict) or not isinstance(old[key], dict) else sub
        return patch
    return new if old != new else None
