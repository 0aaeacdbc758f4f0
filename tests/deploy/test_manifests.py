"""deploy/: every overlay renders with `kubectl kustomize`, validates, and agrees with the code.

- Kubernetes kinds against their OpenAPI schemas (kubernetes-validate, strict: unknown fields
  fail) for the oldest and the newest Kubernetes we name.
- The RayCluster against KubeRay v1.7.1's ray.io/v1 (kuberay_v1.py), its pod templates against
  Kubernetes' PodTemplateSpec.
- The contract with the code: PDISTILL_* variables are fields of orchestrator.settings.Settings
  and load into it; ports, Service and probes meet `pdistill serve`; image tags carry the pinned
  Ray, Python 3.11 and pdistill versions; GPUs only where Ray Train needs them.
"""

from __future__ import annotations

import copy
import os
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from kuberay_v1 import RayCluster, pod_templates
from pydantic import ValidationError
from rendered import (
    SECRET_NAME,
    SECRETS_EXAMPLE,
    VAR_REF,
    Rendered,
    pinned,
    project_version,
    read_env_file,
    render,
)
from rendered import overlays as list_overlays

from orchestrator.settings import Settings

# The oldest Kubernetes these manifests are meant for, and the newest schema bundled.
K8S_VERSIONS = ("1.31", kubernetes_validate.utils.latest_version())
OVERLAYS = list_overlays()
PYTHON_TAG = "py311"
GPU = "nvidia.com/gpu"


@pytest.fixture(params=OVERLAYS, scope="module")
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(request.param)


