"""Node buckets: how a percentage of a class becomes one label selector.

Every node gets a stable bucket 0–99 from a hash of its name, once, as a label.
A canary at p% then selects `bucket < t` and the stable workload `bucket >= t`:
one write per workload per step, whatever the fleet size.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable

BUCKET_LABEL = "edgewise.io/bucket"
BUCKETS = 100


# A reconcile asks for every node's bucket several times; names outlive reconciles, so remember them
# (bounded: a fleet that replaces its nodes does not grow the cache forever).
@functools.lru_cache(maxsize=1 << 16)
def bucket_of(node_name: str) -> int:
    """The node's bucket: stable across restarts and operator versions (a hash, not an index)."""
    return int.from_bytes(hashlib.sha256(node_name.encode()).digest()[:8], "big") % BUCKETS


def threshold(percent: int, buckets: Iterable[int]) -> int:
    """The smallest `t` such that the nodes with bucket < t are at least `percent`% of the class.

    At least one node: a small class at a low percent still gets a canary node,
    because "10% of 3 nodes" must mean one node, not none. 100% is every bucket.
    """
    if percent <= 0:
        return 0
    if percent >= 100:
        return BUCKETS
    ordered = sorted(buckets)
    if not ordered:
        return percent  # no nodes yet: the plain percentage of the bucket space
    wanted = max(1, math.ceil(len(ordered) * percent / 100))
    return ordered[wanted - 1] + 1
