"""Argo CD's own binary (hack/argocd) judging objects with the customizations of an argocd-cm file.

`argocd admin settings resource-overrides health|list-actions|run-action` evaluate the Lua scripts
of a local argocd-cm with the same code (and the same sandbox) the application controller and the
API server use; nothing here re-implements them.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from binaries_support import built_binary

REPO = Path(__file__).resolve().parents[2]
ARGOCD_DIR = REPO / "charts" / "argocd"
CUSTOMIZATIONS = ARGOCD_DIR / "resource_customizations"
SNIPPET = ARGOCD_DIR / "argocd-cm.yaml"


@dataclass(frozen=True)
class Health:
    status: str
    message: str


@cache
def argocd_binary() -> Path:
    """The argocd binary: $EDGEWISE_BIN/argocd when present, else built (or reused) by hack/build-argocd.sh."""
    return built_binary("argocd")


def _admin(*args: str, env: dict[str, str] | None = None) -> str:
    # HOME in a scratch directory: the CLI reads (and may write) ~/.config/argocd; a test leaves no trace.
    with tempfile.TemporaryDirectory(prefix="argocd-home-") as home:
        proc = subprocess.run([str(argocd_binary()), "admin", "settings", "resource-overrides", *args],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HOME": home, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"argocd {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def health(obj: Path, cm: Path = SNIPPET) -> Health:
    """Argo CD's health of the object in `obj`."""
    out = _admin("health", str(obj), "--argocd-cm-path", str(cm))
    fields = dict(line.split(": ", 1) for line in out.splitlines() if line.startswith(("STATUS: ", "MESSAGE: ")))
    if "STATUS" not in fields:
        raise RuntimeError(f"no health from argocd: {out}")
    return Health(fields["STATUS"], fields.get("MESSAGE", ""))


def list_actions(obj: Path, cm: Path = SNIPPET) -> dict[str, bool]:
    """Action name → disabled, as Argo CD's discovery says for the object in `obj`."""
    lines = _admin("list-actions", str(obj), "--argocd-cm-path", str(cm)).splitlines()
    if not lines or lines[0].split() != ["NAME", "DISABLED"]:
        raise RuntimeError(f"unexpected list-actions output: {lines}")
    return {name: disabled == "true" for name, disabled in (line.split() for line in lines[1:] if line.strip())}


def run_action(obj: Path, action: str, cm: Path = SNIPPET) -> dict[str, Any]:
    """The object as Argo CD's `action` leaves it.

    run-action prints a diff between the object before and after through $KUBECTL_EXTERNAL_DIFF
    (live file, then target file); a "diff" that prints the target file gives the whole result."""
    with tempfile.TemporaryDirectory(prefix="argocd-action-") as tmp:
        show = Path(tmp) / "show-target"
        show.write_text("#!/bin/sh\nprintf '%s\\n' '---' && cat \"$2\"\n")
        show.chmod(0o755)
        out = _admin("run-action", str(obj), action, "--argocd-cm-path", str(cm),
                     env={"KUBECTL_EXTERNAL_DIFF": str(show)})
    if "Following fields have been changed" not in out:
        raise RuntimeError(f"action {action} changed nothing: {out}")
    return dict(yaml.safe_load(out.split("\n---\n", 1)[1]))


def write_cm(path: Path, data: dict[str, str]) -> Path:
    """An argocd-cm file with `data` (a variant of the snippet for a test)."""
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "argocd-cm", "labels": {
                                        "app.kubernetes.io/part-of": "argocd"}},
                                    "data": data}))
    return path
