"""Apache Kafka on loopback: KRaft nodes, each broker and controller in one process, started as
children of a stack (`kafka-1` ... `kafka-N`), with SASL/SCRAM over TLS for every client, the
StandardAuthorizer and the ACLs of `tipline.access` (the plan compose and k8s are made from).

Under `<home>` (the stack's `<workdir>/kafka`):
- `cluster.json`: the cluster id and each node's ports, made at first start and kept, so a restart
  is the same cluster with its topics;
- `tls/`: a CA made at first start and the brokers' certificate it signed (PEM);
- `node-<n>/server.properties` (mode 0600: it holds the admin's password) and `node-<n>/data`
  (formatted once).

Listeners, all on 127.0.0.1, all TLS:
- CLIENT, SASL_SSL with SCRAM-SHA-512: services, agencies and tools, each with its own login;
- BROKER, SASL_SSL with PLAIN for the admin only: between brokers, and how the stack itself
  sets every SCRAM user and ACL (the admin's PLAIN password is in the broker's config, so no
  SCRAM login has to exist before the first start);
- CONTROLLER, SASL_SSL with PLAIN for the admin only: KRaft.
"""

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tipline import kafkajars
from tipline.access import ADMIN, MECHANISM, Acl, acl_bindings
from tipline.pki import LOOPBACK, make_pki
from tipline.stack import free_port, wait_for_port

if TYPE_CHECKING:
    from tipline.stack import Child, Stack

CLUSTER_FILE = "cluster.json"
PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
SCRAM_ITERATIONS = 8192
# A broker's heap: the broker idles at about 300 MB of RSS; G1 with short pauses, as Kafka's own
# start script runs it.
JVM = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
       "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]
# What every client of Apache Kafka is told, beside its address and login: sessions of seconds
# (the broker's minimum is 6 s, the embedded broker's 1 s is refused) with a heartbeat a third of
# one, fetches answered as data arrives (so a long wait costs no latency, an idle consumer asks
# seldom, and none need rest), and what only Apache Kafka offers. The same as compose and k8s.
CLIENT_TUNING = {
    "KAFKA_SESSION_TIMEOUT_MS": "10000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "3000",
    "KAFKA_FETCH_MAX_WAIT_MS": "5000",
    "KAFKA_PATIENT_FETCH_WAIT_MS": "5000",
    "KAFKA_REST_MS": "0",
    "KAFKA_IDEMPOTENCE": "true",
    "KAFKA_TRANSACTIONS": "true",
    "KAFKA_STATIC_MEMBERSHIP": "true",
}


@dataclass(frozen=True)
class Node:
    id: int
    client: int  # the ports of its three listeners
    broker: int
    controller: int


@dataclass(frozen=True)
class Cluster:
    home: Path
    cluster_id: str
    nodes: tuple[Node, ...]

    @property
    def ca(self) -> Path:
        return self.home / "tls" / "ca.crt"

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{LOOPBACK}:{n.client}" for n in self.nodes)

    @property
    def replication(self) -> int:
        return min(3, len(self.nodes))

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    def client_env(self) -> dict[str, str]:
        """What every client of this cluster is given but a login."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": MECHANISM, "KAFKA_SSL_CA_FILE": str(self.ca),
                "KAFKA_REPLICATION_FACTOR": str(self.replication), **CLIENT_TUNING}

    def client_config(self, principal: str, password: str,
                      node: Node | None = None) -> dict[str, str | int | float | bool]:
        """librdkafka's settings for a principal on the CLIENT listeners (of one node)."""
        nodes = (node,) if node else self.nodes
        return {"bootstrap.servers": ",".join(f"{LOOPBACK}:{n.client}" for n in nodes),
                "security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM,
                "sasl.username": principal, "sasl.password": password,
                "ssl.ca.location": str(self.ca)}

    def admin_config(self, password: str) -> dict[str, str | int | float | bool]:
        """librdkafka's settings for the admin on the BROKER listeners."""
        return {"bootstrap.servers": ",".join(f"{LOOPBACK}:{n.broker}" for n in self.nodes),
                "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                "sasl.username": ADMIN, "sasl.password": password,
                "ssl.ca.location": str(self.ca)}


