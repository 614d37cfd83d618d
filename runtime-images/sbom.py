"""CycloneDX 1.5 JSON SBOMs from what was installed. Standard library only: it runs in build stages.

  python3 sbom.py python --name NAME --version V REPORT.json...   pip's `--report` files → stdout
  python3 sbom.py debian --distro debian-12 --arch ARCH < packages.json   Debian packages → stdout

pip's installation report (`pip install --report`) is the record of what pip installed, with
the archive's URL and hash; this script only maps it onto CycloneDX. Output is deterministic
(serial number derived from the content, no wall-clock timestamp) so image builds stay cacheable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from urllib.parse import quote


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _licenses(meta: dict) -> list[dict]:
    if meta.get("license_expression"):
        return [{"expression": meta["license_expression"]}]
    names = [c.split(" :: ")[-1] for c in meta.get("classifier", []) if c.startswith("License :: ")]
    if not names and meta.get("license") and len(meta["license"]) < 100:
        names = [meta["license"]]
    return [{"license": {"name": n}} for n in names]


def python_components(reports: list[dict]) -> list[dict]:
    components = {}
    for report in reports:
        for item in report.get("install", []):
            meta = item["metadata"]
            name, version = _norm(meta["name"]), meta["version"]
            purl = f"pkg:pypi/{quote(name)}@{quote(version)}"
            comp: dict = {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}
            licenses = _licenses(meta)
            if licenses:
                comp["licenses"] = licenses
            info = item.get("download_info", {})
            hashes = info.get("archive_info", {}).get("hashes", {})
            if "sha256" in hashes:
                comp["hashes"] = [{"alg": "SHA-256", "content": hashes["sha256"]}]
            if info.get("url", "").startswith("http"):
                comp["externalReferences"] = [{"type": "distribution", "url": info["url"]}]
            components[purl] = comp
    return [components[k] for k in sorted(components)]


def debian_components(packages: list[dict], distro: str) -> list[dict]:
    out = []
    for p in sorted(packages, key=lambda p: p["name"]):
        purl = (f"pkg:deb/debian/{quote(p['name'])}@{quote(p['version'])}"
                f"?arch={p['arch']}&distro={distro}")
        comp = {"type": "library", "bom-ref": purl, "name": p["name"], "version": p["version"], "purl": purl}
        if p.get("source") and p["source"] != p["name"]:
            comp["properties"] = [{"name": "debian:source", "value": p["source"]}]
        out.append(comp)
    return out


def bom(subject: dict, components: list[dict]) -> dict:
    body = json.dumps([subject, components], sort_keys=True)
    return {
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, body)}",
        "metadata": {"component": subject, "tools": [{"name": "edgewise runtime-images/sbom.py"}]},
        "components": components,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sbom.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    py = sub.add_parser("python")
    py.add_argument("--name", required=True)
    py.add_argument("--version", required=True)
    py.add_argument("reports", nargs="+")
    deb = sub.add_parser("debian")
    deb.add_argument("--distro", required=True)
    deb.add_argument("--arch", required=True)
    args = parser.parse_args(argv)
    if args.kind == "python":
        reports = []
        for path in args.reports:
            with open(path, encoding="utf-8") as f:
                reports.append(json.load(f))
        subject = {"type": "container", "name": args.name, "version": args.version}
        doc = bom(subject, python_components(reports))
    else:
        subject = {"type": "operating-system", "name": args.distro, "version": args.arch}
        doc = bom(subject, debian_components(json.load(sys.stdin), args.distro))
    json.dump(doc, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
