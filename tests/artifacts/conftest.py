"""A real OCI registry (Debian's `docker-registry`, the CNCF distribution server) on loopback.

Started once per session on a free 127.0.0.1 port with its storage in a temporary
directory, and stopped after. Install it with `apt-get install docker-registry` (`make apt`).
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_support import Registry

from edgewise.devcluster import processes

REGISTRY_BIN = "docker-registry"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    binary = shutil.which(REGISTRY_BIN) or "/usr/bin/docker-registry"
    if not Path(binary).exists():
        pytest.fail("docker-registry is not installed: apt-get install docker-registry (or `make apt`)")
    root = tmp_path_factory.mktemp("registry")
    storage = root / "storage"
    port = processes.free_port()
    config = root / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
""")
    proc = processes.start("registry", [binary, "serve", str(config)], root)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if not processes.alive(proc) or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start: {processes.log_tail(proc)}")
            time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}", storage)
    finally:
        processes.stop(proc)
