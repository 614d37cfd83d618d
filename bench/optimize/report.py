"""Render the optimization benchmark into its own section of docs/benchmarks.md.

Only the section under HEADING is replaced (up to the next `## ` heading); other sections of
the file belong to other benchmarks and are left as they are.
"""

from __future__ import annotations

from pathlib import Path

HEADING = "## Model optimization per hardware class"
TITLE = "# Benchmarks\n"


def _agreement(row: dict) -> str:
    a = row["agreement"]
    if "min_iou" in a:
        return f"IoU min {a['min_iou']:.3f} / mean {a['mean_iou']:.3f}; cos min {a['min_cosine']:.4f}"
    return f"cos min {a['min_cosine']:.4f} / mean {a['mean_cosine']:.4f}"


def _table(rows: list[dict]) -> list[str]:
    out = ["| technique | size | latency b1 | latency b8 | CPU time b1 | agreement with fp32 | peak memory |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['technique']} | {r['size_ratio']:.2f}× | {r['latency_b1']:.2f}× ({r['ms_b1']:.1f} ms) "
                   f"| {r['latency_b8']:.2f}× ({r['ms_b8']:.0f} ms) | {r['cpu_b1']:.2f}× | {_agreement(r)} "
                   f"| {r['peak_mib']:.0f} MiB (fp32 {r['baseline_peak_mib']:.0f}) |")
    return out


def _claims(rows: list[dict]) -> list[str]:
    out = ["| model (auto's choice) | claim: 4× smaller | claim: 2–3× faster (wall b1 / b8; CPU time b1) "
           "| claim: <1% accuracy loss |", "|---|---|---|---|"]
    for r in rows:
        if not r["technique"].startswith("auto"):
            continue
        a = r["agreement"]
        loss = (1 - a["min_iou"]) * 100 if "min_iou" in a else (1 - a["min_cosine"]) * 100
        metric = "1 − min IoU" if "min_iou" in a else "1 − min cosine"
        out.append(f"| {r['model']}: {r['technique'].removeprefix('auto → ')} | {1 / r['size_ratio']:.1f}× smaller "
                   f"| {1 / r['latency_b1']:.2f}× / {1 / r['latency_b8']:.2f}×; {1 / r['cpu_b1']:.2f}× "
                   f"| {loss:.2f}% ({metric}) |")
    return out


def render(result: dict) -> str:
    rows = result["rows"]
    lines = [HEADING, "",
             f"Command: `{result['command']}`  ",
             f"Machine: {result['machine']}  ",
             f"Date: {result['date']}", "",
             "Ratios are artifact ÷ original fp32, measured in the same run. Latency: wall clock with 2 "
             "intra-op threads, interleaved in rounds (best round's median). CPU time: process CPU seconds per "
             "batch-1 inference on 1 thread, which other jobs on a shared machine do not inflate. Peak memory "
             "is VmHWM of a fresh process that loads the artifact and runs one "
             "batch-1 inference. MiniLM agreement: cosine of the pooled sentence embedding per sentence; "
             "PP-OCR agreement: IoU of the text map thresholded at 0.2 (tinyocr's setting) per validation "
             "image, which were rendered with a different seed than the calibration images.", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += [f"### {model}", "", *_table([r for r in rows if r["model"] == model]), ""]
    lines += ["### Measured against the seeds' claims (int8: 4× smaller, 2–3× faster, <1% accuracy loss)", "",
              *_claims(rows), ""]
    notes: dict[str, list[str]] = {}
    for r in rows:
        for note in r["notes"]:
            notes.setdefault(r["model"], [])
            if note not in notes[r["model"]]:
                notes[r["model"]].append(note)
    if notes:
        lines += ["Optimizer notes:", ""]
        lines += [f"- {model}: " + "; ".join(items) for model, items in notes.items()]
    return "\n".join(lines).rstrip() + "\n"


def write_section(path: Path, result: dict, extra: str = "") -> None:
    text = path.read_text() if path.exists() else TITLE
    section = render(result) + (("\n" + extra.rstrip() + "\n") if extra else "")
    if HEADING in text:
        start = text.index(HEADING)
        nxt = text.find("\n## ", start + len(HEADING))
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:start] + section + ("\n" if nxt >= 0 else "") + text[end:]
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
