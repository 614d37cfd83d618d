"""Every case of the customizations' health_test.yaml and action_test.yaml, judged by Argo CD itself.

The cases are in Argo CD's upstream format; their testdata are live objects the cluster tests
captured (tests/cluster/test_argocd.py). Argo CD evaluates them from the shipped argocd-cm snippet,
in the mode that snippet sets: no resource.customizations.useOpenLibs key, so Argo CD's default
sandbox, without Lua's `string` library — the mode actions always run in.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from argocd.argocd_support import CUSTOMIZATIONS, SNIPPET, health, list_actions, run_action, write_cm
from edgewise.api.commands import COMMAND_ANNOTATION, VERBS, Command, parse

KINDS = sorted(p for p in CUSTOMIZATIONS.glob("*/*") if p.is_dir())
EDGEMODEL = CUSTOMIZATIONS / "edgewise.io" / "EdgeModel"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("argocd_cm", CUSTOMIZATIONS.parents[2] / "hack" / "argocd_cm.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _health_cases() -> list[Any]:
    return [pytest.param(kind / case["inputPath"], case["healthStatus"], id=f"{kind.name}/{case['inputPath']}")
            for kind in KINDS if (kind / "health_test.yaml").exists()
            for case in _load(kind / "health_test.yaml")["tests"]]


def _action_file(kind: Path) -> dict[str, Any]:
    return dict(_load(kind / "actions" / "action_test.yaml"))


def _discovery_cases() -> list[Any]:
    return [pytest.param(kind / "actions" / case["inputPath"], case["result"], id=f"{kind.name}/{case['inputPath']}")
            for kind in KINDS if (kind / "actions" / "action_test.yaml").exists()
            for case in _action_file(kind)["discoveryTests"]]


def _action_cases() -> list[Any]:
    return [pytest.param(kind / "actions" / case["inputPath"], case["action"],
                         kind / "actions" / case["expectedOutputPath"],
                         id=f"{kind.name}/{case['action']}/{case['inputPath']}")
            for kind in KINDS if (kind / "actions" / "action_test.yaml").exists()
            for case in _action_file(kind)["actionTests"]]


def test_the_snippet_is_generated_from_the_upstream_layout(tmp_path: Path) -> None:
    gen = _generator()
    assert gen.render() == SNIPPET.read_text(), "stale: run .venv/bin/python hack/argocd_cm.py"
    data = yaml.safe_load(SNIPPET.read_text())["data"]
    assert set(data) == {"resource.customizations.health.edgewise.io_EdgeModel",
                         "resource.customizations.health.edgewise.io_DeploymentProfile",
                         "resource.customizations.actions.edgewise.io_EdgeModel"}
    assert data["resource.customizations.health.edgewise.io_EdgeModel"] == (EDGEMODEL / "health.lua").read_text()
    actions = yaml.safe_load(data["resource.customizations.actions.edgewise.io_EdgeModel"])
    assert actions["discovery.lua"] == (EDGEMODEL / "actions" / "discovery.lua").read_text()
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
        verb: (EDGEMODEL / "actions" / verb / "action.lua").read_text() for verb in VERBS}
    # The check bites: another script would change the snippet.
    copy = tmp_path / "resource_customizations"
    (copy / "edgewise.io" / "EdgeModel").mkdir(parents=True)
    (copy / "edgewise.io" / "EdgeModel" / "health.lua").write_text("return {status = 'Healthy'}\n")
    assert gen.render(copy) != SNIPPET.read_text()


def test_the_snippet_runs_in_argocds_default_sandbox(tmp_path: Path) -> None:
    """No useOpenLibs key: the scripts must (and do) work without the `string` library — and that mode bites."""
    data = yaml.safe_load(SNIPPET.read_text())["data"]
    assert not [k for k in data if "useOpenLibs" in k]
    obj = EDGEMODEL / "testdata" / "ready.yaml"
    uses_string = 'return {status = "Healthy", message = string.upper("ready")}\n'
    key = "resource.customizations.health.edgewise.io_EdgeModel"
    sandboxed = write_cm(tmp_path / "sandboxed.yaml", {key: uses_string})
    with pytest.raises(RuntimeError, match=r"attempt to index a non-table object\(nil\) with key 'upper'"):
        health(obj, sandboxed)
    opened = write_cm(tmp_path / "opened.yaml", {key: uses_string,
                                                 "resource.customizations.useOpenLibs.edgewise.io_EdgeModel": "true"})
    assert health(obj, opened).message == "READY"


@pytest.mark.parametrize(("obj", "expected"), _health_cases())
def test_health(obj: Path, expected: dict[str, str]) -> None:
    got = health(obj)
    assert (got.status, got.message) == (expected["status"], expected.get("message", ""))


@pytest.mark.parametrize(("obj", "expected"), _discovery_cases())
def test_action_discovery(obj: Path, expected: list[dict[str, Any]]) -> None:
    assert list_actions(obj) == {a["name"]: a["disabled"] for a in expected}


@pytest.mark.parametrize(("obj", "action", "expected"), _action_cases())
def test_action(obj: Path, action: str, expected: Path) -> None:
    before, after = _load(obj), run_action(obj, action)
    assert after == _load(expected)
    # Only the command annotation changes: never the spec, which Git owns.
    del after["metadata"]["annotations"][COMMAND_ANNOTATION]
    before.setdefault("metadata", {}).setdefault("annotations", {}).pop(COMMAND_ANNOTATION, None)
    assert after == before


def test_every_plugin_verb_is_an_action_that_writes_the_plugins_command() -> None:
    obj = EDGEMODEL / "actions" / "testdata" / "canary-progressing.yaml"
    live = _load(obj)
    assert sorted(p.name for p in (EDGEMODEL / "actions").iterdir() if (p / "action.lua").exists()) == sorted(VERBS)
    assert set(list_actions(obj)) == set(VERBS)
    ids = set()
    for verb in VERBS:
        written = run_action(obj, verb)["metadata"]["annotations"][COMMAND_ANNOTATION]
        command = parse({COMMAND_ANNOTATION: written})
        assert command is not None and (command.verb, command.classes) == (verb, ())
        # Byte for byte what `kubectl edgewise` writes for this command (every class).
        assert written == Command(verb=verb, id=command.id).to_annotation()
        assert live["metadata"]["resourceVersion"] in command.id
        ids.add(command.id)
    assert len(ids) == len(VERBS)
