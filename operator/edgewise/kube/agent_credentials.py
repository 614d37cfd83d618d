"""The operator's identity towards the node agents.

The agents let the operator stage artifacts (prefetch) when it presents a token for
the audience `contract.AGENT_AUDIENCE` whose user is the one named in the agent
DaemonSet (`--operator-user`). The operator learns its user name from the apiserver
(a SelfSubjectReview: whatever credentials it runs with) and gets the token either
from a projected volume (setting `agent_token_file`) or from the TokenRequest API
for its own ServiceAccount (the chart grants `create serviceaccounts/token` on that
one ServiceAccount only). Both are cached; the token until shortly before it expires.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from kubernetes import client

from edgewise import contract
from edgewise.api.settings import OperatorSettings
from edgewise.contract import service_account

log = logging.getLogger("edgewise.agent-credentials")


class AgentCredentials:
    def __init__(self, api: client.ApiClient, settings: OperatorSettings) -> None:
        self.api = api
        self.settings = settings
        self._lock = threading.Lock()
        self._user: str | None = None
        self._token: tuple[str, float] | None = None  # token, renew after (monotonic)

    def user(self) -> str | None:
        """The user name the operator authenticates as; None if the apiserver cannot say."""
        with self._lock:
            if self._user is None:
                try:
                    review = client.AuthenticationV1Api(self.api).create_self_subject_review(
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
                    self._user = review.status.user_info.username or ""
                except (client.ApiException, OSError, AttributeError) as err:
                    log.warning("cannot learn the operator's own user name (SelfSubjectReview): %s", err)
                    return None
            return self._user or None

    def token(self) -> str | None:
        """A token for the agents, or None (staging is then refused by the agents; pods fetch themselves)."""
        if self.settings.agent_token_file:
            try:
                return Path(self.settings.agent_token_file).read_text(encoding="utf-8").strip() or None
            except OSError as err:
                log.warning("no agent token at %s: %s", self.settings.agent_token_file, err)
                return None
        with self._lock:
            if self._token is not None and time.monotonic() < self._token[1]:
                return self._token[0]
        user = self.user()
        account = service_account(user) if user else None
        if account is None:
            return None  # not a ServiceAccount (e.g. an admin kubeconfig): nothing to request a token for
        namespace, name = account
        body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[contract.AGENT_AUDIENCE], expiration_seconds=contract.AGENT_TOKEN_SECONDS))
        try:
            answer = client.CoreV1Api(self.api).create_namespaced_service_account_token(name, namespace, body)
        except (client.ApiException, OSError) as err:
            log.warning("cannot get a token for the node agents (TokenRequest for %s): %s", user, err)
            return None
        lifetime = contract.AGENT_TOKEN_SECONDS
        with self._lock:
            self._token = (answer.status.token, time.monotonic() + lifetime * 0.8)
            return self._token[0]
