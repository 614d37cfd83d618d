"""The Debian base images the Dockerfiles build on, assembled from Debian packages on this machine.

The Dockerfiles name `python:3.11-slim-bookworm`, which a machine without registry access cannot
pull. `make images` passes them a base made here instead (`ARG PYTHON_BASE`, `ARG BUILD_BASE`):

- `runtime`: Debian bookworm's python3.11 and the C/C++ runtime libraries wheels link against,
  for each target architecture. Final image stages copy files onto it and run nothing.
- `build`: runtime + pip, a shell and coreutils, for the build platform only; `RUN` steps use it.

`mmdebstrap --variant=extract` downloads and unpacks the packages with the machine's own apt
sources and runs no maintainer script, so an arm64 base is assembled on an amd64 machine without
running a single arm64 instruction. What maintainer scripts would have done and the image needs
(the python3 symlinks, /etc/passwd, the CA bundle, the dpkg status) is written here, by hand.

runtime-images/base.lock pins every package version and the resulting image digest; a build
with the same lock must give the same digest (the layer is written deterministically).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgewise.devcluster.oci import write_oci_archive

SUITE = "bookworm"
FLAVORS = {
    # python3.11 and its stdlib; libstdc++ for onnxruntime/grpcio/protobuf wheels; netbase for
    # /etc/services; base-files for /etc/os-release (scanners identify the distribution by it).
    "runtime": ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "netbase", "base-files"),
    # RUN steps of a build stage need a shell, coreutils and pip.
    "build": ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "netbase", "base-files",
              "python3-pip", "dash", "coreutils"),
}
ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}
NONROOT_UID = 65532
SBOM_PATH = "opt/edgewise/sbom/base-debian.cdx.json"

# Not part of the image: documentation, apt's state (it names the machine's mirrors), device
# nodes (the runtime provides /dev), logs, and dpkg's working files (status is rewritten below).
_DROP_PREFIXES = ("dev/", "usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/share/locale/",
                  "usr/share/lintian/", "var/cache/", "var/lib/apt/", "etc/apt/", "var/log/",
                  "var/lib/dpkg/", "etc/dpkg/dpkg.cfg.d/")
_DROP_FILES = ("etc/hostname", "etc/resolv.conf", "etc/machine-id", "etc/mtab")


@dataclass(frozen=True)
class BuiltBase:
    digest: str
    packages: list[str]  # name=version, sorted
    ca_certificates: str  # version of the package the CA bundle came from


def apt_sources() -> list[str]:
    """This machine's apt sources files (one-line and deb822), as mmdebstrap takes them."""
    etc = Path("/etc/apt")
    found = [etc / "sources.list"] if (etc / "sources.list").is_file() and (etc / "sources.list").stat().st_size else []
    found += sorted(p for p in (etc / "sources.list.d").glob("*") if p.suffix in (".list", ".sources"))
    if not found:
        raise RuntimeError("no apt sources in /etc/apt: the Debian base is built from the machine's apt sources")
    return [str(p) for p in found]


def _apt_options() -> list[str]:
    # The machine's own apt settings (e.g. a mirror that serves an expired Release file) apply.
    conf = Path("/etc/apt/apt.conf.d")
    return [f"--aptopt={p}" for p in sorted(conf.glob("*")) if p.is_file() and "artifact" in p.name]


def build_base(flavor: str, arch: str, out: Path, *, epoch: int, pins: list[str] | None = None,
               ca_version: str | None = None) -> BuiltBase:
    """Build base `flavor` for `arch` into the OCI archive `out`. `pins` (name=version) fix versions."""
    if flavor not in FLAVORS or arch not in ARCHES:
        raise ValueError(f"unknown base {flavor}-{arch}: flavors {sorted(FLAVORS)}, arches {sorted(ARCHES)}")
    with tempfile.TemporaryDirectory(prefix="edgewise-base-") as tmp:
        work = Path(tmp)
        (work / "debs").mkdir()
        (work / "extra").mkdir(mode=0o777)
        (work / "extra").chmod(0o777)  # apt downloads as the unprivileged _apt user
        include = pins or list(FLAVORS[flavor])
        ca = f"ca-certificates={ca_version}" if ca_version else "ca-certificates"
        hook_copy = f'cp "$1"/var/cache/apt/archives/*.deb {work}/debs/'
        hook_ca = f'cd {work}/extra && APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get download -q {ca}'
        rootfs = work / "rootfs.tar"
        cmd = ["mmdebstrap", "--quiet", "--variant=extract", f"--architectures={arch}",
               f"--include={','.join(include)}", *_apt_options(),
               f"--extract-hook={hook_copy}", f"--extract-hook={hook_ca}",
               SUITE, str(rootfs), *apt_sources()]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SOURCE_DATE_EPOCH": str(epoch)})
        if proc.returncode != 0:
            hint = (" The lock pins versions the mirror may no longer carry: refresh it with "
                    "`python -m edgewise.devcluster.images lock-base`." if pins else "")
            raise RuntimeError(f"mmdebstrap failed for the {flavor}-{arch} base:\n{proc.stderr[-3000:]}{hint}")
        controls = [_control(deb) for deb in sorted((work / "debs").glob("*.deb"))]
        ca_debs = sorted((work / "extra").glob("ca-certificates_*.deb"))
        if not ca_debs:
            raise RuntimeError(f"apt-get download {ca} gave no package")
        ca_control = _control(ca_debs[0])
        bundle = _ca_bundle(ca_debs[0], work)
        sbom = _debian_sbom(controls + [ca_control], arch)
        layer = work / "layer.tar"
        _rewrite_rootfs(rootfs, layer, epoch=epoch, flavor=flavor, controls=controls, ca_bundle=bundle,
                        sbom=sbom)
        config = {
            "architecture": arch, "os": "linux", "created": _iso(epoch),
            # What a platform of linux/arm64 normalizes to; without it the image does not match it.
            **({"variant": "v8"} if arch == "arm64" else {}),
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"], "Cmd": ["python3"],
                       "Labels": {"org.opencontainers.image.title": f"edgewise-base-{flavor}",
                                  "org.opencontainers.image.description":
                                      f"Debian {SUITE} python3.11 ({flavor}), assembled from Debian packages"}},
            "history": [{"created": _iso(epoch), "created_by": f"edgewise image_base {flavor} {arch}"}],
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        digest = write_oci_archive(out, layer, config, ref_name=f"edgewise-base-{flavor}:{arch}")
    packages = sorted(f"{c['Package']}={c['Version']}" for c in controls)
    return BuiltBase(digest=digest, packages=packages, ca_certificates=ca_control["Version"])