def settings_for(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as the process in a container with environment `env` reads them."""
    for key in list(os.environ):
        if key.upper().startswith("PDISTILL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def k8s_validate(obj: dict, version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


# --- rendering and schemas ----------------------------------------------------------------


def test_overlays_are_dev_and_prod() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


def test_overlay_renders_the_whole_system(rendered: Rendered) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered.objects}
    for expected in [
        ("RayCluster", "pdistill-ray"),
        ("Deployment", "pdistill-api"),
        ("Service", "pdistill-api"),
        ("PodDisruptionBudget", "pdistill-api"),
        ("Deployment", "pdistill-mlflow"),
        ("Service", "pdistill-mlflow"),
        ("ConfigMap", "pdistill-config"),
    ]:
        assert expected in kinds, f"{rendered.overlay}: {expected} missing"
    namespaces = {
        o["metadata"].get("namespace") for o in rendered.objects if o["kind"] != "Namespace"
    }
    assert len(namespaces) == 1 and None not in namespaces, namespaces


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_match_kubernetes_schemas(rendered: Rendered, version: str) -> None:
    for obj in rendered.objects:
        if obj["apiVersion"].startswith("ray.io/"):
            continue
        where = f"{rendered.overlay}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            k8s_validate(obj, version)
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: no Kubernetes {version} schema: {exc.message}")
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} against Kubernetes {version}: {path}: {exc.message}")


def test_raycluster_matches_kuberay_v1(rendered: Rendered) -> None:
    rc = rendered.raycluster
    RayCluster.model_validate(rc)
    for part, template in pod_templates(rc).items():
        for version in K8S_VERSIONS:
            try:
                k8s_validate(template, version)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{rendered.overlay}: RayCluster {part}: {path}: {exc.message}")


def _mutated(obj: dict, edit) -> dict:
    out = copy.deepcopy(obj)
    edit(out)
    return out


def _head(rc: dict) -> dict:
    return rc["spec"]["headGroupSpec"]


def _group(rc: dict, i: int) -> dict:
    return rc["spec"]["workerGroupSpecs"][i]


BROKEN_RAYCLUSTERS = {
    "ray start param not a string": lambda rc: _head(rc)["rayStartParams"].update({"num-cpus": 0}),
    "unknown field": lambda rc: rc["spec"].update({"workerGroupSpec": []}),
    "group without a name": lambda rc: _group(rc, 0).pop("groupName"),
    "min above max": lambda rc: _group(rc, 1).update({"minReplicas": 99}),
    "replicas above max": lambda rc: _group(rc, 1).update({"replicas": 99}),
    "duplicate group": lambda rc: rc["spec"]["workerGroupSpecs"].append(_group(rc, 0)),
    "autoscaler version v3": lambda rc: rc["spec"]["autoscalerOptions"].update({"version": "v3"}),
    "v2 asked for twice": lambda rc: _head(rc)["template"]["spec"]["containers"][0]["env"].append(
        {"name": "RAY_enable_autoscaler_v2", "value": "1"}
    ),
    "worker restarts in place": lambda rc: _group(rc, 1)["template"]["spec"].update(
        {"restartPolicy": "Always"}
    ),
    "wrong API version": lambda rc: rc.update({"apiVersion": "ray.io/v1alpha1"}),
}


@pytest.mark.parametrize("case", sorted(BROKEN_RAYCLUSTERS))
def test_kuberay_check_rejects(case: str) -> None:
    with pytest.raises(ValidationError):
        RayCluster.model_validate(_mutated(render("dev").raycluster, BROKEN_RAYCLUSTERS[case]))


def test_kubernetes_check_rejects_a_broken_pod_template() -> None:
    bad = _mutated(
        render("dev").raycluster,
        lambda rc: rc["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0].update(
            {"resource": {}}
        ),
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(pod_templates(bad)["worker group gpu"], K8S_VERSIONS[0])
    deployment = _mutated(
        render("dev").get("Deployment", "pdistill-api"),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(
            {"containerPort": "8000"}
        ),
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(deployment, K8S_VERSIONS[0])


# --- the RayCluster's shape ---------------------------------------------------------------


def test_head_runs_no_work_and_holds_no_gpu(rendered: Rendered) -> None:
    head = rendered.raycluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    # The dashboard serves the state API that frees a stopped Tune trial's workers (DESIGN.md).
    assert head["rayStartParams"].get("include-dashboard", "true") != "false"
    for c in head["template"]["spec"]["containers"]:
        for part in ("requests", "limits"):
            assert GPU not in c.get("resources", {}).get(part, {}), f"head {part} a GPU"
    assert "num-gpus" not in head["rayStartParams"] or head["rayStartParams"]["num-gpus"] == "0"


def test_gpu_group_requests_gpus_and_scales_from_zero(rendered: Rendered) -> None:
    gpu = rendered.worker_group("gpu")
    (container,) = gpu["template"]["spec"]["containers"]
    resources = container["resources"]
    assert int(resources["limits"][GPU]) >= 1
    assert resources["requests"][GPU] == resources["limits"][GPU]
    assert gpu["minReplicas"] == 0 and gpu.get("replicas", 0) == 0
    assert gpu["maxReplicas"] >= 1
    assert gpu["template"]["spec"].get("tolerations"), "GPU nodes are usually tainted"


def test_only_the_gpu_group_asks_for_gpus(rendered: Rendered) -> None:
    for c in rendered.containers():
        if "worker group gpu" in c.where:
            continue
        for part in ("requests", "limits"):
            assert GPU not in c.spec.get("resources", {}).get(part, {}), c.where


def test_autoscaling_is_v2_with_an_idle_timeout(rendered: Rendered) -> None:
    spec = rendered.raycluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0


def test_dev_has_few_gpus_and_prod_more() -> None:
    dev = render("dev").worker_group("gpu")["maxReplicas"]
    prod = render("prod").worker_group("gpu")["maxReplicas"]
    assert 1 <= dev <= 2
    assert prod > dev


# --- the contract with the code -----------------------------------------------------------


def test_every_pdistill_variable_is_a_settings_field(rendered: Rendered) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for c in rendered.containers():
        for name in rendered.env(c):
            if name.startswith("PDISTILL_"):
                assert name.removeprefix("PDISTILL_") in fields, f"{c.where}: {name}"
    for name in rendered.config_data("pdistill-config"):
        if name.startswith("PDISTILL_"):
            assert name.removeprefix("PDISTILL_") in fields, f"pdistill-config: {name}"


def test_api_settings_load_and_meet_the_cluster(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = rendered.container("Deployment", "pdistill-api", "api")
    settings = settings_for(rendered.env(api), monkeypatch)
    assert settings.api_host == "0.0.0.0"
    assert api.port("http") == settings.api_port
    # The Ray Client port of the head service that KubeRay makes for the RayCluster.
    ray = urlsplit(settings.ray_address or "")
    assert ray.scheme == "ray"
    assert ray.hostname == f"{rendered.raycluster['metadata']['name']}-head-svc"
    head = rendered.container("RayCluster", rendered.raycluster["metadata"]["name"], "ray-head")
    assert ray.port == head.port("client")
    # MLflow's Service, on the port the server listens on; never the file store.
    mlflow = urlsplit(settings.mlflow_tracking_uri)
    assert mlflow.scheme == "http"
    service = rendered.get("Service", mlflow.hostname or "")
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == mlflow.port]
    server = rendered.container("Deployment", "pdistill-mlflow", "mlflow")
    args = server.spec["args"]
    assert server.port(port["targetPort"]) == int(args[args.index("--port") + 1])
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.storage_uri.startswith("s3://")
    assert settings.admin_token is not None


def test_ray_pods_join_their_cluster(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    for c in rendered.containers():
        if c.where.startswith("RayCluster/"):
            settings = settings_for(rendered.env(c), monkeypatch)
            # Unset would make the campaign driver start a second, local Ray inside the pod.
            assert settings.ray_address == "auto", c.where
            assert settings.storage_uri.startswith("s3://"), c.where
            assert settings.mlflow_tracking_uri.startswith("http://"), c.where


def test_api_service_targets_the_api_port(rendered: Rendered) -> None:
    api = rendered.container("Deployment", "pdistill-api", "api")
    service = rendered.get("Service", "pdistill-api")
    deployment = rendered.get("Deployment", "pdistill-api")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    default_port = Settings.model_fields["api_port"].default
    declared = rendered.env(api).get("PDISTILL_API_PORT", str(default_port))
    assert api.port(port["targetPort"]) == int(declared)


def test_api_probes_hit_healthz_and_readyz(rendered: Rendered) -> None:
    api = rendered.container("Deployment", "pdistill-api", "api")
    port = api.port("http")
    for probe, path in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ]:
        get = api.spec[probe]["httpGet"]
        assert get["path"] == path, probe
        assert api.port(get["port"]) == port, probe


def test_pdb_covers_the_api_and_lets_a_node_drain(rendered: Rendered) -> None:
    pdb = rendered.get("PodDisruptionBudget", "pdistill-api")
    deployment = rendered.get("Deployment", "pdistill-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    replicas = deployment["spec"].get("replicas", 1)
    if "minAvailable" in pdb["spec"]:
        assert int(pdb["spec"]["minAvailable"]) < replicas
    else:
        assert int(pdb["spec"]["maxUnavailable"]) >= 1


def test_mlflow_server_uses_postgres_and_proxies_s3(rendered: Rendered) -> None:
    server = rendered.container("Deployment", "pdistill-mlflow", "mlflow")
    assert server.spec["command"] == ["mlflow"]
    args = server.spec["args"]
    assert args[0] == "server" and "--serve-artifacts" in args
    env = rendered.env(server)

    def arg(flag: str) -> str:
        return VAR_REF.sub(lambda m: env[m[1]], args[args.index(flag) + 1])

    assert arg("--backend-store-uri").startswith("postgresql+psycopg://")
    assert arg("--artifacts-destination").startswith("s3://")
    # Two Alembic histories (pdistill's store and MLflow's) cannot share one database.
    store = urlsplit(rendered.secret_data()["PDISTILL_DATABASE_URL"])
    tracking = urlsplit(arg("--backend-store-uri"))
    assert (store.hostname, store.path) != (tracking.hostname, tracking.path)


def test_dev_postgres_matches_the_urls() -> None:
    dev = render("dev")
    env = dev.env(dev.container("StatefulSet", "pdistill-postgres", "postgres"))
    secrets = dev.secret_data()
    service = dev.get("Service", "pdistill-postgres")
    init = "\n".join(dev.config_data("pdistill-postgres-init").values())
    for key in ("PDISTILL_DATABASE_URL", "MLFLOW_BACKEND_STORE_URI"):
        url = urlsplit(secrets[key])
        assert url.username == env["POSTGRES_USER"], key
        assert url.password == env["POSTGRES_PASSWORD"], key
        assert url.hostname == service["metadata"]["name"], key
        assert url.port == service["spec"]["ports"][0]["port"], key
        database = url.path.lstrip("/")
        assert database == env["POSTGRES_DB"] or f"CREATE DATABASE {database};" in init, key


def test_prod_uses_an_external_postgres() -> None:
    prod = render("prod")
    assert prod.find("StatefulSet", "pdistill-postgres") is None
    assert prod.find("Service", "pdistill-postgres") is None


def test_references_resolve(rendered: Rendered) -> None:
    secret_keys = set(rendered.secret_data())
    for c in rendered.containers():
        defined: set[str] = set()
        for e in c.spec.get("env", []):
            ref = e.get("valueFrom", {})
            if "secretKeyRef" in ref:
                assert ref["secretKeyRef"]["name"] == SECRET_NAME, c.where
                assert ref["secretKeyRef"]["key"] in secret_keys, f"{c.where}: {e['name']}"
            if "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                assert r["key"] in rendered.config_data(r["name"]), f"{c.where}: {e['name']}"
            # The kubelet expands $(VAR) only from variables defined before, in `env`.
            for name in VAR_REF.findall(e.get("value", "")):
                assert name in defined, f"{c.where}: {e['name']} uses $({name}) before it"
            defined.add(e["name"])
        for source in c.spec.get("envFrom", []):
            if "configMapRef" in source:
                rendered.config_data(source["configMapRef"]["name"])
        for text in c.spec.get("command", []) + c.spec.get("args", []):
            for name in VAR_REF.findall(text):
                assert name in defined, f"{c.where}: $({name}) is not in env"
        for volume in c.pod.get("volumes", []):
            if "configMap" in volume:
                rendered.get("ConfigMap", volume["configMap"]["name"])


def test_dev_secret_has_the_documented_keys() -> None:
    dev = render("dev")
    assert dev.find("Secret", SECRET_NAME) is not None
    assert set(dev.secret_data()) == set(read_env_file(SECRETS_EXAMPLE))


def test_prod_leaves_the_secret_to_the_operator() -> None:
    # Applying prod must never overwrite real credentials with placeholders.
    assert render("prod").find("Secret", SECRET_NAME) is None


def test_image_tags_carry_the_pinned_versions(rendered: Rendered) -> None:
    ray = pinned("ray")
    version = project_version()
    assert rendered.raycluster["spec"]["rayVersion"] == ray
    for c in rendered.containers():
        repo, _, tag = c.spec["image"].rpartition(":")
        if c.where.startswith("RayCluster/"):
            assert repo.endswith("/pdistill-ray"), c.where
            assert tag == f"{version}-ray{ray}-{PYTHON_TAG}-gpu", c.where
        elif repo.endswith("/pdistill-api"):
            assert tag == f"{version}-{PYTHON_TAG}", c.where
        else:
            assert tag and tag != "latest", f"{c.where}: {c.spec['image']} is not pinned"


def test_every_container_runs_as_a_non_root_user(rendered: Rendered) -> None:
    for c in rendered.containers():
        pod = c.pod.get("securityContext", {})
        own = c.spec.get("securityContext", {})
        assert own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, c.where
        assert own.get("allowPrivilegeEscalation") is False, c.where
