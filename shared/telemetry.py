"""OpenTelemetry set up once a process: tracing off, to the console, or over OTLP."""

import logging
from functools import cache

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from shared.settings import Settings


@cache
def _provider(exporter: str, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": f"tipline-{service}"}))
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


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.tipline_log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
