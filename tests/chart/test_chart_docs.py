"""The chart's README table and NOTES.txt say what the chart really has and ships."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import yaml
from chart_support import ALL_OPTIONS, CHART, NAMESPACE, Helm, env_of, notes, one, values_doc

from edgewise.api.settings import OperatorSettings
from edgewise.cli.kubectl_plugin import build_parser
from edgewise.core import names
from edgewise.core.agent import agent_daemonset

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def test_the_readme_values_table_is_generated_from_the_schema() -> None:
    doc = values_doc()
    readme = (CHART / "README.md").read_text()
    assert doc.render(readme, SCHEMA, VALUES) == readme, "stale: run .venv/bin/python hack/chart_values_doc.py"
    for key, _ in doc.leaves(SCHEMA, VALUES):
        assert f"| `{key}` |" in readme, key
    # The check bites: another description would change the table.
    changed = json.loads(json.dumps(SCHEMA))
    changed["properties"]["imageRegistry"]["description"] = "something else"
    assert doc.render(readme, changed, VALUES) != readme


def _undeclared(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        sub = schema.get("properties", {}).get(key)
        if sub is None:
            out.append(prefix + key)
        elif isinstance(value, dict) and "properties" in sub:
            out += _undeclared(value, sub, f"{prefix}{key}.")
    return out


def _undescribed(schema: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, sub in schema.get("properties", {}).items():
        if not sub.get("description"):
            out.append(prefix + key)
        out += _undescribed(sub, f"{prefix}{key}.")
    return out


def test_every_value_is_declared_and_described_in_the_schema() -> None:
    assert _undeclared(VALUES, SCHEMA) == []
    assert _undeclared({"operator": {"workerz": 1}}, SCHEMA) == ["operator.workerz"]  # the walk bites
    assert _undescribed(SCHEMA) == []


def _commands(text: str) -> list[list[str]]:
    return [shlex.split(line.split("#")[0]) for line in text.splitlines() if line.strip().startswith("kubectl ")]


def test_notes_commands_name_what_the_chart_and_the_operator_create(helm: Helm) -> None:
    for values in ({}, ALL_OPTIONS):
        docs = helm.template(values)
        settings = OperatorSettings.from_env(env_of(docs))
        agent = agent_daemonset(settings)
        text = notes(helm, values)
        commands = _commands(text)
        assert len(commands) == 7, text
        deployment = one(docs, "Deployment")["metadata"]["name"]
        assert ["kubectl", "-n", NAMESPACE, "get", "deployment", deployment] in commands
        assert ["kubectl", "-n", NAMESPACE, "logs", f"deployment/{deployment}"] in commands
        # The agent: its namespace and label are those the operator renders it with.
        (agent_cmd,) = [c for c in commands if "daemonset,pods" in c]
        assert agent_cmd[2] == agent["metadata"]["namespace"] == settings.agent_namespace
        key, _, value = agent_cmd[agent_cmd.index("-l") + 1].partition("=")
        assert agent["spec"]["template"]["metadata"]["labels"][key] == value == names.AGENT_COMPONENT
        assert settings.agent_cache_dir in text


def test_notes_name_the_crds_and_plugin_commands_that_exist(helm: Helm) -> None:
    commands = _commands(notes(helm))
    plurals = {yaml.safe_load(p.read_text())["spec"]["names"]["plural"] for p in (CHART / "crds").glob("*.yaml")}
    (get,) = [c for c in commands if c[1:3] == ["get", "deploymentprofiles,edgemodels"]]
    assert set(get[2].split(",")) == plurals
    (describe,) = [c for c in commands if "describe" in c]
    assert describe[4] in {yaml.safe_load(p.read_text())["spec"]["names"]["singular"]
                           for p in (CHART / "crds").glob("*.yaml")}
    plugin = [c[1:] for c in commands if c[1] == "edgewise"]
    assert len(plugin) == 2
    for args in plugin:
        for action in args[3].split("|"):  # "promote|abort|history" stands for three commands
            parsed = build_parser().parse_args([*args[1:3], action, "defect-detector"])
            assert (parsed.action, parsed.model, parsed.namespace) == (action, "defect-detector", "<namespace>")


def test_notes_tell_where_pull_secrets_must_exist_and_an_agent_namespace_to_create(helm: Helm) -> None:
    assert "Pull Secrets" not in notes(helm) and "did not create" not in notes(helm)
    text = notes(helm, {"imagePullSecrets": ["regcred"], "agent": {"namespace": "ew-node", "createNamespace": False}})
    assert re.search(r"Pull Secrets \(regcred\).*\n.*in edgewise-system, in ew-node", text), text
    assert "did not create ew-node" in text and "enforce=privileged" in text
