"""Telemetry set up once a process: traces (off, console or OTLP) and structured logs.

Logs are one JSON object a line with the service, the report id and the trace id, so a report's
path can be followed across services without logging what it says. Nothing here logs report
content: a validation error is summarised by its locations and messages, never its input.
"""

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import cache
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from pydantic import ValidationError

from shared.settings import Settings

# The report a log line is about: set around each message by the delivery middleware and each
# request by intake.
report_id_var: ContextVar[str | None] = ContextVar("tipline_report_id", default=None)


@cache
def _provider(exporter: str, service: str) -> TracerProvider:
    # With no exporter, spans are not recorded (they would only be thrown away), but they still
    # carry trace ids: log lines and the traceparent header keep joining a report's hops.
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"tipline-{service}"}),
        sampler=ALWAYS_OFF if exporter == "none" else ALWAYS_ON,
    )
    span_exporter: SpanExporter | None = None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    return provider


def tracer_provider(settings: Settings, service: str) -> TracerProvider:
    return _provider(settings.tipline_trace_exporter, service)


def instrument_http(app: Any, settings: Settings, service: str) -> None:
    """A server span for each HTTP request (joining the caller's trace if it sent one)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider(settings, service),
        excluded_urls="healthz,readyz,metrics",
        exclude_spans=["receive", "send"],  # one span a request, not one per ASGI message
    )


# Context that FastStream and our own code put on log records; safe to keep (names, not content).
_EXTRAS = ("topic", "group_id", "message_id", "agency_id", "notice_id", "report_ids")


def describe_error(exc: BaseException) -> str:
    """An exception in words that never repeat the input (pydantic's would)."""
    if isinstance(exc, ValidationError):
        where = "; ".join(
            f"{'/'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)[:10]
        )
        return f"ValidationError: {exc.error_count()} error(s) for {exc.title}: {where}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if report_id := report_id_var.get() or getattr(record, "report_id", None):
            entry["report_id"] = report_id
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for name in _EXTRAS:
            if (value := getattr(record, name, None)) not in (None, ""):
                entry[name] = value
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = describe_error(record.exc_info[1])
        return json.dumps(entry, default=str)


def configure_logging(settings: Settings, service: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.tipline_log_format == "json":
        handler.setFormatter(JsonFormatter(service or settings.service_name))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=settings.tipline_log_level.upper(), handlers=[handler], force=True)
    # FastStream's app logger keeps a handler of its own that would bypass the format above.
    logging.getLogger("faststream").handlers = [handler]
    # aiokafka logs whole records at DEBUG: report content. Never below INFO, whatever the level.
    kafka_log = logging.getLogger("aiokafka")
    kafka_log.setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
