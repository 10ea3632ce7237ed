"""deploy/k8s holds its trust boundaries: credentials from Secrets, ops apart from the ESP port,
and network policies that select every pod and open only what each one serves."""

from typing import Any

from shared.keysets import HELD
from tests.deploy.conftest import SERVICES
from tests.deploy.test_k8s import of_kind

OPS_PORT = 9464
SECRET_KEYS = ("KAFKA_SASL_PASSWORD", "REDIS_PASSWORD")


def container_of(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def secret_refs(container: dict[str, Any]) -> list[str]:
    return [s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s]


def test_every_service_gets_its_own_kafka_and_redis_login_from_a_secret() -> None:
    secrets = of_kind("Secret")
    config = of_kind("ConfigMap")["tipline-config"]["data"]
    assert config["KAFKA_SECURITY_PROTOCOL"] in ("SASL_SSL", "SASL_PLAINTEXT")
    assert config["REDIS_URL"].startswith("rediss://")  # TLS; the URL itself holds no password
    for name, deployment in of_kind("Deployment").items():
        container = container_of(deployment)
        literal = {e["name"] for e in container.get("env", [])}
        assert not literal & {*SECRET_KEYS, "KAFKA_SASL_USERNAME", "REDIS_USERNAME"}, name
        logins = [secrets[r]["stringData"] for r in secret_refs(container)
                  if "KAFKA_SASL_PASSWORD" in secrets[r]["stringData"]]
        assert len(logins) == 1, f"{name}: one credentials Secret, its own"
        (login,) = logins
        assert login["KAFKA_SASL_USERNAME"] == name and login["REDIS_USERNAME"] == name
        assert set(SECRET_KEYS) <= set(login)
    jobs = of_kind("Job")
    admin = [secrets[r]["stringData"] for r in secret_refs(container_of(jobs["tipline-topics"]))]
    assert any(s.get("KAFKA_SASL_USERNAME") == "admin" for s in admin)


def test_everything_referenced_exists() -> None:
    secrets, configmaps = of_kind("Secret"), of_kind("ConfigMap")
    for name, workload in {**of_kind("Deployment"), **of_kind("Job")}.items():
        pod = workload["spec"]["template"]["spec"]
        container = container_of(workload)
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, name
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps, name
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                assert ref["key"] in configmaps[ref["name"]]["data"], name
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, name
            for source in volume.get("projected", {}).get("sources", []):
                assert source["secret"]["name"] in secrets, name
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, name


def test_the_access_job_has_every_password_its_script_needs() -> None:
    script = of_kind("ConfigMap")["tipline-kafka-access"]["data"]["access.sh"]
    # Required ones (${VAR:?}); the admin's is optional (made only where it is given).
    needed = {w.split(":")[0].strip("${}\"") for w in script.split()
              if w.startswith('"${TIPLINE_PASSWORD_') and w.endswith(':?}"')}
    given = set(of_kind("Secret")["tipline-kafka-access"]["stringData"])
    assert needed and needed <= given, sorted(needed - given)


def test_intake_serves_probes_and_metrics_on_the_ops_port_not_the_esp_port() -> None:
    intake = of_kind("Deployment")["intake"]
    container = container_of(intake)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "ops": OPS_PORT}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("ops", OPS_PORT), probe
    annotations = intake["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(OPS_PORT)
    service = {p["name"]: p["port"] for p in of_kind("Service")["intake"]["spec"]["ports"]}
    assert service == {"http": 8080, "ops": OPS_PORT}
    assert of_kind("ConfigMap")["tipline-config"]["data"]["TIPLINE_OPS_PORT"] == str(OPS_PORT)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and the In operator of matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", "only In is understood by this test"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def policies() -> dict[str, dict[str, Any]]:
    return of_kind("NetworkPolicy")


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_default_deny_in_both_directions() -> None:
    deny = [p["spec"] for p in policies().values() if p["spec"]["podSelector"] == {}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny and set(deny[0]["policyTypes"]) == {"Ingress", "Egress"}


def allowed_ingress(labels: dict[str, str]) -> dict[int, list[dict[str, Any]]]:
    """port -> the `from` peers allowed to reach it ([] = anyone), over every policy."""
    out: dict[int, list[dict[str, Any]]] = {}
    for policy in policies().values():
        spec = policy["spec"]
        if not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("ingress", []):
            for port in rule.get("ports", []):
                out.setdefault(port["port"], []).extend(rule.get("from", []))
    return out


def namespaces(peers: list[dict[str, Any]]) -> set[str]:
    return {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers}


def test_policies_select_every_pod_and_open_only_what_it_serves() -> None:
    workloads = {**of_kind("Deployment"), **of_kind("Job")}
    assert set(SERVICES) <= set(workloads)
    for name, workload in workloads.items():
        labels = pod_labels(workload)
        ingress = allowed_ingress(labels)
        served = {p["containerPort"] for p in container_of(workload).get("ports", [])}
        assert served <= set(ingress), f"{name}: {sorted(served - set(ingress))} unreachable"
        # Ops ports from the monitoring namespace only; the ESP port from anyone; staff APIs
        # from the ingress controller only. Nothing else is open.
        for port, peers in ingress.items():
            if port == OPS_PORT:
                assert peers and namespaces(peers) == {"monitoring"}, name
            elif port == 8080:
                assert name == "intake" and peers == [], name
            else:
                assert port in (8081, 8082) and namespaces(peers) == {"ingress-nginx"}, name
        egress = [p["spec"] for p in policies().values()
                  if "Egress" in p["spec"]["policyTypes"] and p["spec"].get("egress")
                  and selects(p["spec"]["podSelector"], labels)]
        assert egress, f"{name}: no egress allowed (Kafka, Redis, DNS)"
        ports = {port["port"] for spec in egress for rule in spec["egress"]
                 for port in rule.get("ports", [])}
        assert {53, 6379} <= ports and ports & {9092, 9093}, name
    # The ops port is the same on every pod: a new Deployment cannot forget it.
    assert all(OPS_PORT in {p["containerPort"] for p in container_of(w).get("ports", [])}
               for w in of_kind("Deployment").values())


def test_the_analyst_api_is_not_open_to_the_world() -> None:
    ingress = allowed_ingress(pod_labels(of_kind("Deployment")["supplementation"]))
    assert namespaces(ingress[8081]) == {"ingress-nginx"}
    # A console Deployment (app.kubernetes.io/name: console, port 8082) is covered as well.
    console = allowed_ingress({"app.kubernetes.io/name": "console",
                               "app.kubernetes.io/part-of": "tipline"})
    assert namespaces(console[8082]) == {"ingress-nginx"}


def test_each_deployment_mounts_the_key_files_its_service_holds() -> None:
    """The same table compose is laid out from (shared/keysets.py): the signing key only for the
    notice senders."""
    secrets = of_kind("Secret")
    for name, deployment in of_kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in container_of(deployment)["volumeMounts"]}
        (volume,) = [v for v in pod["volumes"] if v["name"] == mounts["/var/lib/tipline/keys"]]
        sources = ([{"name": volume["secret"]["secretName"]}] if "secret" in volume else
                   [s["secret"] for s in volume["projected"]["sources"]])
        files: set[str] = set()
        for source in sources:  # a Secret's every key, or the items taken from it
            files |= ({i["path"] for i in source["items"]} if "items" in source
                      else set(secrets[source["name"]]["stringData"]))
        assert files == set(HELD[name]), name
