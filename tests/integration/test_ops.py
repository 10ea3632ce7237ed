"""The ops endpoint: liveness, readiness on the real broker and Redis, metrics that move."""

import asyncio
import uuid

import httpx
from aiokafka import AIOKafkaProducer
from faststream import FastStream

from services.intake.esps import EspRegistry
from services.validation.main import create_app
from shared import ops, topics
from shared.contracts import ReportSubmitted
from shared.kafka import ensure_topics, make_broker
from shared.service import serve, service_name
from shared.settings import Settings
from shared.store import connect
from tipline.stack import free_port, wait_for_port

SERVICE = "ops-test"


def ops_test_app(settings: Settings, topic: str) -> FastStream:
    """A service of its own (topic and group), so no other test's messages reach it."""
    broker = make_broker(settings, SERVICE, sealed=False)  # not a pipeline service: no seal key

    @broker.consume(topic, group=f"{SERVICE}-{uuid.uuid4().hex[:6]}", model=ReportSubmitted)
    async def on_reports_submitted(events: list[ReportSubmitted]) -> None:
        pass

    return FastStream(broker)


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    want = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        if line.startswith(f"{name}{{"):
            have = set(line[len(name) + 1:line.rindex("}")].split(","))
            if want <= have:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_ready_metrics_and_a_dead_letter_counted(settings: Settings) -> None:
    port = free_port()
    config = settings.model_copy(update={"tipline_ops_port": port})
    topic = f"tipline.test.ops-{uuid.uuid4().hex[:8]}"
    await ensure_topics(config, [topic, topics.DEAD_LETTERS])
    app = ops_test_app(config, topic)
    task = asyncio.create_task(serve(app, config, SERVICE))
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            assert (await http.get("/healthz")).status_code == 200
            for _ in range(600):  # ready once started, and the broker and Redis answer
                ready = await http.get("/readyz")
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert ready.json() == {"ready": True, "checks": {"redis": "ok", "broker": "ok",
                                                            "started": "ok"}}
            assert (await http.get("/nope")).status_code == 404

            before = sample((await http.get("/metrics")).text, "tipline_dead_letters_total",
                            service=SERVICE, topic=topic)
            producer = AIOKafkaProducer(bootstrap_servers=config.kafka_bootstrap_servers)
            await producer.start()
            try:
                key = f"ops-{uuid.uuid4().hex}".encode()
                await producer.send_and_wait(topic, b"not json", key=key)
            finally:
                await producer.stop()
            text = ""
            for _ in range(200):
                text = (await http.get("/metrics")).text
                # Counted out once the broker acknowledged the dead letter, a moment later.
                if sample(text, "tipline_dead_letters_total", service=SERVICE,
                          topic=topic) > before and sample(
                        text, "tipline_events_out_total", service=SERVICE,
                        topic=topics.DEAD_LETTERS) >= 1:
                    break
                await asyncio.sleep(0.05)
            labels = {"service": SERVICE, "topic": topic}
            assert sample(text, "tipline_dead_letters_total", **labels) == before + 1
            assert sample(text, "tipline_events_in_total", **labels) >= 1
            assert sample(text, "tipline_handler_errors_total", kind="poison", **labels) >= 1
            assert sample(text, "tipline_events_out_total", service=SERVICE,
                          topic=topics.DEAD_LETTERS) >= 1
            assert "tipline_handler_seconds_bucket" in text
            assert "tipline_consumer_lag{" in text
    finally:
        app.exit()
        await asyncio.wait_for(task, 30)


async def test_a_failing_check_is_not_ready() -> None:
    async def broken() -> bool:
        raise ConnectionError("down")

    async def fine() -> bool:
        return True

    ready, states = await ops.Ops("x", {"redis": broken, "broker": fine}).readiness()
    assert not ready
    assert states == {"redis": "failing: ConnectionError", "broker": "ok"}


def test_service_name_comes_from_the_module() -> None:
    assert service_name(create_app) == "validation"


async def test_intake_counts_requests_by_route_not_by_path(settings: Settings) -> None:
    from services.intake.main import create_app as create_intake

    app = create_intake(settings)
    redis = connect(settings)
    login = ("esp-ops", await EspRegistry(redis).add("esp-ops"))
    await redis.aclose()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
        missing = await http.get("/v1/reports/no-such-report", auth=login)
        assert missing.status_code == 404
        assert (await http.get("/metrics")).status_code == 404  # not on the ESP port
        text = (await app.state.ops.metrics()).decode()
    assert sample(text, "tipline_http_requests_total", service="intake", method="GET",
                  route="/v1/reports/{report_id}", status="404") >= 1
    assert "no-such-report" not in text
