"""`tipline status`: the stack at a glance. Processes, their health, consumer lag per group
(`shared.kafka.consumer_lag`, which the console shows too)."""

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from shared.kafka import consumer_lag
from shared.settings import Settings

STATE_FILE = "stack.json"  # written by `tipline up`


def save_state(workdir: Path, stack: Any) -> None:
    """What `tipline status` needs to find a stack started by `tipline up`."""
    state = {
        "kafka": stack.kafka, "redis": stack.redis, "redis_cluster": stack.redis_cluster,
        # How to reach its Apache Kafka but a login (TLS, SASL, tuning); logins stay in
        # <workdir>/secrets/passwords.json (mode 0600).
        "kafka_env": stack.kafka_env,
        "http": stack.http, "console": stack.console, "analyst": stack.analyst,
        "routing": str(stack.settings().tipline_routing_file),
        "children": [{"name": c.name, "pid": c.process.pid, "ops": getattr(c, "ops", None),
                      "log": str(c.log)} for c in stack.children],
    }
    (workdir / STATE_FILE).write_text(json.dumps(state, indent=2))


def load_state(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((workdir / STATE_FILE).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def tool_settings(workdir: Path, principal: str = "admin") -> Settings:
    """Settings for a tool run beside `tipline up` (the demo, replay, esp add, analyst add,
    status, deadletters, agency tail): what the environment says, and where it says nothing, the
    running stack's broker, Redis (as the operator of its own Valkey, whose password is kept in
    the workdir) and routing file as `tipline up` wrote them. On its Apache Kafka the tool logs in
    as `principal` (the admin; `agency-<id>` for an agency's client), with the password kept in
    the workdir."""
    state = load_state(workdir) or {}
    given: dict[str, Any] = {name: state[key] for name, key, env in (
        ("kafka_bootstrap_servers", "kafka", "KAFKA_BOOTSTRAP_SERVERS"),
        ("redis_url", "redis", "REDIS_URL"),
        ("tipline_routing_file", "routing", "TIPLINE_ROUTING_FILE"),
    ) if state.get(key) and not os.environ.get(env)}
    if "kafka_bootstrap_servers" in given and state.get("kafka_env"):
        given.update({k.lower(): v for k, v in state["kafka_env"].items()})
        given.update(kafka_sasl_username=principal,
                     kafka_sasl_password=SecretStr(kafka_password(workdir, principal)))
    if "redis_url" in given and not os.environ.get("REDIS_PASSWORD"):
        from tipline.stack import operator_login

        if login := operator_login(workdir):
            given["redis_username"], given["redis_password"] = login[0], SecretStr(login[1])
    if "redis_url" in given:
        given["redis_cluster"] = bool(state.get("redis_cluster"))
    return Settings(**given)  # validated: the routing file becomes a Path


def kafka_password(workdir: Path, principal: str) -> str:
    """A principal's Kafka password, as `tipline up --kafka apache` keeps it in the workdir."""
    from tipline.credentials import PASSWORDS_FILE
    from tipline.stack import SECRETS_DIR

    path = workdir / SECRETS_DIR / PASSWORDS_FILE
    try:
        return str(json.loads(path.read_text())["kafka"][principal])
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"no Kafka login for {principal} in {path}: {exc!r}") from exc


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def health(ops: str | None) -> dict[str, Any]:
    """The service's own answer on /readyz (issue 7's ops endpoint), when it has one."""
    if not ops:
        return {"ready": None, "checks": {}}
    try:
        async with httpx.AsyncClient(timeout=3) as http:
            r = await http.get(f"{ops}/readyz")
        body = r.json()
        return {"ready": bool(body.get("ready")), "checks": body.get("checks", {})}
    except (httpx.HTTPError, ValueError) as exc:
        return {"ready": False, "checks": {"ops": f"unreachable: {type(exc).__name__}"}}


async def gather(workdir: Path, kafka: str | None) -> dict[str, Any]:
    state = load_state(workdir) or {}
    bootstrap = kafka or state.get("kafka") or os.environ.get(
        "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    children = state.get("children", [])
    healths = await asyncio.gather(*(health(c.get("ops")) for c in children))
    processes = [
        {"name": c["name"], "pid": c["pid"], "alive": alive(c["pid"]), "rss_mb": rss_mb(c["pid"]),
         **h}
        for c, h in zip(children, healths, strict=True)
    ]
    try:
        settings = tool_settings(workdir).model_copy(
            update={"kafka_bootstrap_servers": bootstrap})
        lag: dict[str, Any] = await asyncio.wait_for(consumer_lag(settings), 15)
        lag_error = None
    except Exception as exc:  # the broker being down is an answer, not a crash
        lag, lag_error = {}, f"{type(exc).__name__}: {exc}"
    return {"kafka": bootstrap, "redis": state.get("redis"), "http": state.get("http"),
            "processes": processes, "lag": lag, "lag_error": lag_error}


def render(status: dict[str, Any]) -> str:
    lines = [f"kafka {status['kafka']}   redis {status['redis']}   intake {status['http']}", ""]
    if status["processes"]:
        lines.append(f"{'process':<18} {'pid':>7}  {'alive':<6} {'ready':<6} {'rss MB':>7}  checks")
    for p in status["processes"]:
        ready = "-" if p["ready"] is None else ("yes" if p["ready"] else "NO")
        checks = ", ".join(f"{k}={v}" for k, v in p["checks"].items())
        lines.append(f"{p['name']:<18} {p['pid']:>7}  {'yes' if p['alive'] else 'NO':<6} "
                     f"{ready:<6} {p['rss_mb'] or '-':>7}  {checks}")
    if not status["processes"]:
        lines.append("no stack started by `tipline up` in this workdir (showing Kafka only)")
    lines += ["", f"{'consumer group':<34} {'topic':<34} {'lag':>7}"]
    for group, per_topic in sorted(status["lag"].items()):
        for topic, lag in sorted(per_topic.items()):
            lines.append(f"{group:<34} {topic:<34} {lag:>7}")
    if status["lag_error"]:
        lines.append(f"lag unknown: {status['lag_error']}")
    return "\n".join(lines)


def main(workdir: Path, *, as_json: bool = False, kafka: str | None = None) -> int:
    status = asyncio.run(gather(workdir, kafka))
    print(json.dumps(status) if as_json else render(status))
    down = [p["name"] for p in status["processes"] if not p["alive"] or p["ready"] is False]
    return 1 if down or status["lag_error"] else 0
