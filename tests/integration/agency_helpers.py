"""Helpers for the analyst and agency tests: a throwaway routing file, keys, topic reading."""

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared.settings import Settings
from shared.signing import PUBLIC_FILE, Signer, rotate


def agency_ids(n: int) -> list[str]:
    """Fresh agency ids (so fresh topics) for one test."""
    tag = uuid.uuid4().hex[:8]
    return [f"t{tag}-{i}" for i in range(n)]


def agency_key(keys_dir: Path) -> str:
    """A new response-signing key for an agency; returns its public key (base64)."""
    rotate(keys_dir)
    return str(json.loads((keys_dir / PUBLIC_FILE).read_text())["keys"][-1]["public_key"])


def registered(
    workdir: Path, agencies: list[str], keyless: tuple[str, ...] = ()
) -> tuple[Path, dict[str, Signer]]:
    """A routing file where each agency (but `keyless`) registered a response-signing key, and
    each one's signer, as `tipline agency keys` sets them up."""
    keys = {a: [agency_key(workdir / "agency-keys" / a)] for a in agencies if a not in keyless}
    signers = {a: Signer(workdir / "agency-keys" / a) for a in keys}
    return routing_file(workdir / "routing.yaml", agencies, verify_keys=keys), signers


def routing_file(
    path: Path, agencies: list[str], us_state: str = "TX",
    verify_keys: dict[str, list[str]] | None = None,
) -> Path:
    """Rules sending reports from `us_state` to all `agencies`, anything else to the first."""
    keys = verify_keys or {}
    listed = "\n".join(
        f"  - {{id: {a}, name: Synthetic agency {a}, verify_keys: {json.dumps(keys.get(a, []))}}}"
        for a in agencies
    )
    path.write_text(
        f'version: "test-{uuid.uuid4().hex[:6]}"\nagencies:\n{listed}\n'
        f"rules:\n  us_states:\n    {us_state}: [{', '.join(agencies)}]\n"
        f"  fallback: [{agencies[0]}]\n"
    )
    return path


async def read_topic(
    settings: Settings, topic: str, want: Any, timeout: float = 20
) -> list[dict[str, Any]]:
    """Parsed records of a topic, from its start, until `want(records)` holds or time is up;
    records that are no JSON (other tests' poison, on the session's shared broker) are left
    out."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"test-{uuid.uuid4().hex}", auto_offset_reset="earliest", fetch_max_wait_ms=5,
        session_timeout_ms=1000, heartbeat_interval_ms=100,
    )
    await consumer.start()
    records: list[dict[str, Any]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not want(records) and asyncio.get_running_loop().time() < deadline:
            for part in (await consumer.getmany(timeout_ms=200)).values():
                for record in part:
                    with contextlib.suppress(ValueError, TypeError):
                        records.append(json.loads(record.value))
    finally:
        await consumer.stop()
    return records