def _iso(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _control(deb: Path) -> dict[str, str]:
    """A .deb's control fields (dpkg-deb reads any architecture's package)."""
    text = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _ca_bundle(deb: Path, work: Path) -> bytes:
    """What update-ca-certificates (the package's postinst) writes: Mozilla's roots, concatenated."""
    dest = work / "ca"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    certs = sorted((dest / "usr/share/ca-certificates/mozilla").glob("*.crt"))
    if not certs:
        raise RuntimeError(f"{deb.name} holds no certificates")
    return b"".join(c.read_bytes().rstrip(b"\n") + b"\n" for c in certs)


def _debian_sbom(controls: list[dict[str, str]], arch: str) -> bytes:
    script = Path(__file__).resolve().parents[3] / "runtime-images" / "sbom.py"
    packages = [{"name": c["Package"], "version": c["Version"], "arch": c["Architecture"],
                 "source": c.get("Source", "").split(" ")[0] or c["Package"]} for c in controls]
    proc = subprocess.run([sys.executable, str(script), "debian", "--distro", "debian-12", "--arch", arch],
                          input=json.dumps(packages), capture_output=True, text=True, check=True)
    return proc.stdout.encode()


def _dpkg_status(controls: list[dict[str, str]]) -> bytes:
    """/var/lib/dpkg/status as dpkg would have written it, so scanners find the packages."""
    stanzas = []
    for c in sorted(controls, key=lambda c: c["Package"]):
        lines = [f"Package: {c['Package']}", "Status: install ok installed"]
        lines += [f"{k}: {v}" for k, v in c.items() if k not in ("Package", "Description")]
        if "Description" in c:
            lines.append(f"Description: {c['Description']}")
        stanzas.append("\n".join(lines))
    return ("\n\n".join(stanzas) + "\n").encode()


def _rewrite_rootfs(src: Path, dest: Path, *, epoch: int, flavor: str, controls: list[dict[str, str]],
                    ca_bundle: bytes, sbom: bytes) -> None:
    """Filter mmdebstrap's tar into a layer and add what maintainer scripts would have made.

    Deterministic: mtimes clamped to `epoch`, owners numeric, entries in the source's order.
    """
    seen: set[str] = set()
    with tarfile.open(src) as tin, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tout:
        for m in tin:
            name = m.name.removeprefix("./").rstrip("/")
            if not name or (name + "/").startswith(_DROP_PREFIXES) or name in _DROP_FILES:
                if not (name.startswith("usr/share/doc/") and name.endswith("/copyright")):
                    continue
            m.name = name
            m.mtime = min(int(m.mtime), epoch)
            m.uname = m.gname = ""
            m.pax_headers = {}
            seen.add(name)
            tout.addfile(m, tin.extractfile(m) if m.isfile() else None)

        def add_dir(name: str, mode: int = 0o755) -> None:
            if name not in seen:
                info = _info(name, epoch, tarfile.DIRTYPE, mode)
                tout.addfile(info)
                seen.add(name)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            parts = name.split("/")
            for i in range(1, len(parts)):
                add_dir("/".join(parts[:i]))
            info = _info(name, epoch, tarfile.REGTYPE, mode)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
            seen.add(name)

        def add_link(name: str, target: str) -> None:
            if name in seen:
                return
            parts = name.split("/")
            for i in range(1, len(parts)):
                add_dir("/".join(parts[:i]))
            info = _info(name, epoch, tarfile.SYMTYPE, 0o777)
            info.linkname = target
            tout.addfile(info)
            seen.add(name)

        add_dir("tmp", 0o1777)
        add_file("etc/passwd", (f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/tmp:/usr/sbin/nologin\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n").encode())
        add_file("etc/group", f"root:x:0:\nnonroot:x:{NONROOT_UID}:\nnogroup:x:65534:\n".encode())
        # python3-minimal's symlink, and python:*-slim's path, which the images' `edgewise` wrapper uses.
        add_link("usr/bin/python3", "python3.11")
        add_link("usr/local/bin/python3", "/usr/bin/python3.11")
        add_file("etc/ssl/certs/ca-certificates.crt", ca_bundle)
        # OpenSSL's default paths (the openssl package, not installed, makes these).
        add_link("usr/lib/ssl/certs", "/etc/ssl/certs")
        add_link("usr/lib/ssl/cert.pem", "/etc/ssl/certs/ca-certificates.crt")
        if flavor == "build":
            add_link("bin/sh", "dash")
        add_file("var/lib/dpkg/status", _dpkg_status(controls))
        if flavor == "runtime":
            # Only in what ships: a build stage's /opt/edgewise is copied into the final image, and
            # would bring the build base's SBOM over the target base's.
            add_file(SBOM_PATH, sbom)


def _info(name: str, epoch: int, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, epoch
    return info
