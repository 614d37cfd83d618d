"""kopf handlers: thin, they only turn watch events into work-queue keys.

Only `on.event` handlers are used: they keep no state on the watched objects
(no finalizers, no annotations), so the operator never writes to an object
just because it watched it — a restart costs no writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from edgewise.api.resources import GROUP, VERSION, DeploymentProfile, EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.controller import health
from edgewise.controller.workers import Controller
from edgewise.core import names

log = logging.getLogger("edgewise.controller")


def connection_info(cfg: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from the kubernetes client's configuration, so both use the same kubeconfig.

    (kopf's own `login_via_client` reads only the default kubeconfig location.)
    """
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
        scheme=scheme or None, token=token or None,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file,
    )


def register(registry: kopf.OperatorRegistry, controller: Controller, settings: OperatorSettings) -> None:
    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # kopf's own Events for handler outcomes are noise for users; keep warnings and errors.
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 30

    limits = health.Limits(max_reconcile_seconds=settings.probe_max_reconcile_seconds,
                           max_queue_age_seconds=settings.probe_max_queue_age_seconds)

    # Served on --liveness (the chart's liveness and readiness probes): a failure answers HTTP 500.
    @kopf.on.probe(id="work", registry=registry)
    def work(**_: Any) -> dict[str, Any]:
        verdict = health.judge(controller.work(), limits)
        if not verdict.healthy:
            log.warning("liveness probe failing: %s", "; ".join(verdict.problems))
            raise kopf.PermanentError("; ".join(verdict.problems))  # permanent: a probe must not retry
        return verdict.report

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(controller.reconciler.api.configuration)

    @kopf.on.event(GROUP, VERSION, EdgeModel.PLURAL, registry=registry)
    async def edgemodel(type: str, namespace: str | None, name: str, **_: Any) -> None:
        if type != "DELETED" and namespace:  # deletion: the garbage collector removes what it owned
            controller.model_changed(namespace, name)

    @kopf.on.event(GROUP, VERSION, DeploymentProfile.PLURAL, registry=registry)
    async def deploymentprofile(namespace: str | None, name: str, **_: Any) -> None:
        if namespace:
            controller.profile_changed(namespace, name)

    # Nodes are not watched here: the node cache (kube/node_cache.py, started in run.py) watches them
    # once and reports changes to the controller after its snapshot took them.

    @kopf.on.event("apps", "v1", "daemonsets", labels={names.MANAGED_BY: names.MANAGER}, registry=registry)
    async def daemonset(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
        component = labels.get(names.COMPONENT)
        if component == names.RUNTIME_COMPONENT and names.MODEL_LABEL in labels and namespace:
            controller.model_changed(namespace, labels[names.MODEL_LABEL])
        elif component == names.AGENT_COMPONENT and namespace == settings.agent_namespace:
            controller.agent_changed()