def login_env(principal: str, password: str) -> dict[str, str]:
    return {"KAFKA_SASL_USERNAME": principal, "KAFKA_SASL_PASSWORD": password}


def prepare(home: Path, nodes: int, admin_password: str) -> tuple[Cluster, bool]:
    """The cluster kept in `home`, or a new one of `nodes` nodes; every node's config written
    (the admin's password may have changed) and its storage formatted once. Returns the cluster
    and whether it is new (formatted now: no topics, no state)."""
    path = home / CLUSTER_FILE
    if path.exists():
        kept = json.loads(path.read_text())
        cluster = Cluster(home, kept["cluster_id"], tuple(Node(**n) for n in kept["nodes"]))
        if len(cluster.nodes) != nodes:
            raise kafkajars.Unavailable(
                f"{home} holds a Kafka cluster of {len(cluster.nodes)} node(s), not {nodes}: use "
                f"--brokers {len(cluster.nodes)}, or another workdir (TIPLINE_WORKDIR)")
    else:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        cluster = Cluster(home, _cluster_id(), tuple(
            Node(i, free_port(), free_port(), free_port()) for i in range(1, nodes + 1)))
        path.write_text(json.dumps({"cluster_id": cluster.cluster_id,
                                    "nodes": [asdict(n) for n in cluster.nodes]}, indent=2))
    if not cluster.ca.exists():
        pki = make_pki(home / "tls", name="tipline local Kafka CA", days=825)
        keystore = home / "tls" / "broker.pem"  # key and certificate in one PEM: the keystore
        _private(keystore, pki.key.read_bytes() + pki.cert.read_bytes())
    configs = [_write_config(cluster, node, admin_password) for node in cluster.nodes]
    unformatted = [c for c in configs if not (c.parent / "data" / "meta.properties").exists()]
    _format(cluster, unformatted)
    return cluster, bool(unformatted)


def _cluster_id() -> str:
    while True:  # as Kafka's own: 22 base64url characters, never starting with "-"
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not made.startswith("-"):
            return made


def _private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def server_properties(cluster: Cluster, node: Node, admin_password: str) -> dict[str, str]:
    replication = cluster.replication
    admin_jaas = (f'{PLAIN} required username="{ADMIN}" password="{admin_password}" '
                  f'user_{ADMIN}="{admin_password}";')
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.id),
        "controller.quorum.voters": ",".join(
            f"{n.id}@{LOOPBACK}:{n.controller}" for n in cluster.nodes),
        "listeners": f"CLIENT://{LOOPBACK}:{node.client},BROKER://{LOOPBACK}:{node.broker},"
                     f"CONTROLLER://{LOOPBACK}:{node.controller}",
        "advertised.listeners": f"CLIENT://{LOOPBACK}:{node.client},"
                                f"BROKER://{LOOPBACK}:{node.broker}",
        "listener.security.protocol.map": "CLIENT:SASL_SSL,BROKER:SASL_SSL,CONTROLLER:SASL_SSL",
        "inter.broker.listener.name": "BROKER",
        "controller.listener.names": "CONTROLLER",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.client.sasl.enabled.mechanisms": MECHANISM,
        f"listener.name.client.{MECHANISM.lower()}.sasl.jaas.config": f"{SCRAM} required;",
        "listener.name.broker.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.broker.plain.sasl.jaas.config": admin_jaas,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": admin_jaas,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(cluster.home / "tls" / "broker.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(cluster.ca),
        # Nothing is allowed that an ACL does not allow; the admin is the one super user.
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN}",
        # Topics are made by tipline with their retention (shared/topology.py): a typo'd name
        # must fail, not appear.
        "auto.create.topics.enable": "false",
        "default.replication.factor": str(replication),
        "min.insync.replicas": "2" if replication >= 3 else "1",
        "offsets.topic.replication.factor": str(replication),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": "2" if replication >= 3 else "1",
        "transaction.state.log.num.partitions": "10",
        "group.initial.rebalance.delay.ms": "0",
        # Preservation: the broker's default is a year and a day too, never bounded by size.
        "log.retention.hours": "8784",
        "log.retention.bytes": "-1",
        "log.dirs": str(cluster.home / f"node-{node.id}" / "data"),
        # Reports with files up to 4 MiB (KAFKA_MAX_MESSAGE_BYTES) plus headers.
        "message.max.bytes": "5242880",
        "replica.fetch.max.bytes": "5242880",
    }


