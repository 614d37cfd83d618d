"""Write the values table of charts/edgewise/README.md from values.schema.json and values.yaml.

The schema holds each value's type and description, values.yaml its default; the README
table between the two markers is generated from them, so the three never disagree
(tests/chart/test_chart_docs.py fails when the README is stale).

    .venv/bin/python hack/chart_values_doc.py          # rewrite the table
    .venv/bin/python hack/chart_values_doc.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "edgewise"
BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"


def leaves(schema: dict[str, Any], values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted key, schema) of every value a user sets. The chart's own sections (declared properties,
    a default with keys) are walked; free-form Kubernetes objects and maps (resources, affinity,
    nodeSelector) are one value each."""
    for name, sub in schema.get("properties", {}).items():
        key, default = f"{prefix}{name}", values.get(name)
        if "properties" in sub and isinstance(default, dict) and default:
            yield from leaves(sub, default, key + ".")
        else:
            yield key, sub


def lookup(values: dict[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        node = node[part]
    return node


def type_of(sub: dict[str, Any]) -> str:
    if "enum" in sub:
        return " \\| ".join(f"`{v}`" if v else '`""`' for v in sub["enum"])
    if "oneOf" in sub.get("items", {}):
        return "list of " + " or ".join(o["type"] for o in sub["items"]["oneOf"])
    kind = sub.get("type", "any")
    if kind == "object" and isinstance(sub.get("additionalProperties"), dict):
        return f"map of {sub['additionalProperties']['type']}"
    if kind == "array" and "type" in sub.get("items", {}):
        return f"list of {sub['items']['type']}"
    return " or ".join(kind) if isinstance(kind, list) else kind


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(schema: dict[str, Any], values: dict[str, Any]) -> str:
    rows = ["| value | type | default | description |", "|---|---|---|---|"]
    for key, sub in leaves(schema, values):
        default = json.dumps(lookup(values, key), separators=(", ", ": "))
        rows.append(f"| `{key}` | {type_of(sub)} | `{cell(default)}` | {cell(sub.get('description', ''))} |")
    return "\n".join(rows)


def render(readme: str, schema: dict[str, Any], values: dict[str, Any]) -> str:
    """`readme` with the text between the markers replaced by the generated table."""
    head, found, rest = readme.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise ValueError(f"README lacks the markers {BEGIN} and {END}: put them where the table belongs")
    return f"{head}{BEGIN}\n{table(schema, values)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 when README.md is not what this writes")
    args = p.parse_args(argv)
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    want = render(readme, json.loads((CHART / "values.schema.json").read_text()),
                  yaml.safe_load((CHART / "values.yaml").read_text()))
    if args.check:
        if want != readme:
            print(f"{readme_path} is stale: run .venv/bin/python hack/chart_values_doc.py", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
