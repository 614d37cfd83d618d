"""Running the real `helm` on charts/edgewise: lint, template, and reading what it renders."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "edgewise"
RELEASE, NAMESPACE = "ew", "edgewise-system"

# Every value the schema declares, set to something other than its default (test_chart.py checks
# that this covers every value, so a new value is rendered here too).
ALL_OPTIONS: dict[str, Any] = {
    "imageRegistry": "registry.local:5000",
    "imagePullSecrets": ["regcred", {"name": "mirror-pull"}],
    "operator": {
        "image": {"repository": "acme/edgewise-operator", "tag": "9.9.9", "pullPolicy": "Always"},
        "watchNamespaces": ["vision", "retail"],
        "logLevel": "DEBUG",
        "workers": 4,
        "resyncSeconds": 120,
        "probe": {"maxReconcileSeconds": 900, "maxQueueAgeSeconds": 1200},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "4Gi"}},
        "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
        "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "priorityClassName": "edgewise-critical",
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "podLabels": {"team": "ml-platform"},
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                               "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
    },
    "images": {
        "agent": {"repository": "acme/agent", "tag": "1.2.3"},
        "onnxruntime": {"repository": "acme/onnxruntime", "tag": "1.2.3"},
        "openvino": {"repository": "acme/node-openvino", "tag": "1.2.4"},
        "ngcRelease": "25.03",
        "tritonJetson": {"repository": "acme/triton-jetson", "tag": ""},
        "triton": {"repository": "nvidia/tritonserver", "tag": ""},
        "pullPolicy": "Always",
    },
    "artifacts": {"enabled": True, "existingClaim": "edgewise-artifacts", "jobMemoryMiB": 8192,
                  "jobTimeoutSeconds": 600, "retrySeconds": 30},
    "agent": {"namespace": "ew-node", "createNamespace": False, "cacheDir": "/data/edgewise",
              "keepPerModel": 3, "maxCacheSize": "50Gi", "nodeSelector": {"edgewise.io/edge": "true"},
              "serviceAccountName": "ew-agent", "allowHosts": ["models.internal"], "denyPrivate": True,
              "downloadWorkers": 2, "downloadDeadlineSeconds": 600,
              "bandwidth": {"siteLabel": "edgewise.io/site", "timeZone": "Europe/Berlin", "oneCopyPerSite": False,
                            "default": {"bytesPerSecond": 5000000, "dailyBytes": 20000000000},
                            "sites": {"factory-a": {"bytesPerSecond": 1000000, "dailyBytes": None}}}},
    "gpu": {"runtimeClassName": "nvidia-legacy", "resourceName": "nvidia.com/gpu.shared"},
    "serviceAccount": {"create": True, "name": "edgewise-op", "annotations": {"example.com/owner": "ml"}},
    "security": {"prometheusAddresses": ["http://prometheus.monitoring:9090"], "allowedImages": ["acme/*"],
                 "allowKeylessTolerations": True, "admissionPolicies": False},
    "trust": {"attestationKey": {"generate": False, "existingSecret": "my-attestation-key"},
              "nodeTrustedKeys": {"configMap": "ew-trust",
                                  "publicKeys": ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]},
              "nodePlanCheck": True, "policyConfigMap": "trust/signers", "requireSignedSources": True},
    "monitoring": {"port": 9091,
                   "serviceMonitor": {"enabled": True, "interval": "30s", "labels": {"release": "kps"}},
                   "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
                   "dashboard": {"enabled": True, "labels": {"grafana_dashboard": "yes"}}},
    "tracing": {"otlpEndpoint": "http://otel-collector.monitoring:4318",
                "env": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}},
}


@dataclass(frozen=True)
class Helm:
    binary: Path

    def run(self, *args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump(values or {}, f)
            f.flush()
            return subprocess.run([str(self.binary), *args, "-f", f.name], capture_output=True, text=True,
                                  check=False)

    def template(self, values: dict[str, Any] | None = None, *extra: str) -> list[dict[str, Any]]:
        """The rendered objects; fails the test with helm's message when rendering fails."""
        out = self.run("template", RELEASE, str(CHART), "-n", NAMESPACE, *extra, values=values)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    def refuses(self, values: dict[str, Any], *extra: str) -> str:
        """helm's error for values it must refuse (fails the test if it renders them)."""
        out = self.run("template", RELEASE, str(CHART), "-n", NAMESPACE, *extra, values=values)
        assert out.returncode != 0, f"helm rendered {values}"
        return out.stderr


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def operator_service_account(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's ServiceAccount (the chart also makes the node agent's)."""
    (found,) = [d for d in docs if d["kind"] == "ServiceAccount"
                and d["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"]
    return found


def operator_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(one(docs, "Deployment")["spec"]["template"])


def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's environment, with the downward API resolved as the kubelet would."""
    (container,) = operator_pod(docs)["spec"]["containers"]
    out = {}
    for e in container["env"]:
        if "value" in e:
            out[e["name"]] = e["value"]
        else:
            assert e["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, e
            out[e["name"]] = NAMESPACE
    return out


def values_doc() -> Any:
    """hack/chart_values_doc.py, the README table's generator, as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("chart_values_doc", REPO / "hack" / "chart_values_doc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def notes(helm: Helm, values: dict[str, Any] | None = None) -> str:
    """NOTES.txt as `helm install` prints it. Helm renders NOTES only when installing (which needs a
    cluster), so a copy of the chart carries it as a template `helm template` shows."""
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "edgewise"
        shutil.copytree(CHART, chart)
        text = (chart / "templates" / "NOTES.txt").read_text()
        (chart / "templates" / "NOTES.txt").unlink()
        (chart / "templates" / "_notes.tpl").write_text('{{- define "test.notes" -}}\n' + text + "{{- end -}}\n")
        (chart / "templates" / "notes.yaml").write_text('notes: |\n  {{- include "test.notes" . | nindent 2 }}\n')
        out = helm.run("template", RELEASE, str(chart), "-n", NAMESPACE, "--show-only", "templates/notes.yaml",
                       values=values)
    assert out.returncode == 0, out.stderr
    return str(yaml.safe_load(out.stdout)["notes"])
