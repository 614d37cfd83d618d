"""`kubectl edgewise`: the watch verdict and its exit codes, `list`, shell completion, and the slim install."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgewise.cli.kubectl_plugin import build_parser
from edgewise.cli.plugin.completion import DIRECTIVE_DEFAULT, DIRECTIVE_NO_FILES, candidates, script
from edgewise.cli.plugin.listing import render_list
from edgewise.cli.plugin.verdict import Exit, judge, progress_line

SOURCE = "https://models.example/detector.onnx"


def model(version: str = "2.0", generation: int = 2, observed: int | None = 2, phase: str | None = "Ready",
          history: list[dict[str, Any]] | None = None, classes: list[dict[str, Any]] | None = None,
          conditions: list[dict[str, Any]] | None = None, namespace: str = "fleet", name: str = "detector"
          ) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed, "phase": phase, "ready": "4/4",
                              "conditions": conditions or []}
    if history is not None or classes is not None:
        status["rollout"] = {"revision": len(history or []), "history": history or [], "classes": classes or []}
    return {"metadata": {"name": name, "namespace": namespace, "generation": generation, "resourceVersion": "7"},
            "spec": {"version": version, "source": {"uri": SOURCE},
                     "rollout": {"steps": [{"percent": 50}, {"percent": 100}]}},
            "status": status}


def record(revision: int, version: str, outcome: str, reason: str = "") -> dict[str, Any]:
    return {"revision": revision, "version": version, "sourceUri": SOURCE, "outcome": outcome,
            "startedAt": "2025-01-01T00:00:00Z", "reason": reason}


def stable(name: str, version: str) -> dict[str, Any]:
    return {"name": name, "state": "Stable", "stableVersion": version}


def canary(name: str, version: str, step: int, percent: int, state: str = "Progressing") -> dict[str, Any]:
    return {"name": name, "state": state, "stableVersion": "1.0", "canaryRevision": "abc", "canaryVersion": version,
            "stepIndex": step, "percent": percent}


DEGRADED = {"type": "Degraded", "status": "True", "reason": "ArtifactRejected", "message": "jetson: cosine 0.91"}


# ---- the verdict ------------------------------------------------------------------------------------

def test_a_promoted_revision_that_is_ready_passes() -> None:
    obj = model(history=[record(1, "1.0", "Succeeded"), record(2, "2.0", "Succeeded")],
                classes=[stable("jetson", "2.0"), stable("arm", "2.0")])
    assert judge(obj).exit is Exit.PROMOTED


def test_nothing_is_judged_before_the_operator_has_seen_the_spec() -> None:
    # The previous revision's Ready status must not pass a pipeline that just applied a new version.
    obj = model(generation=3, observed=2, history=[record(1, "1.0", "Succeeded")], classes=[stable("arm", "1.0")])
    verdict = judge(obj)
    assert verdict.exit is None and "generation 3" in verdict.reason


def test_a_status_still_about_the_previous_revision_is_not_a_verdict() -> None:
    obj = model(version="3.0", history=[record(1, "1.0", "RolledBack", "latency")], classes=[stable("arm", "1.0")],
                phase="Degraded", conditions=[DEGRADED])
    assert judge(obj).exit is Exit.DEGRADED  # Degraded for another reason still fails...
    obj["status"]["phase"] = "Ready"
    assert judge(obj).exit is None  # ...but the old rollback is not this revision's


def test_a_canary_under_way_is_not_a_verdict_although_the_model_serves() -> None:
    obj = model(history=[record(1, "1.0", "Succeeded"), record(2, "2.0", "Progressing")],
                classes=[canary("jetson", "2.0", 0, 50), canary("arm", "2.0", 1, 100, "Paused")])
    assert obj["status"]["phase"] == "Ready"
    assert judge(obj).exit is None


def test_a_rollback_in_any_class_or_an_abort_fails_with_its_own_code() -> None:
    rolled_back = model(phase="Degraded", history=[record(2, "2.0", "RolledBack", "jetson: p95 41 ms > 30 ms")],
                        classes=[{**stable("jetson", "1.0"), "state": "RolledBack"}, stable("arm", "2.0")])
    verdict = judge(rolled_back)
    assert verdict.exit is Exit.ROLLED_BACK and "p95 41 ms" in verdict.reason
    aborted = model(phase="Ready", history=[record(2, "2.0", "Aborted", "aborted by a user")])
    assert judge(aborted).exit is Exit.ROLLED_BACK


def test_degraded_without_a_rollback_fails_with_the_condition() -> None:
    verdict = judge(model(phase="Degraded", conditions=[DEGRADED]))
    assert verdict.exit is Exit.DEGRADED and "cosine 0.91" in verdict.reason


def test_succeeded_waits_for_the_pods_to_be_ready() -> None:
    obj = model(phase="Progressing", history=[record(2, "2.0", "Succeeded")], classes=[stable("arm", "2.0")])
    assert judge(obj).exit is None


def test_without_rollout_status_ready_and_nothing_progressing_passes() -> None:
    progressing = {"type": "Progressing", "status": "True", "reason": "RollingOut", "message": ""}
    assert judge(model(conditions=[progressing])).exit is None
    assert judge(model(conditions=[{**progressing, "status": "False"}])).exit is Exit.PROMOTED


def test_exit_codes_are_distinct_and_zero_only_for_a_promotion() -> None:
    codes = [int(e) for e in Exit]
    assert len(set(codes)) == len(codes) and [e for e in Exit if e == 0] == [Exit.PROMOTED]
    assert Exit.USAGE == 2  # argparse's own


def test_the_progress_line_shows_each_class_step_and_percent() -> None:
    obj = model(history=[record(2, "2.0", "Progressing")],
                classes=[canary("jetson", "2.0", 0, 50), stable("arm", "1.0")])
    assert progress_line(obj) == ("2.0: phase Ready, revision 1; jetson=Progressing step 1/2 50% (2.0), "
                                  "arm=Stable (1.0)")


# ---- list ---------------------------------------------------------------------------------------------

def test_list_has_a_row_per_model_with_its_classes_and_namespaces_with_all() -> None:
    items = [model(name="segmenter", namespace="b", history=[record(1, "1.0", "Succeeded")],
                   classes=[stable("arm", "1.0")]),
             model(name="detector", namespace="a", history=[record(2, "2.0", "Progressing")],
                   classes=[canary("jetson", "2.0", 0, 50)])]
    lines = render_list(items, all_namespaces=True).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "VERSION", "PHASE", "REVISION", "READY", "CLASSES"]
    assert lines[1].split()[:2] == ["a", "detector"] and "jetson=Progressing step 1/2 50% (2.0)" in lines[1]
    assert lines[2].split()[:2] == ["b", "segmenter"] and lines[2].endswith("arm=Stable (1.0)")
    assert render_list(items, all_namespaces=False).splitlines()[0].startswith("NAME ")
    assert render_list([], all_namespaces=False) == "No EdgeModels found."


# ---- completion ---------------------------------------------------------------------------------------

def names(kind: str, flags: Mapping[str, str]) -> list[str]:
    if kind == "namespaces":
        return ["default", "fleet"]
    return {"fleet": ["detector", "depth"]}.get(flags.get("namespace", ""), ["other"])


def complete(*words: str):
    return candidates(build_parser(), list(words), names)


def test_completes_verbs_flags_and_choices() -> None:
    assert complete("").choices[:3] == ["status", "list", "history"]
    assert complete("pr").choices == ["promote"]
    assert complete("status", "--").choices == ["--help", "--timeout", "--watch"]
    assert complete("promote", "m", "--f").choices == ["--full"]
    assert complete("completion", "").choices == ["bash", "zsh"]
    assert complete("list", "").choices == []


def test_completes_model_names_in_the_namespace_typed_and_namespaces_after_n() -> None:
    assert complete("-n", "fleet", "status", "de").choices == ["detector", "depth"]
    assert complete("--namespace=fleet", "abort", "dep").choices == ["depth"]
    assert complete("status", "").choices == ["other"]
    assert complete("-n", "f").choices == ["fleet"]
    assert complete("status", "detector", "").choices == []  # one model per command


def test_a_kubeconfig_completes_file_names_everything_else_does_not() -> None:
    assert complete("--kubeconfig", "").directive == DIRECTIVE_DEFAULT
    assert complete("st").directive == DIRECTIVE_NO_FILES
    assert complete("st").render() == "status\n:4\n"


def test_the_bash_script_completes_through_the_completion_executable(tmp_path: Path) -> None:
    # The real `kubectl_complete-edgewise` console script, on PATH beside the interpreter.
    bindir = Path(sys.executable).parent
    assert (bindir / "kubectl_complete-edgewise").exists()
    (tmp_path / "completion.bash").write_text(script("bash"))
    probe = ('source completion.bash; COMP_WORDS=(kubectl-edgewise promote det --fu); COMP_CWORD=3; '
             '_kubectl_edgewise; printf "%s\\n" "${COMPREPLY[@]}"; '
             'COMP_WORDS=(kubectl-edgewise ""); COMP_CWORD=1; _kubectl_edgewise; echo "${#COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PATH": f"{bindir}:/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "none")})
    lines = out.stdout.splitlines()
    assert lines[0] == "--full" and int(lines[-1]) == len(complete("").choices), out.stdout + out.stderr


def test_the_zsh_script_parses(tmp_path: Path) -> None:
    (tmp_path / "_kubectl-edgewise").write_text(script("zsh"))
    subprocess.run(["zsh", "-n", str(tmp_path / "_kubectl-edgewise")], check=True)


def test_the_completion_command_prints_the_script() -> None:
    out = subprocess.run([sys.executable, "-m", "edgewise.cli.kubectl_plugin", "completion", "zsh"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("#compdef kubectl-edgewise") and "kubectl_complete-edgewise" in out


# ---- the slim install -----------------------------------------------------------------------------

HEAVY = ("onnxruntime", "tritonclient", "numpy", "onnx", "kopf", "aiohttp", "grpc", "prometheus_client",
         "opentelemetry", "sympy", "httptools", "oras")


def test_the_plugin_imports_none_of_the_operator_or_node_dependencies() -> None:
    # Everything a `status --watch` or a completion runs, in a fresh interpreter: what it imports
    # is what `pip install edgewise` (no extras) must provide.
    code = ("import sys, edgewise.cli.kubectl_plugin as p, edgewise.cli.plugin.watch, "
            "edgewise.cli.plugin.listing; import kubernetes.client, kubernetes.config, kubernetes.watch; "
            "p.build_parser().parse_args(['status', '--watch', '--timeout', '10m', 'x']); "
            "import json; print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True).stdout))
    assert "kubernetes" in loaded and "edgewise" in loaded  # the check sees what was imported
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_the_base_install_needs_only_what_the_plugin_imports() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("[")[0] for d in project["dependencies"]}
    assert base == {"kubernetes", "pyyaml", "pydantic"}
    extras = project["optional-dependencies"]
    assert {"onnxruntime", "tritonclient[http,grpc]"} <= set(extras["node"]) and "onnxruntime" in extras["optimize"]
    assert "edgewise[operator,optimize,node,openvino]" in extras["dev"]  # `make venv` installs every extra


def test_status_names_the_sources_signer_and_why_a_source_is_refused() -> None:
    from edgewise.cli.kubectl_plugin import render_status

    signed = {"type": "SourceTrusted", "status": "True", "reason": "Signed",
              "message": "the source model is signed by key 0123456789abcdef"}
    out = render_status(model(conditions=[signed, {"type": "Ready", "status": "True", "reason": "AllClassesReady"}]))
    assert "SourceTrusted=True Signed: the source model is signed by key 0123456789abcdef" in out
    assert "Ready=True" not in out  # other True conditions stay quiet
    refused = {"type": "SourceTrusted", "status": "False", "reason": "UnknownSigner", "message": "signed by key 99"}
    assert "SourceTrusted=False UnknownSigner: signed by key 99" in render_status(model(conditions=[refused]))


def test_status_shows_each_classs_artifact_and_who_attested_it() -> None:
    from edgewise.cli.kubectl_plugin import render_status

    obj = model(classes=[stable("arm", "2.0"), stable("jetson", "2.0"), stable("x86", "2.0")])
    obj["status"]["classes"] = [
        {"name": "arm", "precision": "int8", "artifactDigest": "ab" * 32, "attestation": "key 0123456789abcdef"},
        {"name": "jetson", "precision": "fp16", "artifactDigest": "cd" * 32, "attestation": "none"},
        {"name": "x86", "precision": "fp32", "artifactDigest": "ef" * 32}]  # the source itself: nothing to attest
    out = render_status(obj)
    assert "artifact sha256:abababababab (int8), attested by key 0123456789abcdef" in out
    assert "artifact sha256:cdcdcdcdcdcd (fp16), not attested" in out
    assert "efefefefefef" not in out
