"""Render the kustomize overlays under deploy/ with `kubectl kustomize` and look inside them."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS_DIR = REPO / "deploy" / "overlays"
SECRETS_EXAMPLE = REPO / "deploy" / "secrets.env.example"
SECRET_NAME = "pdistill-secrets"
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Object = dict[str, Any]


@dataclass(frozen=True)
class Container:
    """One container of a rendered pod template, and where it sits."""

    where: str  # e.g. "Deployment/pdistill-api" or "RayCluster/pdistill-ray worker group gpu"
    pod: Object  # the pod spec
    spec: Object  # the container

    def port(self, name_or_number: str | int) -> int:
        for p in self.spec.get("ports", []):
            if name_or_number in (p.get("name"), p["containerPort"]):
                return int(p["containerPort"])
        raise KeyError(f"{self.where}: no port {name_or_number!r}")


@dataclass(frozen=True)
class Rendered:
    overlay: str
    objects: list[Object]

    def of_kind(self, kind: str) -> list[Object]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Object:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: {len(found)} {kind}/{name}"
        return found[0]

    def find(self, kind: str, name: str) -> Object | None:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found[0] if found else None

    @property
    def raycluster(self) -> Object:
        (rc,) = self.of_kind("RayCluster")
        return rc

    def worker_group(self, name: str) -> Object:
        groups = [g for g in self.raycluster["spec"]["workerGroupSpecs"] if g["groupName"] == name]
        assert len(groups) == 1, f"{self.overlay}: worker group {name!r} x{len(groups)}"
        return groups[0]

    def containers(self) -> list[Container]:
        out = []
        for obj in self.objects:
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            pods: list[tuple[str, Object]] = []
            if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                pods.append((where, obj["spec"]["template"]["spec"]))
            elif obj["kind"] == "RayCluster":
                spec = obj["spec"]
                pods.append((f"{where} head", spec["headGroupSpec"]["template"]["spec"]))
                for g in spec.get("workerGroupSpecs", []):
                    pods.append((f"{where} worker group {g['groupName']}", g["template"]["spec"]))
            for place, pod in pods:
                for c in pod.get("initContainers", []) + pod["containers"]:
                    out.append(Container(f"{place} container {c['name']}", pod, c))
        return out

    def container(self, kind: str, name: str, container: str) -> Container:
        prefix = f"{kind}/{name} "
        found = [
            c
            for c in self.containers()
            if c.where.startswith(prefix) and c.spec["name"] == container
        ]
        assert len(found) == 1, f"{self.overlay}: {prefix}container {container} x{len(found)}"
        return found[0]

    def secret_data(self) -> dict[str, str]:
        """The keys of pdistill-secrets: rendered here (dev) or made by the operator (prod)."""
        secret = self.find("Secret", SECRET_NAME)
        if secret is None:
            return read_env_file(SECRETS_EXAMPLE)
        data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        data.update(secret.get("stringData", {}))
        return data

    def config_data(self, name: str) -> dict[str, str]:
        return dict(self.get("ConfigMap", name).get("data", {}))

    def env(self, c: Container) -> dict[str, str]:
        """The environment the kubelet gives container `c`, with $(VAR) references expanded."""
        out: dict[str, str] = {}
        for source in c.spec.get("envFrom", []):
            if "configMapRef" in source:
                out.update(self.config_data(source["configMapRef"]["name"]))
            elif "secretRef" in source:
                assert source["secretRef"]["name"] == SECRET_NAME, source
                out.update(self.secret_data())
        for e in c.spec.get("env", []):
            if "value" in e:
                out[e["name"]] = VAR_REF.sub(lambda m: out.get(m[1], m[0]), e["value"])
            elif "configMapKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["configMapKeyRef"]
                out[e["name"]] = self.config_data(ref["name"])[ref["key"]]
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                assert ref["name"] == SECRET_NAME, ref
                out[e["name"]] = self.secret_data()[ref["key"]]
            else:
                out[e["name"]] = ""  # fieldRef / resourceFieldRef: known only on the node
        return out


def overlays() -> list[str]:
    return sorted(p.parent.name for p in OVERLAYS_DIR.glob("*/kustomization.yaml"))


@cache
def render(overlay: str) -> Rendered:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl is not on PATH: deploy tests render with `kubectl kustomize`")
    proc = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS_DIR / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize deploy/overlays/{overlay} failed:\n{proc.stderr}")
    return Rendered(overlay, [d for d in yaml.safe_load_all(proc.stdout) if d])


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as `kubectl create secret --from-env-file` and kustomize read them."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


@cache
def pyproject() -> Object:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned(package: str) -> str:
    """The exact version pyproject.toml pins for `package` (`name[extras]==X`)."""
    for dep in pyproject()["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==([^\s;]+)", dep.strip())
        if m:
            return m[2]
    raise KeyError(f"pyproject.toml pins no {package}==")


def project_version() -> str:
    return str(pyproject()["project"]["version"])
