"""deploy/k8s/ is valid Kubernetes and its objects fit together, checked without a cluster.

Each manifest is validated against the Kubernetes OpenAPI schemas that the
``kubernetes-validate`` package ships (strict: unknown fields fail, so a typo
such as ``readinesProbe`` is caught), then the cross-references a cluster would
only reveal at run time are checked: selectors, ConfigMap and volume names,
probe ports, and replicas against the partition count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate not installed (pip install -e '.[test]')"
)

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest version the manifests must still apply to
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict]:
    out = {}
    for path in MANIFESTS:
        for doc in load(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out


@pytest.fixture(scope="module")
def deployment(objects) -> dict:
    (dep,) = [o for (kind, _), o in objects.items() if kind == "Deployment"]
    return dep


@pytest.fixture(scope="module")
def config(objects, deployment) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (ref,) = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
    assert ("ConfigMap", ref) in objects, f"the worker reads ConfigMap {ref!r}, which is not in deploy/k8s"
    return objects[("ConfigMap", ref)]["data"]


def worker_container(deployment) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
@pytest.mark.parametrize("version", [KUBERNETES_VERSION, kubernetes_validate.latest_version()])
def test_manifest_validates_against_the_kubernetes_schema(path, version):
    for doc in load(path):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} on Kubernetes {version}: {exc}")


def test_schema_validation_catches_a_misspelt_field(deployment):
    # The strict check above is worth something only if it rejects this.
    broken = json.loads(json.dumps(deployment))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_required_objects_exist(objects):
    kinds = {kind for kind, _ in objects}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)


def test_replicas_do_not_exceed_the_partitions(deployment, config):
    # A consumer group gives each partition to one member: more replicas than
    # partitions leaves the extra ones idle.
    replicas = deployment["spec"]["replicas"]
    assert 1 <= replicas <= int(config["LEPTON_PARTITIONS"])


def test_selectors_match_the_worker_pods(objects, deployment):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    for (kind, name), obj in objects.items():
        if kind == "Service":
            assert matches(obj["spec"]["selector"], pod_labels), f"Service {name} selects no worker pod"
        if kind == "PodDisruptionBudget":
            assert matches(obj["spec"]["selector"]["matchLabels"], pod_labels), f"PDB {name} selects no worker pod"
            assert obj["spec"].get("maxUnavailable") == 1 or obj["spec"].get("minAvailable") is not None


def test_probes_hit_healthz_and_ready_on_the_metrics_port(deployment, config):
    container = worker_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(config["LEPTON_METRICS_PORT"]) in ports.values()
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe not in container:
            continue
        get = container[probe]["httpGet"]
        port = ports.get(get["port"], get["port"])
        assert port == int(config["LEPTON_METRICS_PORT"]), f"{probe} probes port {get['port']}"
        paths[probe] = get["path"]
    assert paths.get("livenessProbe") == "/healthz"
    assert paths.get("readinessProbe") == "/ready"


def test_service_targets_the_metrics_port(objects, deployment):
    names = {p["name"] for p in worker_container(deployment)["ports"]}
    numbers = {p["containerPort"] for p in worker_container(deployment)["ports"]}
    (service,) = [o for (kind, _), o in objects.items() if kind == "Service"]
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert target in names or target in numbers, f"Service port {port} targets nothing on the worker"


def test_volumes_and_claims_exist(objects):
    for (kind, name), obj in objects.items():
        pod = obj["spec"]["template"]["spec"] if kind in ("Deployment", "Job") else None
        if pod is None:
            continue
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{kind}/{name}: mounts undeclared volume {mount['name']}"
        for volume in volumes.values():
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim:
                assert ("PersistentVolumeClaim", claim) in objects, f"{kind}/{name}: no PVC {claim}"


def test_every_pipeline_a_worker_runs_has_a_trainer(objects, config):
    from streams.app import PIPELINE_FACTORIES

    pipelines = json.loads(config["LEPTON_PIPELINES"])
    assert sorted(pipelines) == sorted(PIPELINE_FACTORIES)
    trained = {
        tuple(c["args"][:2])
        for (kind, _), obj in objects.items() if kind == "Job"
        for c in obj["spec"]["template"]["spec"]["containers"]
    }
    for pipeline in pipelines:
        assert ("train", pipeline) in trained, f"no Job container runs `lepton train {pipeline}`"


def test_worker_and_trainer_share_the_models_directory(objects, config):
    models = str(Path(config["LEPTON_HOME"]) / "models")
    claims = []
    for (kind, name), obj in objects.items():
        if kind not in ("Deployment", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            (mount,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == models]
            claims.append(volumes[mount["name"]]["persistentVolumeClaim"]["claimName"])
    assert len(set(claims)) == 1, f"workers and trainers mount different models volumes: {claims}"


def test_worker_runs_one_process_per_core(deployment, config):
    container = worker_container(deployment)
    assert container["resources"]["requests"]["cpu"] in ("1", 1, "1000m")
    assert config.get("LEPTON_ONNX_THREADS", "1") == "1"


def test_config_keys_are_lepton_settings(config):
    from streams.settings import Settings

    fields = set(Settings.model_fields)
    for key in config:
        assert key.startswith("LEPTON_") and key[len("LEPTON_"):].lower() in fields, f"{key} is not a Lepton setting"


def test_image_is_the_one_compose_builds(objects):
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    image = compose["services"]["worker"]["image"]
    for (kind, name), obj in objects.items():
        if kind in ("Deployment", "Job"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                assert container["image"] == image, f"{kind}/{name} runs {container['image']}, compose builds {image}"
