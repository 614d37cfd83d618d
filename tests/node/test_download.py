"""Downloads by URI against a real HTTP server on loopback: cuts, resumption, retries, schemes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from cache_support import SourceServer, free_port, sha256

from edgewise.shared import download as dl
from edgewise.shared.destinations import Destinations
from edgewise.shared.digest import DigestMismatch, Writer

DATA = bytes(range(256)) * 4096  # 1 MiB, so a cut lands mid-body


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path / "artifact.part")
    yield w
    w.abort()


def test_downloads_and_hashes_on_the_fly(source: SourceServer, sink: Writer) -> None:
    dl.download(source.add("/m.onnx", DATA), sink)
    assert sink.size == len(DATA) and sink.hexdigest() == sha256(DATA)


def test_a_cut_body_is_resumed_with_range(source: SourceServer, sink: Writer) -> None:
    source.cut["/m.onnx"] = 1
    sleeps: list[float] = []
    dl.download(source.add("/m.onnx", DATA), sink, sleep=sleeps.append)
    assert sink.hexdigest() == sha256(DATA)
    assert len(sleeps) == 1
    (_, first_range), (_, second_range) = source.requests
    assert first_range is None and second_range == f"bytes={len(DATA) // 2}-"


def test_a_source_without_range_support_starts_over(source: SourceServer, sink: Writer) -> None:
    source.cut["/m.onnx"] = 1
    source.ignore_range.add("/m.onnx")
    dl.download(source.add("/m.onnx", DATA), sink, sleep=lambda _s: None)
    assert sink.size == len(DATA) and sink.hexdigest() == sha256(DATA)


def test_cut_every_time_fails_after_the_attempts_with_backoff(source: SourceServer, sink: Writer) -> None:
    source.cut["/m.onnx"] = 10
    source.ignore_range.add("/m.onnx")
    sleeps: list[float] = []
    with pytest.raises(dl.TransientError, match="cut after"):
        dl.download(source.add("/m.onnx", DATA), sink, attempts=3, base_delay=1.0, sleep=sleeps.append)
    assert source.count("/m.onnx") == 3
    assert len(sleeps) == 2 and 0.8 <= sleeps[0] <= 1.2 and 1.6 <= sleeps[1] <= 2.4


def test_not_found_is_permanent_and_not_retried(source: SourceServer, sink: Writer) -> None:
    with pytest.raises(dl.PermanentError, match="404"):
        dl.download(source.url("/missing"), sink, sleep=lambda _s: pytest.fail("retried a 404"))
    assert source.count("/missing") == 1


def test_an_unreachable_source_is_transient(sink: Writer) -> None:
    sleeps: list[float] = []
    with pytest.raises(dl.TransientError):
        dl.download(f"http://127.0.0.1:{free_port()}/m.onnx", sink, attempts=2, sleep=sleeps.append)
    assert len(sleeps) == 1


def test_file_uris(tmp_path: Path, sink: Writer) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(DATA)
    dl.download(path.as_uri(), sink)
    assert sink.hexdigest() == sha256(DATA)
    with pytest.raises(dl.PermanentError, match="no such file"):
        dl.download((tmp_path / "nope.onnx").as_uri(), sink)


def test_oci_goes_through_the_oci_puller_and_an_unreachable_registry_is_transient(sink: Writer) -> None:
    uri = f"oci://127.0.0.1:{free_port()}/models/defect@sha256:" + "0" * 64
    with pytest.raises(dl.TransientError, match="registry unreachable"):
        dl.download(uri, sink, attempts=1)
    assert sink.size == 0


def test_other_schemes_plug_in(sink: Writer) -> None:
    with pytest.raises(dl.PermanentError, match="unsupported scheme"):
        dl.download("gopher://x/y", sink)
    dl.register_opener("mem", lambda uri, offset, timeout: dl.Opened(io.BytesIO(DATA[offset:]), offset, None))
    try:
        dl.download("mem://anything", sink)
    finally:
        dl._OPENERS.pop("mem")
    assert sink.hexdigest() == sha256(DATA)


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    delays = dl.backoff_delays(8, base=0.5, cap=10.0, jitter=0.0)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert dl.backoff_delays(1) == []


def test_download_file_publishes_only_matching_bytes(source: SourceServer, tmp_path: Path) -> None:
    source.add("/f", DATA)
    good = tmp_path / "good.bin"
    dl.download_file(source.url("/f"), good, sha256(DATA))
    assert good.read_bytes() == DATA
    bad = tmp_path / "bad.bin"
    with pytest.raises(DigestMismatch, match="expected sha256 " + "0" * 64):
        dl.download_file(source.url("/f"), bad, "0" * 64)
    assert list(tmp_path.glob("bad.bin*")) == []  # neither the file nor a .part is left


def test_a_proxy_does_not_carry_a_guarded_download_past_the_destination_rules(source, sink, monkeypatch) -> None:
    monkeypatch.setenv("http_proxy", source.url(""))  # the proxy itself is on an allowed host
    opener = dl.http_opener(Destinations.of(["127.0.0.1"]))
    with pytest.raises(dl.RefusedError, match="cloud metadata"):
        dl.download("http://169.254.169.254/latest/meta-data/", sink, openers={"http": opener})
    assert source.requests == []  # the proxy was never asked
