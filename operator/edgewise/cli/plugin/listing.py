"""`kubectl edgewise list`: every EdgeModel with its per-class rollout state, one line each."""

from __future__ import annotations

from typing import Any

from edgewise.cli.plugin.verdict import class_summaries


def render_list(items: list[dict[str, Any]], all_namespaces: bool) -> str:
    rows = []
    for obj in sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])):
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        row = [meta.get("namespace", "")] if all_namespaces else []
        row += [meta["name"], str(spec.get("version", "-")), status.get("phase") or "-",
                str(((status.get("rollout") or {}).get("revision")) or 0), status.get("ready") or "-",
                ", ".join(class_summaries(obj)) or "-"]
        rows.append(row)
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "VERSION", "PHASE", "REVISION", "READY", "CLASSES"]
    if not rows:
        return "No EdgeModels found."
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("   ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]])
                     for r in [header, *rows])
