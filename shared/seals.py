"""Internal events carry a seal: proof that a tipline service, allowed to write the topic, wrote it.

A seal is an HMAC-SHA256 over the record's topic, key, value and the headers a consumer acts on
(`COVERED`: the trace it continues, the correlation id), made with the publishing service's key
and carried in the `tipline-seal` header as `<service>:v2:<base64 mac>`; so not even a trace
header can be swapped on a genuine record. A seal made before headers were covered
(`<service>:<base64 mac>`) still verifies over topic, key and value, and then the record's
headers count for nothing (`covers_headers`): records sealed before an upgrade are not refused
after it, and nobody can pass a header off under them. A consumer
takes a record from a sealed topic only when it is sealed by one of the topic's writers
(`shared.topics.WRITERS`); anything else is dead-lettered with the reason. Broker ACLs are the
first line on Apache Kafka (docs/operations.md); seals hold where a broker has no authentication
(the embedded one) and against any Kafka principal that is not a tipline service (an agency).
Notices and agency responses are not sealed: they carry Ed25519 signatures (shared/signing.py).

Keys live in `seal-keys.json` in the keys directory: {"keys": {service: [base64, ...]}}.
The first key of a service seals; every listed key verifies (rotation: put the new key first,
keep the old until every record it sealed is consumed). The file is re-read when it changes.
"""

import base64
import hmac
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from shared.keyfiles import Watched, write_json
from shared.topics import SERVICES, WRITERS

SEAL_FILE = "seal-keys.json"
HEADER = "tipline-seal"
# The headers consumers act on: the trace a record's handling continues (OpenTelemetry's
# propagators) and the id FastStream logs and links spans by. Any other header is read by nobody.
COVERED = ("traceparent", "tracestate", "baggage", "correlation_id")
_COVERING = "v2"  # a seal that covers COVERED too

Headers = Sequence[tuple[str, bytes | str]]


class Unsealed(Exception):
    """A record on a sealed topic without a valid seal by one of the topic's writers."""


_AT = {name: i for i, name in enumerate(COVERED)}
_EIGHT = (8).to_bytes(8, "big")


def _mac(key: bytes, topic: str, key_bytes: bytes | None, value: bytes,
         headers: Headers | None) -> bytes:
    """Over topic, key, value, then (None: a seal from before) how many values each COVERED
    header has and each value, in order: a header added, dropped or changed breaks it. Every
    part goes with its length first, so no two records seal alike; the whole in one call into
    hashlib, as every record is sealed (3.6 us for a 2 KB record, measured: less than the seal
    over topic, key and value alone took in updates, 4.5 us)."""
    t, k = topic.encode(), key_bytes or b""
    out = [len(t).to_bytes(8, "big"), t, len(k).to_bytes(8, "big"), k,
           len(value).to_bytes(8, "big"), value]
    if headers is not None:
        slots: list[list[bytes]] = [[] for _ in COVERED]
        for name, given in headers:
            at = _AT.get(name)
            if at is not None:
                slots[at].append(given.encode() if isinstance(given, str) else given)
        for values in slots:
            out += (_EIGHT, len(values).to_bytes(8, "big"))
            for one in values:
                out += (len(one).to_bytes(8, "big"), one)
    return hmac.digest(key, b"".join(out), "sha256")


def covered(headers: Iterable[tuple[str, bytes | str]]) -> list[tuple[str, bytes]]:
    """The headers of a record the seal covers, as they are (a dead letter keeps them)."""
    return [(k, v.encode() if isinstance(v, str) else bytes(v))
            for k, v in headers if k in COVERED]


def covers_headers(seal: str | None) -> bool:
    """Whether a seal that verified covers the record's COVERED headers too (else the record's
    headers must be ignored: nothing vouches for them)."""
    parts = seal.split(":") if seal else []
    return len(parts) == 3 and parts[1] == _COVERING


class Seals:
    """Seals records as `service` and checks the seals of records read."""

    def __init__(self, keys_dir: Path) -> None:
        self._file = Watched(keys_dir / SEAL_FILE)
        self._decoded: dict[str, list[bytes]] = {}
        self._decoded_from: dict[str, Any] | None = None
        if not self._file.path.exists():  # fail at start, not at the first record
            raise FileNotFoundError(
                f"no seal keys at {self._file.path}: run `tipline keys init` "
                "or set TIPLINE_KEYS_DIR"
            )

    def require(self, service: str) -> "Seals":
        """These seals, once `service` is known to have a key (checked at start)."""
        if not self._keys(service):
            raise FileNotFoundError(f"no seal key for {service} in {self._file.path}: run "
                                    "`tipline keys init`")
        return self

    def _keys(self, service: str) -> list[bytes]:
        data = self._file.fresh()
        if data is not self._decoded_from:  # decoded once a version of the file
            self._decoded = {s: [base64.b64decode(k) for k in keys]
                             for s, keys in data["keys"].items()}
            self._decoded_from = data
        return self._decoded.get(service, [])

    def seal(self, service: str, topic: str, key: bytes | None, value: bytes,
             headers: Headers = ()) -> str:
        """The seal of a record whose other headers are `headers`."""
        own = self._keys(service)
        if not own:
            raise Unsealed(f"no internal key for {service} in {self._file.path}")
        mac = _mac(own[0], topic, key, value, headers)
        return f"{service}:{_COVERING}:{base64.b64encode(mac).decode()}"

    def headers(
        self, service: str, topic: str, key: bytes | None, value: bytes, headers: Headers = ()
    ) -> list[tuple[str, bytes]]:
        """The seal header of a record written as `service` whose other headers are `headers`
        (the Publisher; a plain Kafka producer's tools and tests, with none)."""
        return [(HEADER, self.seal(service, topic, key, value, headers).encode())]

    def check(self, topic: str, key: bytes | None, value: bytes, seal: str | None,
              headers: Headers = ()) -> str:
        """The service that sealed this record (whose headers are `headers`); raises Unsealed
        otherwise."""
        writers = WRITERS.get(topic)
        if writers is None:
            return ""  # not a sealed topic
        if not seal:
            raise Unsealed(f"not sealed: only {', '.join(sorted(writers))} may write {topic}")
        service, _, mac = seal.partition(":")
        if service not in writers:
            raise Unsealed(f"sealed by {service[:40]!r}, which may not write {topic}")
        version, _, mac = mac.rpartition(":")
        if version not in ("", _COVERING):
            raise Unsealed(f"a seal of an unknown kind ({version[:10]!r})")
        try:
            given = base64.b64decode(mac, validate=True)
        except ValueError:
            raise Unsealed("the seal is not base64") from None
        over = headers if version else None  # a seal from before covers no header
        if not any(hmac.compare_digest(given, _mac(k, topic, key, value, over))
                   for k in self._keys(service)):
            raise Unsealed(f"the seal of {service} does not match the record")
        return service


def ensure_seal_keys(keys_dir: Path) -> None:
    """A key for every service that has none (dev stacks and the compose one-shot)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / SEAL_FILE
    data = Watched(path).fresh() if path.exists() else {"keys": {}}
    missing = [s for s in SERVICES if not data["keys"].get(s)]
    if not missing:
        return
    for service in missing:
        data["keys"][service] = [base64.b64encode(secrets.token_bytes(32)).decode()]
    write_json(path, data, 0o600)
