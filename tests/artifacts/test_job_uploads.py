"""Optimization Jobs hand their results to the built-in store over real HTTP, with the job's token."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise import contract
from edgewise.api.optimization_report import FileInfo, MadeOutcome, OptimizationReport, TargetInfo
from edgewise.artifacts.builtin import BuiltinStore
from edgewise.artifacts.builtin_http import BackgroundServer
from edgewise.optimize.job import upload

KEY, TOKEN = "0123456789abcdef01234567", "the-jobs-token"


class OneJob:
    """The operator's side of `Uploads`: one running job and its token."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir

    def expects(self, key: str) -> bool:
        return key == KEY

    def upload_dir(self, key: str, token: str) -> Path | None:
        return self.job_dir if key == KEY and token == TOKEN else None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    job_dir = tmp_path / "operator-side"
    job_dir.mkdir()
    with BackgroundServer(BuiltinStore(tmp_path / "store"), uploads=OneJob(job_dir)) as srv:
        yield srv.url + contract.JOB_UPLOAD_PATH.format(key=KEY, part="").rstrip("/"), job_dir


def _report(outcome: MadeOutcome, payload: bytes, message: str = "int8 dynamic: min cosine 0.999") \
        -> OptimizationReport:
    made = FileInfo(path="artifact.onnx", sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload))
    return OptimizationReport(outcome=outcome, message=message,
                              source=FileInfo(path="source.onnx", sha256="1" * 64, size_bytes=4 * len(payload)),
                              target=TargetInfo(runtime="onnxruntime", precision="int8"), precision="int8",
                              technique="int8 dynamic", artifact=made if outcome != "OptimizationRejected" else None)


def _pod_side(tmp_path: Path, payload: bytes) -> tuple[Path, OptimizationReport]:
    work = tmp_path / "pod"
    work.mkdir()
    (work / "artifact.onnx").write_bytes(payload)
    return work, _report("Optimized", payload)


def test_a_job_uploads_its_artifact_then_its_report(server: tuple[str, Path], tmp_path: Path) -> None:
    url, job_dir = server
    payload = b"int8 model " * 300_000  # ~3 MB, several chunks
    work, report = _pod_side(tmp_path, payload)
    upload(work, report, url, TOKEN)
    assert (job_dir / "artifact.onnx").read_bytes() == payload
    assert OptimizationReport.read(job_dir / "report.json") == report


def test_an_attested_job_uploads_its_attestation_beside_the_artifact(server: tuple[str, Path],
                                                                    tmp_path: Path) -> None:
    url, job_dir = server
    payload = b"int8 model " * 1000
    work, report = _pod_side(tmp_path, payload)
    (work / "artifact.onnx.intoto.json").write_bytes(b'{"payloadType": "application/vnd.in-toto+json"}')
    upload(work, report, url, TOKEN)
    assert (job_dir / "artifact.onnx.intoto.json").read_bytes() == b'{"payloadType": "application/vnd.in-toto+json"}'
    assert (job_dir / "artifact.onnx").read_bytes() == payload


def test_a_rejected_job_uploads_only_its_report(server: tuple[str, Path], tmp_path: Path) -> None:
    url, job_dir = server
    work, _ = _pod_side(tmp_path, b"not accepted")
    upload(work, _report("OptimizationRejected", b"not accepted", "min cosine 0.91 < 0.99"), url, TOKEN)
    assert not (job_dir / "artifact.onnx").exists()
    assert json.loads((job_dir / "report.json").read_text())["outcome"] == "OptimizationRejected"


def test_a_wrong_token_is_refused_and_lands_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    url, job_dir = server
    work, report = _pod_side(tmp_path, b"bytes")
    with pytest.raises(RuntimeError, match="403"):
        upload(work, report, url, "a-guess")
    assert list(job_dir.iterdir()) == []


def test_bytes_that_do_not_match_the_reported_digest_are_refused(server: tuple[str, Path], tmp_path: Path) -> None:
    url, job_dir = server
    work, report = _pod_side(tmp_path, b"the real bytes")
    assert report.artifact is not None
    report.artifact.sha256 = "0" * 64
    with pytest.raises(RuntimeError, match="400.*sha256"):
        upload(work, report, url, TOKEN)
    assert list(job_dir.iterdir()) == []  # neither the artifact nor the report


def test_a_report_that_is_not_json_is_refused(server: tuple[str, Path]) -> None:
    url, job_dir = server
    req = urllib.request.Request(url + "/report", data=b"[not json", method="PUT",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400 and not (job_dir / "report.json").exists()


def _put_report_in_writes(url: str, parts: list[bytes]) -> tuple[int, bytes]:
    """PUT a report whose body leaves the client in several TCP writes, a pause between them."""
    import socket
    import time
    import urllib.parse

    target = urllib.parse.urlsplit(url + "/report")
    body_len = sum(len(p) for p in parts)
    head = (f"PUT {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((target.hostname, target.port), timeout=30) as sock:
        sock.sendall(head + parts[0])
        for part in parts[1:]:
            time.sleep(0.3)  # the server has read what arrived; the rest comes later, as over a slow link
            sock.sendall(part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def test_a_report_sent_in_several_writes_is_read_to_its_end(server: tuple[str, Path]) -> None:
    url, job_dir = server
    body = json.dumps({"outcome": "OptimizationRejected", "message": "min cosine 0.91 < 0.99"}).encode()
    status, answer = _put_report_in_writes(url, [body[:10], body[10:30], body[30:]])
    assert status == 204, answer
    assert json.loads((job_dir / "report.json").read_text())["message"] == "min cosine 0.91 < 0.99"


def test_a_report_of_two_mebibytes_is_accepted(server: tuple[str, Path], tmp_path: Path) -> None:
    url, job_dir = server
    work, report = _pod_side(tmp_path, b"model")
    report.notes = ["x" * 1024] * 2048  # 2 MiB of notes: far more than one read of the socket
    upload(work, report, url, TOKEN)
    assert OptimizationReport.read(job_dir / "report.json") == report


def test_a_report_over_the_limit_is_refused(server: tuple[str, Path]) -> None:
    url, job_dir = server
    body = json.dumps({"notes": "x" * (16 << 20)}).encode()
    req = urllib.request.Request(url + "/report", data=body, method="PUT",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400 and not (job_dir / "report.json").exists()
