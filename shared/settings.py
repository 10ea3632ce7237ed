"""Typed settings, read from the environment once at start-up.

Defaults suit the embedded stack (Tansu broker, Valkey); real Kafka and Redis are a URL away.
"""

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CONFIG_DIR = Path(__file__).resolve().parent.parent / "deploy" / "config"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Kafka security, the same on every client (services, agency client, CLI tools): one SASL
    # principal per service and per agency; docs/operations.md lists each one's ACLs.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: Path | None = None  # the CA that signed the brokers' certificates
    kafka_ssl_cert_file: Path | None = None  # a client certificate, where brokers ask for one
    kafka_ssl_key_file: Path | None = None
    # Redis credentials and TLS, kept out of REDIS_URL so the URL is not a secret
    # (rediss:// URLs use TLS; the CA file verifies the server).
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_ssl_ca_file: Path | None = None
    # REDIS_URL names one node of a Redis Cluster (any primary: the client learns the rest);
    # every key of a report carries its id as a hash tag, so a report's keys share one slot.
    redis_cluster: bool = False
    service_name: str = Field(default="tipline", validation_alias="OTEL_SERVICE_NAME")

    # Consumer tuning. The embedded broker needs short sessions and fetch waits (see
    # docs/operations.md); real Kafka wants session_timeout_ms >= 6000.
    kafka_session_timeout_ms: int = 1000
    # A third of the session, Kafka's own ratio: each heartbeat is a request the broker answers,
    # from every consumer, idle or not (docs/load-testing.md, "tipline idle").
    kafka_heartbeat_interval_ms: int = 333
    # The embedded broker answers a waiting fetch within about half its wait (why 10 ms:
    # docs/load-testing.md).
    kafka_fetch_max_wait_ms: int = 10
    # Subscribers nobody waits on (acks, draft steps, bulk referrals) fetch this patiently, for
    # a fuller fetch: a quick idle consumer costs CPU polling (docs/load-testing.md).
    kafka_patient_fetch_wait_ms: int = 100
    # A subscriber idle this long rests: it fetches once every KAFKA_REST_MS instead of asking
    # all the time (shared/batches/resting.py). 0: never rest, for a broker that answers a
    # fetch when a record comes (Apache Kafka).
    kafka_rest_ms: int = 1000
    kafka_rest_after_s: float = 10.0
    kafka_linger_ms: int = 1
    # A producer batch (per partition); why this size: docs/load-testing.md.
    kafka_max_batch_bytes: int = 256 * 1024
    kafka_partitions: int = 4
    # An agency's notice topic: one agency's feed, read by its one client, a few notices a second.
    # One partition keeps its notices in one order, at less fetch work for the broker
    # (docs/load-testing.md).
    kafka_agency_partitions: int = 1
    kafka_replication_factor: int = 1
    kafka_max_message_bytes: int = 4 * 1024 * 1024
    # Apache Kafka offers what the embedded broker does not. Idempotence: a producer's retried
    # send is written once. Transactions: the notice senders (referral, retraction) publish a
    # batch's records and commit its offsets in one transaction, and every consumer reads only
    # committed records, so a notice reaches an agency once even when its sender is killed
    # mid-batch (shared/batches/). Transactions imply idempotence.
    kafka_idempotence: bool = False
    kafka_transactions: bool = False
    # An open transaction of a sender killed without a successor of its own name is aborted
    # after this long; till then committed readers of its partitions wait.
    kafka_transaction_timeout_ms: int = 15_000
    # This copy's name among its service's copies, the same across its restarts, so a restarted
    # copy fences its predecessor's transactions at once (default: the host's name).
    tipline_instance: str = Field(default_factory=socket.gethostname)
    # Static group membership (Apache Kafka): a copy started again under its name takes its
    # partitions back at once, instead of after its predecessor's session times out; a copy
    # that stops for good keeps its partitions until then.
    kafka_static_membership: bool = False

    # Telemetry: "none", "console" or "otlp" (then OTEL_EXPORTER_OTLP_ENDPOINT applies).
    tipline_trace_exporter: Literal["none", "console", "otlp"] = "none"
    tipline_log_level: str = "INFO"

    # Routing: jurisdiction rules and the agency registry.
    tipline_routing_file: Path = CONFIG_DIR / "routing.yaml"

    # Intake HTTP.
    tipline_http_host: str = "127.0.0.1"
    tipline_http_port: int = 8080

    # Ops endpoint (/healthz, /readyz, /metrics) of FastStream services; 0 = off. Intake serves
    # the same paths on its HTTP port.
    tipline_ops_host: str = "127.0.0.1"
    tipline_ops_port: int = 0
    # Logs: "json" (one object a line, for collectors) or "text" (for people at a terminal).
    tipline_log_format: Literal["json", "text"] = "json"

    # Analyst API (served by the supplementation service); 0 = off.
    tipline_analyst_host: str = "127.0.0.1"
    tipline_analyst_port: int = 0
    # The console (its own service): its HTTP address, and the secret its session cookies are
    # signed with (required by the console; `tipline up` makes one in its workdir).
    tipline_console_host: str = "127.0.0.1"
    tipline_console_port: int = 8082
    tipline_console_session_secret: SecretStr | None = None
    tipline_console_session_ttl_s: float = 8 * 3600.0
    # The session cookie is Secure (sent over HTTPS only) always, not only on a request that
    # came as https: set it behind a proxy that ends TLS.
    tipline_console_secure_cookie: bool = False
    # Where the console keeps its read model (SQLite, with the offsets it consumed): each copy
    # its own directory.
    tipline_console_data_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("TIPLINE_WORKDIR", ".tipline")) / "console"
    )
    # A trace UI's address for a report's trace, with {trace_id} (Jaeger:
    # http://127.0.0.1:16686/trace/{trace_id}); empty: no link.
    tipline_console_trace_url: str = ""
    # Notice signing: the keys directory (signing-keys.json private, public-keys.json public).
    tipline_keys_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("TIPLINE_WORKDIR", ".tipline")) / "keys"
    )
    # Agency acknowledgements: a correction or amendment not acknowledged within this many
    # seconds is sent again; after this many re-sends the report is "correction escalated".
    tipline_ack_timeout_s: float = 300.0
    tipline_max_resends: int = 3
    tipline_resend_tick_s: float = 1.0
    # How often the routing file is checked for changes (seconds).
    tipline_routing_reload_s: float = 2.0

    # The ESP reporting API (/ispws). Uploads go to a content-addressed store in this directory.
    tipline_files_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("TIPLINE_WORKDIR", ".tipline")) / "files"
    )
    tipline_max_upload_bytes: int = 1024 * 1024 * 1024
    tipline_max_body_bytes: int = 4 * 1024 * 1024
    # Documents parsed and checked against the schema at once (threads of their own), and at
    # once for one ESP (services/intake/pool.py).
    tipline_document_threads: int = Field(default=2, ge=1)
    tipline_documents_per_esp: int = Field(default=1, ge=1)
    # An unfinished report is abandoned (auto-retracted) this long after it was opened or last
    # changed, whichever is later; the timer looks every tipline_abandon_tick_s.
    tipline_abandon_after_open_s: float = 24 * 3600.0
    tipline_abandon_after_change_s: float = 3600.0
    tipline_abandon_tick_s: float = 1.0
    # Strict compatibility: /retract on a finished report answers 5102, as NCMEC does, instead
    # of a post-finish retraction.
    tipline_strict_compat: bool = False
    # How long an Idempotency-Key's first answer is kept (seconds).
    tipline_idempotency_ttl_s: int = 24 * 3600

    # The public form (intake's /report: reports from anyone, no login). A client address may
    # send this many forms a window, and everyone together this many a minute (each intake copy
    # counts its own); more are answered "try again later" with Retry-After. A form sent sooner
    # than min_s after it was served is asked for again (a person takes longer); one older than
    # max_s is served afresh, its fields kept.
    tipline_public_per_address: int = 10
    tipline_public_window_s: float = 600.0
    tipline_public_per_minute: int = 120
    tipline_public_form_min_s: float = 3.0
    tipline_public_form_max_s: float = 4 * 3600.0

    # How long intake waits for the broker to take an accepted event before answering anyway
    # (the event is safe in its outbox, and the sweep sends it). Shorter than the shutdown grace.
    tipline_publish_wait_s: float = 5.0

    # Logins (ESPs and analysts): key derivations at once, and failed logins of one name from
    # one client address within a minute before the next failure is answered 429, slow down
    # (shared/logins.py; a right password is always let in).
    tipline_login_concurrency: int = 2
    tipline_login_failures: int = 10
    # The proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For and
    # X-Forwarded-Proto every HTTP API believes; none by default, so a client cannot choose the
    # address its failed logins are counted against.
    tipline_forwarded_allow_ips: str = ""

    # A subscriber handles what one fetch brings, up to this many records, as one batch
    # (shared/batches/).
    tipline_batch_max_records: int = 500
    # A batch that failed for want of Redis or the broker is fetched again after this pause; a
    # record failing otherwise gets this many attempts, then goes to the dead-letter topic.
    tipline_retry_backoff_s: float = 0.5
    tipline_max_attempts: int = 3
    # On SIGTERM a service has this long to finish the messages in hand (then it exits anyway).
    tipline_shutdown_grace_s: float = 15.0

    @property
    def kafka_bootstrap(self) -> list[str]:
        """KAFKA_BOOTSTRAP_SERVERS as the clients take it: a list (they read a comma-separated
        string as one host)."""
        return [server.strip() for server in self.kafka_bootstrap_servers.split(",")
                if server.strip()]

    @field_validator("kafka_bootstrap_servers", "redis_url")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("tipline_console_trace_url")
    @classmethod
    def _trace_url(cls, value: str) -> str:
        if value and ("{trace_id}" not in value or not value.startswith(("http://", "https://"))):
            raise ValueError("an http(s) address with {trace_id} in it, or empty")
        return value

    @model_validator(mode="after")
    def _kafka_credentials(self) -> "Settings":
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if self.tipline_publish_wait_s >= self.tipline_shutdown_grace_s:
            raise ValueError("TIPLINE_PUBLISH_WAIT_S must be shorter than "
                             "TIPLINE_SHUTDOWN_GRACE_S, or a rolling restart cuts accepted calls")
        if self.redis_cluster and urlsplit(self.redis_url).path.strip("/") not in ("", "0"):
            raise ValueError("REDIS_URL: a Redis Cluster has database 0 only (REDIS_CLUSTER=true)")
        for name in ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file",
                     "redis_ssl_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name.upper()}: no such file {path}")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
