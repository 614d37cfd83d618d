"""What a profile's class may ask the operator to run (pure).

Whoever may write a DeploymentProfile in a namespace chooses what runs on every node of its
classes, rendered by the operator under its own ServiceAccount. So the operator's settings
bound three things, and a class that asks for more is refused with a condition (its existing
workloads keep serving, nothing new is rendered):

- the image: the operator's own images, or a repository the settings allow (`allowed_images`);
- tolerations: one without a key (operator Exists) tolerates every taint, control-plane taints
  included, and is refused unless the settings opt in (`allow_keyless_tolerations`);
- resources: what the runtime container requests must fit every node of the class (a
  DaemonSet puts a pod on each), by the allocatable the nodes report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgewise.api.profile import HardwareClass
from edgewise.api.settings import OperatorSettings
from edgewise.core.observed import NodeInfo
from edgewise.core.quantities import BadQuantity, parse_quantity
from edgewise.core.tolerations import tolerates_every_taint

IMAGE_NOT_ALLOWED = "ImageNotAllowed"
TOLERATION_NOT_ALLOWED = "TolerationNotAllowed"
RESOURCES_DO_NOT_FIT = "ResourcesDoNotFit"
SHOWN_NODES = 3  # nodes named in a message; the rest are counted


@dataclass(frozen=True)
class Refusal:
    reason: str  # condition reason
    message: str


def repository(image: str) -> str:
    """`registry/path/name` of an image reference, without its tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def own_images(settings: OperatorSettings) -> tuple[str, ...]:
    """The images the operator renders by itself (the chart's), as it renders them."""
    return tuple(settings.image(i) for i in (settings.agent_image, settings.onnxruntime_image, settings.openvino_image,
                                             settings.triton_image, settings.tensorrt_fetch_image,
                                             settings.operator_image))


def image_allowed(image: str, settings: OperatorSettings) -> bool:
    """The operator's own repositories, or an entry of `allowed_images`: a repository, a whole
    reference, or `prefix/*` for every repository under a prefix."""
    repo = repository(image)
    if repo in {repository(i) for i in own_images(settings)}:
        return True
    for entry in settings.allowed_images:
        entry = entry.strip()
        if entry.endswith("/*") and repo.startswith(entry[:-1]):
            return True
        if entry in (image, repo):
            return True
    return False


def effective_requests(requests: Mapping[str, object] | None, limits: Mapping[str, object] | None
                       ) -> dict[str, object]:
    """What the scheduler reserves: requests, and limits where a request is missing (Kubernetes'
    defaulting: a limit without a request requests the limit)."""
    return {**(limits or {}), **(requests or {})}


def _fit(hc: HardwareClass, nodes: Sequence[NodeInfo]) -> Refusal | None:
    res = hc.resources
    wanted = effective_requests(res.requests if res else None, res.limits if res else None)
    known = [n for n in nodes if n.allocatable]  # a node that reports nothing cannot be judged
    problems = []
    for resource, raw in sorted(wanted.items()):
        try:
            amount = parse_quantity(raw)  # type: ignore[arg-type]
        except BadQuantity as err:
            return Refusal(RESOURCES_DO_NOT_FIT, f"class {hc.name}: resources: {err}")
        short: list[str] = []
        for n in known:
            try:
                have = parse_quantity(n.allocatable.get(resource, "0"))
            except BadQuantity:
                continue
            if amount > have:
                short.append(f"{n.name} ({n.allocatable.get(resource, 'none')})")
        if short:
            more = f" and {len(short) - SHOWN_NODES} more" if len(short) > SHOWN_NODES else ""
            problems.append(f"{resource} {raw} is more than node(s) {', '.join(short[:SHOWN_NODES])}{more} "
                            "can allocate")
    if not problems:
        return None
    return Refusal(RESOURCES_DO_NOT_FIT,
                   f"class {hc.name}: the runtime container's requests must fit every node of the class (a "
                   f"DaemonSet runs a pod on each): {'; '.join(problems)}; lower resources.requests/limits or "
                   "move those nodes to another class")


def refusal(hc: HardwareClass, image: str, nodes: Sequence[NodeInfo], settings: OperatorSettings
            ) -> Refusal | None:
    """Why the operator will not render class `hc` (its serving `image`, its `nodes`), or None."""
    if hc.image and not image_allowed(image, settings):
        return Refusal(IMAGE_NOT_ALLOWED,
                       f"class {hc.name}: image {image} is not one the operator's settings allow (its own images "
                       "and EDGEWISE_ALLOWED_IMAGES, chart value security.allowedImages); ask the cluster's "
                       "admin to allow the repository, or remove `image` to use the operator's")
    keyless = [t for t in hc.tolerations or [] if tolerates_every_taint(t)]
    if keyless and not settings.allow_keyless_tolerations:
        return Refusal(TOLERATION_NOT_ALLOWED,
                       f"class {hc.name}: a toleration without a key (operator Exists) tolerates every taint, "
                       "control-plane taints included, which the operator's settings do not allow "
                       "(EDGEWISE_ALLOW_KEYLESS_TOLERATIONS, chart value security.allowKeylessTolerations); "
                       "name the taint keys the class's nodes carry")
    return _fit(hc, nodes)
