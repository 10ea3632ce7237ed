# tipline's images: one target a service, every one built from the repository root, e.g.
#   docker build --target intake -t tipline/intake .
# (`make images` builds all six, and the topics job's.) Each image holds the shared package and
# its one service; no other service's code: the common stages take pyproject.toml, shared/ and
# services/__init__.py only, the `notifying` stage adds the notification context (services/notification/) for the
# two that write it (referral, retraction), and a service's target adds its own folder only.

# The dependencies and the shared package, in a virtual environment.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
COPY shared/ shared/
COPY services/__init__.py services/
RUN python -m venv /opt/tipline \
 && /opt/tipline/bin/pip install . \
 && rm -f /opt/tipline/bin/tipline

# What every service's image has: the environment, the routing file, a non-root user, the ops
# port (/healthz, /readyz, /metrics) and its health check.
FROM python:3.11-slim AS runtime
RUN useradd --system --uid 10001 --user-group --no-create-home tipline \
 && mkdir -p /var/lib/tipline/keys /var/lib/tipline/files /var/lib/tipline/console \
 && chown -R tipline:tipline /var/lib/tipline
COPY --from=build /opt/tipline /opt/tipline
COPY deploy/config/routing.yaml /etc/tipline/routing.yaml
ENV PATH=/opt/tipline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TIPLINE_ROUTING_FILE=/etc/tipline/routing.yaml \
    TIPLINE_KEYS_DIR=/var/lib/tipline/keys \
    TIPLINE_OPS_HOST=0.0.0.0 \
    TIPLINE_OPS_PORT=9464
USER 10001:10001
WORKDIR /var/lib/tipline
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]

# One target a service: its code (beside the shared package in the environment's site-packages,
# root's and read-only), its own settings and ports, its command.

# The notification context (ledger, notices, outbox): for intake, supplementation, referral and
# retraction.
FROM runtime AS notifying
COPY services/notification/ /opt/tipline/lib/python3.11/site-packages/services/notification/

# The ESP-facing HTTP API (reports, files, retractions) on 8080.
FROM runtime AS intake
COPY services/intake/ /opt/tipline/lib/python3.11/site-packages/services/intake/
ENV OTEL_SERVICE_NAME=intake \
    TIPLINE_HTTP_HOST=0.0.0.0 \
    TIPLINE_HTTP_PORT=8080 \
    TIPLINE_FILES_DIR=/var/lib/tipline/files
EXPOSE 8080
CMD ["python", "-m", "services.intake"]

# Checks each submitted report against the rules.
FROM runtime AS validation
COPY services/validation/ /opt/tipline/lib/python3.11/site-packages/services/validation/
ENV OTEL_SERVICE_NAME=validation
CMD ["python", "-m", "services.validation"]

# Jurisdiction and priority of each validated report; the analyst API on 8081.
FROM runtime AS supplementation
COPY services/supplementation/ /opt/tipline/lib/python3.11/site-packages/services/supplementation/
ENV OTEL_SERVICE_NAME=supplementation \
    TIPLINE_ANALYST_HOST=0.0.0.0 \
    TIPLINE_ANALYST_PORT=8081
EXPOSE 8081
CMD ["python", "-m", "services.supplementation"]

# Sends each report to its agencies and keeps the referral ledger.
FROM notifying AS referral
COPY services/referral/ /opt/tipline/lib/python3.11/site-packages/services/referral/
ENV OTEL_SERVICE_NAME=referral
CMD ["python", "-m", "services.referral"]

# Marks reports retracted and corrects every agency that received them.
FROM notifying AS retraction
COPY services/retraction/ /opt/tipline/lib/python3.11/site-packages/services/retraction/
ENV OTEL_SERVICE_NAME=retraction
CMD ["python", "-m", "services.retraction"]

# The web console (read-only) built from the event topics, on 8082.
FROM runtime AS console
COPY services/console/ /opt/tipline/lib/python3.11/site-packages/services/console/
# Its store (SQLite, its own in each copy): mount a volume on it to keep it across restarts.
ENV OTEL_SERVICE_NAME=console \
    TIPLINE_CONSOLE_HOST=0.0.0.0 \
    TIPLINE_CONSOLE_PORT=8082 \
    TIPLINE_CONSOLE_DATA_DIR=/var/lib/tipline/console
EXPOSE 8082
CMD ["python", "-m", "services.console"]

# The one-shot that creates every topic (compose's `topics`, the k8s Job): the shared package and
# the job, no service's code.
FROM runtime AS topics
COPY tipline/__init__.py /opt/tipline/lib/python3.11/site-packages/tipline/
COPY tipline/provision.py /opt/tipline/lib/python3.11/site-packages/tipline/
ENV OTEL_SERVICE_NAME=provision
CMD ["python", "-m", "tipline.provision"]

# Without --target the last stage is built: this one refuses, rather than make one service's
# image under whatever name was asked for.
FROM runtime AS no-target
RUN echo "name the service: docker build --target <service> ..." >&2 && exit 1
