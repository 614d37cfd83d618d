"""OpenTelemetry spans when a process is configured to export them; nothing at all otherwise.

The operator, the optimization Job and the node agent call `configure()` once at start and wrap
work in `span(...)`. Configuration is OpenTelemetry's own: the standard `OTEL_*` variables
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, ...), exported over OTLP/HTTP (protobuf).

Tracing is opt-in so that default behaviour is unchanged: nothing is exported unless
`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_TRACES_EXPORTER` is
set. And it is optional: the node image does not install OpenTelemetry, so without the package
every `span` is a no-op and `configure` says why it did nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

log = logging.getLogger("edgewise.tracing")

try:
    from opentelemetry import trace as _trace
except ImportError:  # the node image: no OpenTelemetry, no spans
    _trace = None  # type: ignore[assignment]

TRACER_NAME = "edgewise"
AttributeValue = str | bool | int | float


class Span(Protocol):
    """What callers may do with a span: add attributes and record a failure."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...


class _NoSpan:
    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces at all."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def available() -> bool:
    """Whether the OpenTelemetry API is importable here."""
    return _trace is not None


def configure(service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Install a tracer provider exporting over OTLP/HTTP, if the environment asks; whether it did.

    `service_name` is the default: OTEL_SERVICE_NAME (read by the SDK's Resource) wins.
    """
    env = os.environ if env is None else env
    if not wanted(env):
        return False
    exporters = [e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if e.strip()]
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        log.warning("OTEL_* asks for traces, but the OpenTelemetry SDK is not installed here: no spans")
        return False
    made: list[SpanExporter] = []
    for name in exporters or ["otlp"]:
        if name == "console":
            made.append(ConsoleSpanExporter())
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("OTEL_* asks for OTLP traces, but opentelemetry-exporter-otlp-proto-http is not "
                            "installed here: no spans")
                continue
            made.append(OTLPSpanExporter())
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported (otlp, console, none): ignored", name)
    if not made:
        return False
    # Attributes passed to Resource.create override the environment's, so OTEL_SERVICE_NAME is read here.
    provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service_name}))
    for exporter in made:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _trace.set_tracer_provider(provider)
    log.info("exporting traces (%s) as service %s", ",".join(exporters or ["otlp"]),
             provider.resource.attributes.get("service.name"))
    return True


def flush(timeout_millis: int = 5000) -> None:
    """Send what is buffered now: for short-lived processes (the optimization Job) before they exit."""
    if _trace is None:
        return
    provider = _trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(timeout_millis)


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A span around the block, child of the current one; an exception marks it failed and propagates.

    Attribute values that OpenTelemetry cannot carry (None, objects) are dropped, so callers can
    pass what they have.
    """
    if _trace is None:
        yield _NoSpan()
        return
    with _trace.get_tracer(TRACER_NAME).start_as_current_span(name, attributes=clean(attributes or {})) as current:
        yield current


def clean(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Only the values a span attribute can hold."""
    return {k: v for k, v in attributes.items() if isinstance(v, str | bool | int | float)}
