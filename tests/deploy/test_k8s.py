"""deploy/k8s: every manifest valid against the Kubernetes API schemas, and sound to run."""

from typing import Any

import kubernetes_validate
import pytest

from shared.topology import COMPACTED
from tests.deploy.conftest import OTEL_ENV, ROOT, SERVICES, SIGNERS, load_all, settings_env_names

K8S = ROOT / "deploy/k8s"
VERSION = "1.30.0"


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, doc) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"
            for doc in load_all(p)]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == kind}


@pytest.mark.parametrize(("name", "doc"), manifests(),
                         ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"])
def test_manifest_is_valid_against_the_api_schema(name: str, doc: dict[str, Any]) -> None:
    # Strict: an unknown or misspelt field fails. The schemas ship with kubernetes-validate.
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validator_does_refuse_a_wrong_manifest() -> None:
    broken = of_kind("Deployment")["intake"] | {"spec": {"replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_all(K8S / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    images = {i["name"] for i in kustomization["images"]}
    assert images == {f"tipline/{s}" for s in (*SERVICES, "topics")}


def test_every_service_has_probes_resources_and_runs_as_non_root() -> None:
    deployments = of_kind("Deployment")
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["image"].startswith(f"tipline/{name}:")
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "/etc/tipline" in mounts
        # Every service seals what it writes; only the signers hold the notice-signing key.
        keys = next(v for v in pod["volumes"] if v["name"] == mounts["/var/lib/tipline/keys"])
        assert "tipline-seal-keys" in secrets_of(keys), name
        if name == "console":  # it verifies notices: the public keys only
            assert signing_items(keys) == ["public-keys.json"]
        else:
            assert ("tipline-signing-keys" in secrets_of(keys)) == (name in SIGNERS), name
        # Longer than the broker's graceful timeout, so the message in hand is committed.
        assert pod["terminationGracePeriodSeconds"] > 30


def secrets_of(volume: dict[str, Any]) -> set[str]:
    """The Secrets a pod volume is made of (a secret, or a projected volume of several)."""
    if "secret" in volume:
        return {volume["secret"]["secretName"]}
    return {source["secret"]["name"] for source in volume.get("projected", {}).get("sources", [])
            if "secret" in source}


def signing_items(volume: dict[str, Any]) -> list[str] | None:
    """The files a projected volume takes from the signing-keys Secret (None: all of them)."""
    for source in volume.get("projected", {}).get("sources", []):
        if source.get("secret", {}).get("name") == "tipline-signing-keys":
            items = source["secret"].get("items")
            return None if items is None else [i["key"] for i in items]
    return []


def test_configuration_names_settings_that_exist() -> None:
    known = settings_env_names() | OTEL_ENV
    config = of_kind("ConfigMap")["tipline-config"]["data"]
    assert not set(config) - known, f"no setting reads {sorted(set(config) - known)}"
    secrets = of_kind("Secret")
    for name, deployment in of_kind("Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"] for e in container.get("env", [])}
        assert not env - known, f"{name}: no setting reads {sorted(env - known)}"
        for source in container["envFrom"]:
            if "secretRef" in source:
                keys = set(secrets[source["secretRef"]["name"]]["stringData"])
                assert not keys - known, f"{name}: no setting reads {sorted(keys - known)}"


def test_scaling_is_bounded_by_partitions_and_preserves_data() -> None:
    config = of_kind("ConfigMap")["tipline-config"]["data"]
    partitions = int(config["KAFKA_PARTITIONS"])
    assert int(config["KAFKA_REPLICATION_FACTOR"]) >= 3
    for name, hpa in of_kind("HorizontalPodAutoscaler").items():
        assert hpa["spec"]["maxReplicas"] <= partitions, name
    assert not COMPACTED or all(t.startswith("tipline.") for t in COMPACTED)


def test_secrets_hold_placeholders_only() -> None:
    for name, secret in of_kind("Secret").items():
        for key, value in secret["stringData"].items():
            if key.endswith(("_USERNAME", "_MECHANISM")):
                continue  # who, not how to prove it: the principal's name
            assert "REPLACE_ME" in value or value.endswith('"keys": []}'), (name, key)
