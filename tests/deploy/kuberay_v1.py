"""The RayCluster of KubeRay v1.7.1 (ray.io/v1), as the KubeRay API reference defines it.

Only documented fields are accepted (`extra="forbid"`): an unknown field is a typo or a field of
another KubeRay version, to be checked against the reference before it goes into deploy/.
Types are strict (`rayStartParams` is a map of strings: `num-cpus: 0` unquoted is refused, as
the API server would refuse it). Pod templates and the autoscaler container's fields are
Kubernetes types: `pod_templates()` hands them to the Kubernetes schema check.

The validators are the admission rules of the operator that apply to this repository:
- group names are unique, and minReplicas <= replicas <= maxReplicas;
- `autoscalerOptions.version` and the head env `RAY_enable_autoscaler_v2` are not both set
  (the operator rejects a RayCluster that sets both);
- with in-tree autoscaling, a worker pod's restartPolicy, where set, is Never (autoscaler v1
  and v2 both require it).
"""

# Field names are the API's own JSON names (camelCase), so that the models read like the reference.
# ruff: noqa: N815

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

# The operator release whose ray.io/v1 reference these models follow; deploy/ and
# docs/operators.md name the same one (tests check).
KUBERAY_VERSION = "v1.7.1"

Object = dict[str, Any]
MAX_INT32 = 2**31 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AutoscalerOptions(_Strict):
    resources: Object | None = None
    image: StrictStr | None = None
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = None
    securityContext: Object | None = None
    idleTimeoutSeconds: StrictInt | None = Field(default=None, ge=0)
    upscalingMode: Literal["Default", "Aggressive", "Conservative"] | None = None
    version: Literal["v1", "v2"] | None = None
    env: list[Object] | None = None
    envFrom: list[Object] | None = None
    volumeMounts: list[Object] | None = None


class HeadGroupSpec(_Strict):
    template: Object
    headService: Object | None = None
    enableIngress: StrictBool | None = None
    rayStartParams: dict[StrictStr, StrictStr]
    serviceType: Literal["ClusterIP", "NodePort", "LoadBalancer"] | None = None


class WorkerGroupSpec(_Strict):
    suspend: StrictBool | None = None
    groupName: StrictStr = Field(min_length=1)
    replicas: StrictInt | None = Field(default=None, ge=0, le=MAX_INT32)
    minReplicas: StrictInt = Field(default=0, ge=0, le=MAX_INT32)
    maxReplicas: StrictInt = Field(default=MAX_INT32, ge=0, le=MAX_INT32)
    idleTimeoutSeconds: StrictInt | None = Field(default=None, ge=0)
    rayStartParams: dict[StrictStr, StrictStr]
    template: Object
    scaleStrategy: Object | None = None
    numOfHosts: StrictInt | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _replicas_in_range(self) -> WorkerGroupSpec:
        if self.minReplicas > self.maxReplicas:
            raise ValueError(
                f"group {self.groupName}: minReplicas {self.minReplicas} > maxReplicas "
                f"{self.maxReplicas}"
            )
        if self.replicas is not None and not (
            self.minReplicas <= self.replicas <= self.maxReplicas
        ):
            raise ValueError(
                f"group {self.groupName}: replicas {self.replicas} outside "
                f"[{self.minReplicas}, {self.maxReplicas}]"
            )
        return self


class RayClusterSpec(_Strict):
    authOptions: Object | None = None
    suspend: StrictBool | None = None
    managedBy: Literal["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"] | None = None
    autoscalerOptions: AutoscalerOptions | None = None
    headServiceAnnotations: dict[StrictStr, StrictStr] | None = None
    enableInTreeAutoscaling: StrictBool | None = None
    gcsFaultToleranceOptions: Object | None = None
    headGroupSpec: HeadGroupSpec
    rayVersion: StrictStr | None = None
    workerGroupSpecs: list[WorkerGroupSpec] = []

    @model_validator(mode="after")
    def _operator_rules(self) -> RayClusterSpec:
        names = [g.groupName for g in self.workerGroupSpecs]
        if len(names) != len(set(names)):
            raise ValueError(f"worker group names repeat: {names}")
        head_env = {
            e.get("name")
            for c in self.headGroupSpec.template.get("spec", {}).get("containers", [])
            for e in c.get("env", [])
        }
        if (
            self.autoscalerOptions is not None
            and self.autoscalerOptions.version is not None
            and "RAY_enable_autoscaler_v2" in head_env
        ):
            raise ValueError(
                "both autoscalerOptions.version and the head env RAY_enable_autoscaler_v2 "
                "are set; the operator accepts only the former"
            )
        if self.enableInTreeAutoscaling:
            for g in self.workerGroupSpecs:
                policy = g.template.get("spec", {}).get("restartPolicy")
                if policy not in (None, "Never"):
                    raise ValueError(
                        f"group {g.groupName}: restartPolicy {policy!r}; the autoscaler needs Never"
                    )
        return self


class RayCluster(_Strict):
    apiVersion: Literal["ray.io/v1"]
    kind: Literal["RayCluster"]
    metadata: Object
    spec: RayClusterSpec

    @model_validator(mode="after")
    def _named(self) -> RayCluster:
        if not self.metadata.get("name"):
            raise ValueError("metadata.name is required")
        return self


def pod_templates(raycluster: Object) -> dict[str, Object]:
    """Kubernetes `PodTemplate` objects for every Kubernetes-typed part of a RayCluster.

    The head and each worker group's `template`, and the autoscaler container's resources,
    securityContext, env, envFrom and volumeMounts wrapped in a container of a pod template.
    """
    spec = raycluster["spec"]

    def wrap(name: str, template: Object) -> Object:
        return {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": name},
            "template": template,
        }

    out = {"head": wrap("head", spec["headGroupSpec"]["template"])}
    for group in spec.get("workerGroupSpecs", []):
        out[f"worker group {group['groupName']}"] = wrap(group["groupName"], group["template"])
    options = spec.get("autoscalerOptions") or {}
    container: Object = {"name": "autoscaler", "image": options.get("image", "autoscaler")}
    keys = ("resources", "securityContext", "env", "envFrom", "volumeMounts", "imagePullPolicy")
    for key in keys:
        if key in options:
            container[key] = options[key]
    out["autoscaler"] = wrap("autoscaler", {"spec": {"containers": [container]}})
    return out