def _write_config(cluster: Cluster, node: Node, admin_password: str) -> Path:
    folder = cluster.home / f"node-{node.id}"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "server.properties"
    text = "".join(f"{k}={v}\n" for k, v in server_properties(cluster, node,
                                                              admin_password).items())
    _private(path, text.encode())
    return path


def _java(*argv: str) -> list[str]:
    libs = kafkajars.libs()
    if libs is None:
        raise kafkajars.Unavailable(kafkajars.missing() or "no Kafka jars")
    return [kafkajars.java(), *JVM, f"-Dlog4j2.configurationFile={kafkajars.LOG_CONFIG}",
            "-cp", f"{libs}/*", *argv]


def _env() -> dict[str, str]:
    """A broker's environment: no secret of the caller's (the config file holds what it needs)."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "JAVA_HOME", "HOME", "LANG")}


def _format(cluster: Cluster, nodes: list[Path]) -> None:
    """Format these nodes' storage (their server.properties), side by side: a JVM each."""
    formats = [(properties, subprocess.Popen(
        _java("kafka.tools.StorageTool", "format", "-t", cluster.cluster_id, "-c",
              str(properties)),
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for properties in nodes]
    for properties, process in formats:
        output, _ = process.communicate(timeout=180)
        if process.returncode != 0:
            raise RuntimeError(f"formatting {properties.parent} failed:\n{output[-2000:]}")


def spawn_node(stack: "Stack", cluster: Cluster, node_id: int) -> "Child":
    """Start one node (again, after a kill: the same ports and data)."""
    properties = cluster.home / f"node-{node_id}" / "server.properties"
    return stack.spawn(f"kafka-{node_id}", _java("kafka.Kafka", str(properties)), env=_env())


def start(stack: "Stack", cluster: Cluster, passwords: Mapping[str, str],
          plan: Mapping[str, list[Acl]], timeout: float = 90.0) -> None:
    """Every node, then every SCRAM user and the ACLs of `plan` (exactly those: an ACL the plan
    no longer has is revoked); returns once a client can log in on every node."""
    for node in cluster.nodes:
        spawn_node(stack, cluster, node.id)
    for node in cluster.nodes:
        wait_for_port(LOOPBACK, node.client, timeout=timeout)
    grant(cluster, passwords, plan, timeout)
    wait_for_login(cluster, passwords[ADMIN], timeout)


def kill(stack: "Stack", node_id: int, sig: int = signal.SIGKILL, timeout: float = 60.0) -> None:
    """Stop one node: kill -9 (no shutdown of any kind), or SIGTERM (a controlled shutdown: it
    hands its partitions' leadership over first)."""
    (child,) = [c for c in stack.children if c.name == f"kafka-{node_id}"]
    child.process.send_signal(sig)
    child.process.wait(timeout)
    stack.children.remove(child)


def _admin(cluster: Cluster, admin_password: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(cluster.admin_config(admin_password))


def grant(cluster: Cluster, passwords: Mapping[str, str], plan: Mapping[str, list[Acl]],
          timeout: float = 60.0) -> None:
    """Every principal's SCRAM login (set again: a rotated password takes effect) and exactly the
    plan's ACLs, as the admin over the BROKER listener."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = _admin(cluster, passwords[ADMIN])
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [UserScramCredentialUpsertion(p, info, password.encode())
               for p, password in sorted(passwords.items())]
    _all(admin.alter_user_scram_credentials(upserts, request_timeout=timeout), timeout)
    wanted = set(acl_bindings(plan))
    # None matches any name, principal and host (documented; the annotations say str).
    everything = AclBindingFilter("ANY", None, "ANY", None, None, "ANY", "ANY")  # type: ignore[arg-type]
    present = set(admin.describe_acls(everything, request_timeout=timeout).result(timeout))
    if stale := present - wanted:
        _all(admin.delete_acls([_exactly(b) for b in stale], request_timeout=timeout), timeout)
    if missing := wanted - present:
        _all(admin.create_acls(sorted(missing, key=str), request_timeout=timeout), timeout)


def _exactly(binding: Any) -> Any:
    from confluent_kafka.admin import AclBindingFilter

    return AclBindingFilter(binding.restype, binding.name, binding.resource_pattern_type,
                            binding.principal, binding.host, binding.operation,
                            binding.permission_type)


def _all(futures: Mapping[Any, Any], timeout: float) -> None:
    for future in futures.values():
        future.result(timeout)


def wait_for_login(cluster: Cluster, admin_password: str, timeout: float = 60.0) -> None:
    """Until the admin's SCRAM login works on every node's CLIENT listener (a user made through
    the controller reaches each broker a moment later)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    for node in cluster.nodes:
        config = cluster.client_config(ADMIN, admin_password, node)
        while True:
            try:
                AdminClient(config).list_topics(timeout=5)
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def leaders(cluster: Cluster, admin_password: str,
            topics: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the id of the node that leads it now."""
    metadata = _admin(cluster, admin_password).list_topics(timeout=10).topics
    return {(t, p): int(partition.leader) for t in topics
            for p, partition in metadata[t].partitions.items()}


def under_replicated(cluster: Cluster, admin_password: str) -> list[tuple[str, int]]:
    """Every (topic, partition) with a replica out of sync now: a node restarted, not caught up
    yet (a rolling restart waits for none before the next node)."""
    metadata = _admin(cluster, admin_password).list_topics(timeout=10).topics
    return [(t, p) for t, topic in metadata.items()
            for p, partition in topic.partitions.items()
            if len(partition.isrs) < len(partition.replicas)]


def start_apache(stack: "Stack", brokers: int) -> tuple[Cluster, bool]:
    """Apache Kafka of `brokers` nodes under the stack's workdir, with a login for each service
    (`stack.service_env`) and the admin's for the stack's own tools; the jars fetched first when
    missing. Returns the cluster and whether it is new (formatted now)."""
    from shared.agencies import load_agencies
    from shared.topics import SERVICES
    from tipline.access import kafka_acls, subscriptions
    from tipline.credentials import ensure_passwords
    from tipline.stack import SECRETS_DIR, routing

    kafkajars.fetch()
    kafkajars.java()  # says what to install before anything is made
    stack.workdir.mkdir(parents=True, exist_ok=True)
    agencies = list(load_agencies(routing(stack)))
    passwords = ensure_passwords(stack.workdir / SECRETS_DIR, agencies)["kafka"]
    # Absolute: the brokers' config, the clients' CA file and stack.json hold these paths.
    cluster, fresh = prepare(stack.workdir.resolve() / "kafka", brokers, passwords[ADMIN])
    start(stack, cluster, passwords, kafka_acls(subscriptions(), agencies))
    stack.kafka = cluster.bootstrap
    stack.kafka_env = cluster.client_env()
    stack.admin_env = login_env(ADMIN, passwords[ADMIN])
    for service in SERVICES:
        stack.service_env[service] = {**stack.service_env.get(service, {}),
                                      **login_env(service, passwords[service])}
    return cluster, fresh
