"""deployments/k8s: every manifest is valid for the Kubernetes API (strict schema: an unknown or
misspelt field fails), and the parts fit together: the service's probes and autoscaler, requests
and limits everywhere, references to Secrets, ConfigMaps, volumes and accounts that exist, the
worker's rights. Each deployment of prefect.yaml has a Kubernetes twin whose Job, rendered by
prefect-kubernetes itself from base-job-template.json, is valid too. Offline: the schemas ship
inside kubernetes-validate and the worker's default job template comes from the installed package."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from clip_har.settings import TELEMETRY_OFF, WORK_POOL, Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deployments" / "k8s"
# The oldest and the newest Kubernetes the manifests are checked against (kubernetes-validate
# 1.37.0 ships the schemas of 1.25 to 1.37).
K8S_VERSIONS = ("1.29", "1.37")
NOT_MANIFESTS = ("kustomization.yaml", "prefect.yaml")  # kustomize's and Prefect's own files
SECRET = "clip-har-secrets"  # the one Secret, generated from secrets.env
# Twins whose event trigger (or schedule) is off on Kubernetes: a reload or shadow call would
# reach one replica of the service, whose image holds only its own model (deployments/k8s/prefect.yaml says more).
TRIGGER_OFF_ON_K8S = {"service-reload", "rollout-start"}
SCHEDULE_OFF_ON_K8S = {"rollout-decide"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.y*ml") if p.name not in NOT_MANIFESTS)


@functools.cache
def _resources() -> list[dict[str, Any]]:
    """Every resource of the manifests, parsed once (tests copy before they change one)."""
    return [d for p in _manifest_files() for d in _docs(p)]


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in _resources() if r["kind"] == kind}


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _job_template() -> dict[str, Any]:
    return json.loads((K8S / "base-job-template.json").read_text())


def _prefect_yaml(path: Path) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in yaml.safe_load(path.read_text())["deployments"]}


def _twins() -> dict[str, dict[str, Any]]:
    return _prefect_yaml(K8S / "prefect.yaml")


def _pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod spec: the workloads' and the flow-run Jobs' (the work pool's template)."""
    pods = {
        r["metadata"]["name"]: r["spec"]["template"]["spec"] for r in _resources() if "template" in r.get("spec", {})
    }
    pods["flow-run job"] = _job_template()["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    return pods


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _find(obj: Any, key: str) -> Iterator[Any]:
    """Every value stored under `key`, at any depth."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(obj, list):
        for item in obj:
            yield from _find(item, key)


def _env_file(path: Path) -> dict[str, str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


_UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(value: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * (_UNITS[unit] if unit else 1.0)  # a misspelt unit (2gi) is a KeyError


def _pod_labels() -> list[dict[str, str]]:
    return [r["spec"]["template"]["metadata"]["labels"] for r in _resources() if "template" in r.get("spec", {})]


def _selects_a_pod(match_labels: dict[str, str]) -> bool:
    return any(match_labels.items() <= labels.items() for labels in _pod_labels())


def test_kustomization_applies_every_manifest_here() -> None:
    """A manifest left out of kustomization.yaml is never applied; one listed but gone breaks `apply -k`."""
    kustomization = _kustomization()
    assert sorted(kustomization["resources"]) == [p.name for p in _manifest_files()]
    for generator in kustomization["configMapGenerator"]:
        assert all((K8S / f).is_file() for f in generator["files"]), generator
    (secrets,) = kustomization["secretGenerator"]
    assert secrets["name"] == SECRET and secrets["envs"] == ["secrets.env"]
    # the real secrets never reach git; the example documents every key
    assert "secrets.env" in (K8S / ".gitignore").read_text().split()
    assert (K8S / "secrets.env.example").is_file()


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version: str) -> None:
    failures = []
    for path in _manifest_files():
        for doc in _docs(path):
            try:  # strict: fields the API does not know are errors, not silently dropped
                kubernetes_validate.validate(doc, version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
                failures.append(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    """The check above is worth something only if strict mode rejects what the API would drop."""
    deployment = copy.deepcopy(_named("Deployment")["clip-har-service"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_the_service_probes_livez_and_readyz_on_its_port() -> None:
    (container,) = _named("Deployment")["clip-har-service"]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ports or get["port"] in ports.values(), f"{probe} probes a port the container lacks"
    service = _named("Service")["clip-har-service"]
    assert all(p["targetPort"] in ports for p in service["spec"]["ports"])


def test_every_container_has_cpu_and_memory_requests_within_limits() -> None:
    """Requests let the scheduler place pods (and the autoscaler compute utilisation); limits keep
    one pod from starving a node."""
    for name, pod in _pod_specs().items():
        if name == "flow-run job":
            continue  # per deployment, from its job variables: test_flow_run_jobs_render_to_valid_jobs
        for container in _containers(pod):
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request and limit, f"{name}/{container['name']}: {resource} request and limit"
                assert _quantity(request) <= _quantity(limit), f"{name}/{container['name']}: {resource}"


def test_the_autoscaler_scales_the_service_deployment() -> None:
    (hpa,) = _named("HorizontalPodAutoscaler").values()
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "clip-har-service")
    deployment = _named("Deployment")[target["name"]]
    assert "replicas" not in deployment["spec"], "an apply would reset what the autoscaler chose"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # utilisation is relative to the requests: every container of the target needs one
    (metric,) = hpa["spec"]["metrics"]
    resource = metric["resource"]["name"]
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert resource in container["resources"]["requests"]


def test_selectors_select_pods_that_exist() -> None:
    """A selector that matches nothing is silent: a Service with no endpoints, a policy guarding nothing."""
    for r in _resources():
        if "template" in r.get("spec", {}):
            assert r["spec"]["selector"]["matchLabels"].items() <= r["spec"]["template"]["metadata"]["labels"].items()
    for name, service in _named("Service").items():
        assert _selects_a_pod(service["spec"]["selector"]), f"Service {name}"
    for name, policy in _named("NetworkPolicy").items():
        assert _selects_a_pod(policy["spec"]["podSelector"]["matchLabels"]), f"NetworkPolicy {name}"
        for expression in _find(policy["spec"]["ingress"], "matchExpressions"):
            for item in expression:
                assert all(_selects_a_pod({item["key"]: v}) for v in item["values"]), f"NetworkPolicy {name}"
    for name, stateful in _named("StatefulSet").items():
        assert stateful["spec"]["serviceName"] in _named("Service"), name


def test_references_resolve_to_what_is_applied() -> None:
    """A misspelt Secret key, ConfigMap, claim or account fails only at run time, pod by pod."""
    secret_keys = set(_env_file(K8S / "secrets.env.example"))
    config_maps = set(_named("ConfigMap")) | {g["name"] for g in _kustomization()["configMapGenerator"]}
    claims = set(_named("PersistentVolumeClaim"))
    accounts = set(_named("ServiceAccount"))
    templates = {
        n: {t["metadata"]["name"] for t in r["spec"]["volumeClaimTemplates"]} for n, r in _named("StatefulSet").items()
    }
    for name, pod in _pod_specs().items():
        for ref in _find(pod, "secretKeyRef"):
            assert ref["name"] == SECRET and ref["key"] in secret_keys, f"{name}: {ref}"
        for ref in [*_find(pod, "configMapRef"), *_find(pod.get("volumes", []), "configMap")]:
            assert ref["name"] in config_maps, f"{name}: {ref}"
        for ref in _find(pod, "persistentVolumeClaim"):
            assert ref["claimName"] in claims, f"{name}: {ref}"
        account = pod.get("serviceAccountName")
        if account == "{{ service_account_name }}":  # the template's variable: its default
            account = _job_template()["variables"]["properties"]["service_account_name"]["default"]
        assert account is None or account in accounts, f"{name}: {account}"
        volumes = {v["name"] for v in pod.get("volumes", [])} | templates.get(name, set())
        for container in _containers(pod):
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes, f"{name}/{container['name']}"


def test_database_urls_name_the_drivers_and_databases_the_servers_use() -> None:
    """Prefect's server needs an async driver (asyncpg), MLflow a sync one (psycopg, in the image);
    both on the databases the in-cluster PostgreSQL creates, as the user it creates."""
    secrets = _env_file(K8S / "secrets.env.example")
    postgres = _named("StatefulSet")["postgres"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in postgres["env"]}
    init_sql = " ".join(_named("ConfigMap")["postgres-init"]["data"].values())
    for key, driver, database in (
        ("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg", env["POSTGRES_DB"]),
        ("MLFLOW_BACKEND_STORE_URI", "postgresql+psycopg", "mlflow"),
    ):
        url = make_url(secrets[key])
        assert (url.drivername, url.database, url.host) == (driver, database, "postgres"), key
        assert (url.username, url.password) == (secrets["POSTGRES_USER"], secrets["POSTGRES_PASSWORD"]), key
    assert "CREATE DATABASE mlflow" in init_sql
    assert "postgres" in _named("Service")


def test_settings_config_maps_hold_valid_clip_har_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {k: v for m in ("clip-har-settings", "clip-har-pipeline") for k, v in _named("ConfigMap")[m]["data"].items()}
    ours = {k: v for k, v in data.items() if k.startswith("CLIP_HAR_")}
    declared = {env_name(f) for f in Settings.model_fields}
    assert set(ours) <= declared, f"not settings clip-har reads: {set(ours) - declared}"
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()  # a bad value is a SettingsError here, not a crash in the cluster
    assert data.items() >= TELEMETRY_OFF.items(), "telemetry off in the cluster as everywhere"
    service = _named("Service")["clip-har-service"]["spec"]["ports"][0]["port"]
    assert settings.service == f"http://clip-har-service:{service}"
    assert str(settings.home) == _mount_of("clip-har-service", "state")
    assert data["BENTOML_HOME"].startswith(str(settings.home) + "/"), "packaged models on the shared volume"


def _mount_of(deployment: str, volume: str) -> str:
    containers = _named("Deployment")[deployment]["spec"]["template"]["spec"]["containers"]
    return next(m["mountPath"] for c in containers for m in c.get("volumeMounts", []) if m["name"] == volume)


def test_the_prefect_worker_may_create_jobs_and_little_else() -> None:
    worker = _named("Deployment")["prefect-worker"]["spec"]["template"]["spec"]
    (binding,) = _named("RoleBinding").values()
    assert binding["roleRef"]["kind"] == "Role"
    assert {"kind": "ServiceAccount", "name": worker["serviceAccountName"]} in binding["subjects"]
    rules = _named("Role")[binding["roleRef"]["name"]]["rules"]
    allowed = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    needed = {("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")}
    needed |= {("", "pods", v) for v in ("get", "list", "watch")} | {("", "pods/log", "get")}
    assert needed <= allowed, needed - allowed
    assert not any("*" in item for item in allowed), "no wildcards"
    assert not any(r == "secrets" for _, r, _ in allowed), "flow runs get the auth string by reference"
    flow_runs = _named("ServiceAccount")["clip-har-flow-run"]
    assert flow_runs["automountServiceAccountToken"] is False  # flow runs need no cluster API


def test_the_worker_serves_the_pool_of_the_kubernetes_deployments() -> None:
    worker = _named("Deployment")["prefect-worker"]["spec"]["template"]["spec"]
    command = worker["containers"][0]["command"]
    pool = command[command.index("--pool") + 1]
    assert pool != WORK_POOL, "the local process pool is `clip-har up`'s"
    assert {t["work_pool"]["name"] for t in _twins().values()} == {pool}
    (init,) = worker["initContainers"]
    script = init["args"][0]
    assert f"work-pool create {pool} --type kubernetes" in script
    template_path = re.search(r"--base-job-template (\S+)", script).group(1)  # type: ignore[union-attr]
    mount = next(m for m in init["volumeMounts"] if template_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in worker["volumes"] if v["name"] == mount["name"])
    (generator,) = (g for g in _kustomization()["configMapGenerator"] if g["name"] == volume["configMap"]["name"])
    assert Path(template_path).name in generator["files"]
    assert "--prefect-file deployments/k8s/prefect.yaml" in script
    # deploy, flow runs (pull step) and the image agree on where the repo root lies
    workdir = re.search(r"^WORKDIR (\S+)", (ROOT / "deployments/docker/worker.Dockerfile").read_text(), re.M).group(1)  # type: ignore[union-attr]
    pull = yaml.safe_load((K8S / "prefect.yaml").read_text())["pull"]
    assert init["workingDir"] == workdir == pull[0]["prefect.deployments.steps.set_working_directory"]["directory"]


def test_each_process_deployment_has_a_kubernetes_twin() -> None:
    """Same name, entrypoint, parameters, schedules, triggers, limits: only where it runs differs."""
    local, twins = _prefect_yaml(ROOT / "prefect.yaml"), _twins()
    assert set(twins) == set(local)
    for name, dep in local.items():
        twin = {k: v for k, v in twins[name].items() if k != "work_pool"}
        dep = {k: v for k, v in dep.items() if k != "work_pool"}
        if name in TRIGGER_OFF_ON_K8S:
            assert all(t["enabled"] is False for t in twin["triggers"]), name
            twin["triggers"] = [{**t, "enabled": True} for t in twin["triggers"]]
        if name in SCHEDULE_OFF_ON_K8S:
            assert all(s.pop("active") is False for s in twin["schedules"]), name
        assert twin == dep, name


def test_job_variables_are_variables_of_the_pool_template() -> None:
    """A job variable the template does not declare is refused by the server at deploy time; our
    template extends the installed worker's default and drops none of it."""
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    ours = _job_template()
    variables = ours["variables"]["properties"]
    assert set(default["variables"]["properties"]) <= set(variables)
    assert set(default["job_configuration"]) == set(ours["job_configuration"])
    for name, twin in _twins().items():
        assert set(twin["work_pool"]["job_variables"]) <= set(variables), name
    assert variables["namespace"]["default"] == _kustomization()["namespace"]


@pytest.mark.parametrize("name", sorted(_twins()))
def test_flow_run_jobs_render_to_valid_jobs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Job the worker would create for a run of each twin, rendered by prefect-kubernetes."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.utilities.templating import apply_values
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    monkeypatch.setenv("PIPELINE_IMAGE", "registry.example.org/clip-har-worker:1.0")
    # `prefect deploy` fills `{{ $VAR }}` from its environment (the worker's init container)
    job_variables = apply_values(_twins()[name]["work_pool"]["job_variables"], os.environ, remove_notset=False)
    render = KubernetesWorkerJobConfiguration.from_template_and_values
    # no block or variable placeholders in the template: the client is never called
    config = asyncio.run(render(_job_template(), job_variables, client=object()))
    config.prepare_for_flow_run(FlowRun(id=uuid4(), name="calm-otter", flow_id=uuid4()))
    job = copy.deepcopy(config.job_manifest)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.org/clip-har-worker:1.0"
    resources = container["resources"]
    for kind, suffix in (("requests", "request"), ("limits", "limit")):
        for resource in ("cpu", "memory"):
            assert resources[kind][resource] == job_variables[f"{resource}_{suffix}"], (kind, resource)
        assert _quantity(resources["requests"]["cpu"]) <= _quantity(resources["limits"]["cpu"])
    gpus = {resources[kind].get("nvidia.com/gpu") for kind in ("requests", "limits")}
    assert gpus == ({"1"} if name == "training-pipeline" else {None}), "a GPU for training only"
    # prefect-kubernetes insists on these two in the pod spec, where the API server drops them
    pod = job["spec"]["template"]["spec"]
    assert (pod.pop("completions"), pod.pop("parallelism")) == (1, 1)
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (its built-in kustomize)")
def test_the_kustomize_build_is_valid(tmp_path: Path) -> None:
    """What `kubectl apply -k` sends: generated Secret and ConfigMap, namespace and images set."""
    build = tmp_path / "k8s"
    shutil.copytree(K8S, build)
    shutil.copy(build / "secrets.env.example", build / "secrets.env")
    out = subprocess.run(["kubectl", "kustomize", str(build)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert {d["kind"] for d in docs} >= {"Secret", "ConfigMap", "Namespace", "HorizontalPodAutoscaler"}
    namespace = _kustomization()["namespace"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
    (worker,) = (d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "prefect-worker")
    spec = worker["spec"]["template"]["spec"]
    (image,) = (e["value"] for e in spec["initContainers"][0]["env"] if e["name"] == "PIPELINE_IMAGE")
    assert image == spec["containers"][0]["image"], "flow runs run the worker's image"
