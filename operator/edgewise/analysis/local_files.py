"""file:// URIs name files on the node agent's host: the operator does not read them.

A `file://` source, calibration set or golden-inputs file is read by the node agent on
its own host. Read by the operator, it would be a file of the operator's pod, and what
comes back (a digest, "no such file", a parse error) would tell a namespace user about
the operator's files. So the operator reads a `file://` URI only under a directory its
settings name (`local_source_dirs`: a single-machine dev cluster, where the nodes' host
is the operator's), never in an optimization Job, and refuses it with one fixed message
that says nothing about the path.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import Iterable


class LocalFileRefused(ValueError):
    """A file:// URI the operator may not read; the message is the same for every path."""


REFUSED = ("file:// URIs name files on the node agent's host, which the operator does not read "
           "(use an http(s):// or oci:// URI for what the operator must read)")


def node_local(uri: str) -> bool:
    return urllib.parse.urlsplit(uri).scheme.lower() == "file"


def lexically_under(path: str, dirs: Iterable[str]) -> bool:
    """Whether absolute `path`, `..` resolved without touching the disk, lies under one of `dirs`."""
    if not os.path.isabs(path):
        return False
    norm = os.path.normpath(path)
    for d in dirs:
        if not d or not os.path.isabs(d):
            continue
        root = os.path.normpath(d)
        if norm == root or norm.startswith(root.rstrip("/") + "/"):
            return True
    return False


def operator_may_read(uri: str, dirs: Iterable[str]) -> bool:
    """Whether the operator may read `uri` itself: anything but file://, or file:// under `dirs`.

    Symbolic links are resolved for paths that are lexically inside, so a link cannot lead out.
    """
    if not node_local(uri):
        return True
    dirs = [d for d in dirs if d]
    parts = urllib.parse.urlsplit(uri)
    if not dirs or parts.netloc not in ("", "localhost"):
        return False
    path = urllib.request.url2pathname(parts.path)
    if not lexically_under(path, dirs):
        return False
    return lexically_under(os.path.realpath(path), [os.path.realpath(d) for d in dirs])


def check(uri: str, dirs: Iterable[str]) -> None:
    """Raise LocalFileRefused unless the operator may read `uri`."""
    if not operator_may_read(uri, dirs):
        raise LocalFileRefused(REFUSED)
