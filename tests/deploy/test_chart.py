"""The Helm chart under deploy/helm/sluice: lint, Kubernetes 1.30 schemas, and what matters.

Rendered offline with Helm's own engine (helm-python-sdk), for the chart's defaults and the
value files beside this one.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
from conftest import CHART, HERE, KUBE_VERSION, Rendered, load_values, render

SERVICE_MONITOR_SCHEMA = HERE / "schemas" / "servicemonitor-v1.json"


def closed(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    return schema


# --- lint and schemas -------------------------------------------------------------------


def test_lint_is_clean_in_strict_mode(value_set: str) -> None:
    report = helm_python.lint(
        os.fspath(CHART),
        load_values(value_set),
        strict=True,
        kube_version=f"v{KUBE_VERSION}",
    )
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems
    assert report["errors"] == []


EXPECTED_KINDS = {
    "defaults": [
        "ConfigMap",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ],
    "single": [
        "ConfigMap",
        "PodDisruptionBudget",
        "Service",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ],
    "five-tls": [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Ingress",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "StatefulSet",
    ],
}


def test_renders_the_expected_objects(value_set: str, rendered_sets: dict[str, Rendered]) -> None:
    assert rendered_sets[value_set].kinds() == EXPECTED_KINDS[value_set]


def test_every_object_is_valid_for_kubernetes_1_30(
    value_set: str, rendered_sets: dict[str, Rendered]
) -> None:
    rendered = rendered_sets[value_set]
    service_monitor_schema = closed(json.loads(SERVICE_MONITOR_SCHEMA.read_text()))
    checked = 0
    for document in rendered.documents:
        if document["kind"] == "ServiceMonitor":
            assert document["apiVersion"] == "monitoring.coreos.com/v1"
            jsonschema.Draft7Validator(service_monitor_schema).validate(document)
        else:
            # Raises on any unknown field (strict) or schema violation.
            version = kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
            assert version == "1.30"
        checked += 1
    assert checked == len(EXPECTED_KINDS[value_set])


def test_strict_validation_catches_a_misplaced_field(rendered_sets: dict[str, Rendered]) -> None:
    """The validators above do refuse what they should (a guard against a vacuous pass)."""
    statefulset = copy.deepcopy(rendered_sets["defaults"].statefulset)
    statefulset["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBE_VERSION, strict=True)
    monitor = copy.deepcopy(rendered_sets["five-tls"].one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["scrapeEvery"] = "15s"
    schema = closed(json.loads(SERVICE_MONITOR_SCHEMA.read_text()))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(monitor)


# --- values schema ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"replicas": 3},  # a typo of replicaCount
        {"auth": {"enabeld": False}},
        {"replicaCount": 2},
        {"auth": {"accessKeyId": "short"}},
        {"config": {"logFormat": "yaml"}},
        {"tls": {"enabled": True}},  # no secretName
        {"ingress": {"enabled": True}},  # no hosts
        {"zoneFromNode": "yes"},
        {"zone": "eu west 1"},
        {"tls": {"peerCA": "no"}},
    ],
    ids=lambda v: json.dumps(v, sort_keys=True),
)
def test_values_schema_refuses_bad_values(values: dict[str, Any]) -> None:
    with helm_python.Chart.load(os.fspath(CHART)) as chart:
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema(chart.merge_values(values))
    report = helm_python.lint(os.fspath(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"], f"lint accepted {values}"


def test_values_schema_refuses_an_unknown_top_level_key_at_install() -> None:
    with helm_python.Chart.load(os.fspath(CHART)) as chart:
        with pytest.raises(helm_python.HelmError, match="replicas"):
            chart.render({"replicas": 3}, name="sluice", namespace="kinesis")


@pytest.mark.parametrize("count", [1, 3, 5])
def test_supported_replica_counts(count: int) -> None:
    rendered = render({"replicaCount": count})
    assert rendered.statefulset["spec"]["replicas"] == count
    assert ("Pod 0 bootstraps the cluster" in rendered.notes) == (count > 1)


# --- authentication ---------------------------------------------------------------------


def test_authentication_is_on_by_default_with_a_chart_made_admin_key(
    rendered_sets: dict[str, Rendered],
) -> None:
    rendered = rendered_sets["defaults"]
    assert rendered.config["auth"] == "sigv4"
    env = rendered.env
    for variable, key in [
        ("SLUICE_ADMIN_ACCESS_KEY_ID", "access-key-id"),
        ("SLUICE_ADMIN_SECRET_ACCESS_KEY", "secret-access-key"),
    ]:
        assert "value" not in env[variable], f"{variable} must come from a Secret"
        assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "sluice-admin", "key": key}
    data = rendered.secret_data("sluice-admin")
    assert data["access-key-id"] == "AKIASLUICEADMIN00001"
    assert re.fullmatch(r"[A-Za-z0-9]{40}", data["secret-access-key"])
    assert "kubectl --namespace kinesis get secret sluice-admin" in rendered.notes
    assert "{.data.secret-access-key}" in rendered.notes


def test_an_existing_secret_replaces_the_chart_made_one(rendered_sets: dict[str, Rendered]) -> None:
    rendered = rendered_sets["single"]
    assert rendered.config["auth"] == "sigv4"
    assert rendered.all("Secret") == []
    env = rendered.env
    assert env["SLUICE_ADMIN_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "kinesis-admin",
        "key": "id",
    }
    assert env["SLUICE_ADMIN_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "kinesis-admin",
        "key": "secret",
    }
    assert "get secret kinesis-admin" in rendered.notes


def test_authentication_can_be_turned_off() -> None:
    rendered = render({"auth": {"enabled": False}})
    assert rendered.config["auth"] == "none"
    assert rendered.all("Secret") == []
    assert not any(name.startswith("SLUICE_ADMIN_") for name in rendered.env)
    assert "Authentication is off" in rendered.notes


# --- the StatefulSet --------------------------------------------------------------------


def test_statefulset_identity_and_headless_service(
    value_set: str, rendered_sets: dict[str, Rendered]
) -> None:
    rendered = rendered_sets[value_set]
    spec = rendered.statefulset["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    headless = rendered.one("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    client = rendered.one("Service", "sluice")
    assert client["spec"].get("clusterIP") != "None"
    assert {p["name"]: p["port"] for p in client["spec"]["ports"]} == {
        "kinesis": 4567,
        "grpc": 50051,
    }
    pod_labels = spec["template"]["metadata"]["labels"]
    for service in (headless, client):
        assert service["spec"]["selector"].items() <= pod_labels.items()
    node_id = rendered.env["SLUICE_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert node_id == "metadata.labels['apps.kubernetes.io/pod-index']"


def test_the_node_listens_on_all_interfaces_at_the_container_ports(
    value_set: str, rendered_sets: dict[str, Rendered]
) -> None:
    rendered = rendered_sets[value_set]
    ports = {p["name"]: p["containerPort"] for p in rendered.container["ports"]}
    assert rendered.config["kinesis_addr"] == f"0.0.0.0:{ports['kinesis']}"
    assert rendered.config["grpc_addr"] == f"0.0.0.0:{ports['grpc']}"
    assert rendered.args[:3] == ["server", "--config", "/etc/sluice/config/sluice.toml"]
    assert rendered.mount("config")["mountPath"] == "/etc/sluice/config"


def test_data_directory_is_a_persistent_volume_claim(
    value_set: str, rendered_sets: dict[str, Rendered]
) -> None:
    rendered = rendered_sets[value_set]
    (claim,) = rendered.statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert rendered.mount("data")["mountPath"] == rendered.config["data_dir"]
    assert rendered.volume("data") is None, "data must come from the claim template"
    size = claim["spec"]["resources"]["requests"]["storage"]
    assert size == {"single": "50Gi"}.get(value_set, "20Gi")


def test_pods_run_unprivileged(value_set: str, rendered_sets: dict[str, Rendered]) -> None:
    rendered = rendered_sets[value_set]
    pod = rendered.pod["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0 and pod["runAsGroup"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    # Without it the kubelet makes every file of the volume group-readable at each mount,
    # the keyring included, and the node refuses to start.
    assert pod["fsGroupChangePolicy"] == "OnRootMismatch"
    # A service account token only to read the node's zone label (zoneFromNode).
    discovers_zone = "SLUICE_ZONE_FROM_NODE" in rendered.env
    assert rendered.pod["automountServiceAccountToken"] is discovers_zone
    for container in rendered.pod["containers"] + rendered.pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert context.get("privileged") is not True
        assert container["resources"]["requests"], container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]


def test_probes_ask_the_admin_port(value_set: str, rendered_sets: dict[str, Rendered]) -> None:
    rendered = rendered_sets[value_set]
    container = rendered.container
    assert {"name": "admin", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert rendered.config["admin_addr"] == "0.0.0.0:9090"
    paths = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in paths.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "admin"}, probe
        assert container[probe]["periodSeconds"] > 0


def test_disruption_budget_allows_one_node_down(
    value_set: str, rendered_sets: dict[str, Rendered]
) -> None:
    rendered = rendered_sets[value_set]
    budget = rendered.one("PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in budget["spec"]
    pod_labels = rendered.statefulset["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_nodes_spread_over_hosts_and_zones(rendered_sets: dict[str, Rendered]) -> None:
    soft = rendered_sets["defaults"].pod
    terms = soft["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (spread,) = soft["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    hard = rendered_sets["five-tls"].pod
    terms = hard["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
    assert hard["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "DoNotSchedule"


def test_zone_is_passed_only_when_set(rendered_sets: dict[str, Rendered]) -> None:
    assert "SLUICE_ZONE" not in rendered_sets["defaults"].env
    assert rendered_sets["single"].env["SLUICE_ZONE"] == {"name": "SLUICE_ZONE", "value": "eu-west-1a"}


def test_dead_node_grace_reaches_the_node_config(rendered_sets: dict[str, Rendered]) -> None:
    assert "dead_node_grace_secs = 600" in rendered_sets["five-tls"].config_toml.splitlines()
    assert "dead_node_grace_secs" not in rendered_sets["defaults"].config_toml


def test_config_changes_roll_the_pods() -> None:
    before = render({}).statefulset["spec"]["template"]["metadata"]["annotations"]
    after = render({"config": {"logLevel": "debug"}}).statefulset["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert before["checksum/config"] != after["checksum/config"]


# --- TLS --------------------------------------------------------------------------------


def test_tls_flags_and_mounts_only_with_tls(rendered_sets: dict[str, Rendered]) -> None:
    for name in ("defaults", "single"):
        rendered = rendered_sets[name]
        assert not [a for a in rendered.args if a.startswith("--tls")], name
        assert rendered.volume("tls") is None and rendered.mount("tls") is None, name
        assert "https://" not in rendered.notes, name

    rendered = rendered_sets["five-tls"]
    args = rendered.args
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    mount = rendered.mount("tls")
    assert mount["readOnly"] is True and "subPath" not in mount, "renewals must reach the node"
    assert flags["--tls-cert"] == f"{mount['mountPath']}/tls.crt"
    assert flags["--tls-key"] == f"{mount['mountPath']}/tls.key"
    assert flags["--tls-client-ca"] == f"{mount['mountPath']}/ca.crt"
    assert flags["--tls-peer-ca"] == f"{mount['mountPath']}/ca.crt"
    secret = rendered.volume("tls")["secret"]
    assert secret["secretName"] == "sluice-tls"
    assert {i["key"] for i in secret["items"]} == {"tls.crt", "tls.key", "ca.crt"}
    assert secret["defaultMode"] & 0o007 == 0, "no access for others"
    assert "https://sluice.kinesis.svc:4567" in rendered.notes


def test_mutual_tls_is_optional() -> None:
    rendered = render({"tls": {"enabled": True, "secretName": "s", "clientCA": False}})
    assert "--tls-cert" in rendered.args
    assert "--tls-client-ca" not in rendered.args
    # A single node dials no peers: no CA needed, so a Secret without ca.crt still mounts.
    assert "--tls-peer-ca" not in rendered.args
    assert {i["key"] for i in rendered.volume("tls")["secret"]["items"]} == {"tls.crt", "tls.key"}
    assert "Nodes call each other over TLS" not in rendered.notes


def test_a_tls_cluster_verifies_peers_against_the_secrets_ca() -> None:
    rendered = render(
        {"replicaCount": 3, "tls": {"enabled": True, "secretName": "s", "clientCA": False}}
    )
    args = rendered.args
    mount = rendered.mount("tls")["mountPath"]
    assert args[args.index("--tls-peer-ca") + 1] == f"{mount}/ca.crt"
    assert "--tls-client-ca" not in args
    items = {i["key"]: i["path"] for i in rendered.volume("tls")["secret"]["items"]}
    assert items == {"tls.crt": "tls.crt", "tls.key": "tls.key", "ca.crt": "ca.crt"}
    # Peers dial the pods' names under the headless Service: the notes say which SAN covers them.
    advertised = rendered.env["SLUICE_ADVERTISE_GRPC_ADDR"]["value"]
    assert advertised == "$(POD_NAME).sluice-headless.kinesis.svc:50051"
    assert "*.sluice-headless.kinesis.svc" in rendered.notes
    assert "server auth and client auth" in rendered.notes


def test_a_tls_cluster_without_a_peer_ca_is_refused() -> None:
    with pytest.raises(helm_python.HelmError, match="peerCA"):
        render({"replicaCount": 3, "tls": {"enabled": True, "secretName": "s", "peerCA": False}})
    # One node needs none.
    single = render({"tls": {"enabled": True, "secretName": "s", "peerCA": False}})
    assert "--tls-peer-ca" not in single.args


# --- zones ------------------------------------------------------------------------------


def test_zone_from_node_reads_the_node_label_with_a_read_only_cluster_role(
    rendered_sets: dict[str, Rendered],
) -> None:
    rendered = rendered_sets["five-tls"]
    env = rendered.env
    assert env["SLUICE_ZONE_FROM_NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "SLUICE_ZONE" not in env
    assert rendered.pod["automountServiceAccountToken"] is True
    role = rendered.one("ClusterRole")
    assert role["metadata"]["name"] == "kinesis-sluice-node-reader"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": rendered.pod["serviceAccountName"], "namespace": "kinesis"}
    ]
    assert rendered.one("ServiceAccount")["metadata"]["name"] == rendered.pod["serviceAccountName"]


def test_without_zone_discovery_no_token_and_no_cluster_role(
    rendered_sets: dict[str, Rendered],
) -> None:
    for name in ("defaults", "single"):
        rendered = rendered_sets[name]
        assert rendered.pod["automountServiceAccountToken"] is False, name
        assert rendered.all("ClusterRole") == [] and rendered.all("ClusterRoleBinding") == [], name
        assert "SLUICE_ZONE_FROM_NODE" not in rendered.env, name
    # A configured zone wins: nothing to discover.
    both = render({"zone": "eu-west-1a", "zoneFromNode": True})
    assert both.env["SLUICE_ZONE"]["value"] == "eu-west-1a"
    assert "SLUICE_ZONE_FROM_NODE" not in both.env
    assert both.all("ClusterRole") == []
    assert both.pod["automountServiceAccountToken"] is False


# --- monitoring and ingress -------------------------------------------------------------


def test_service_monitor_scrapes_metrics_on_the_kinesis_port(
    rendered_sets: dict[str, Rendered],
) -> None:
    assert rendered_sets["defaults"].maybe("ServiceMonitor") is None
    rendered = rendered_sets["five-tls"]
    monitor = rendered.one("ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "kinesis"
    assert endpoint["path"] == "/metrics"
    assert endpoint["scheme"] == "https"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    client = rendered.one("Service", "sluice")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= client["metadata"]["labels"].items()
    assert "kinesis" in {p["name"] for p in client["spec"]["ports"]}
    plain = render({"serviceMonitor": {"enabled": True}}).one("ServiceMonitor")
    assert plain["spec"]["endpoints"][0]["scheme"] == "http"


def test_ingress_routes_to_the_kinesis_port(rendered_sets: dict[str, Rendered]) -> None:
    assert rendered_sets["defaults"].maybe("Ingress") is None
    ingress = rendered_sets["five-tls"].one("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "kinesis.example.com"
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": "sluice", "port": {"name": "kinesis"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"][0]["secretName"] == "kinesis-example-tls"


# --- encryption keyring -----------------------------------------------------------------


def test_keyring_from_a_secret_is_copied_to_a_private_file(rendered_sets: dict[str, Rendered]) -> None:
    default = rendered_sets["defaults"]
    assert "--keyring" not in default.args
    assert "initContainers" not in default.pod

    rendered = rendered_sets["single"]
    keyring_path = rendered.args[rendered.args.index("--keyring") + 1]
    keyring_dir = keyring_path.rsplit("/", 1)[0]
    assert rendered.mount("keyring")["mountPath"] == keyring_dir
    assert rendered.volume("keyring")["emptyDir"]["medium"] == "Memory"
    secret = rendered.volume("keyring-secret")["secret"]
    assert secret["secretName"] == "sluice-keyring"
    assert rendered.mount("keyring-secret") is None, "the node reads only the private copy"
    (init,) = rendered.pod["initContainers"]
    assert rendered.mount("keyring", init)["mountPath"] == keyring_dir
    source = rendered.mount("keyring-secret", init)["mountPath"]
    script = init["command"][-1]
    assert f"cp {source}/keyring.json {keyring_path}" in script
    assert f"chmod 0600 {keyring_path}" in script
