"""An offline structural check of the Kubernetes objects we render (no cluster, no network).

`kubernetes-validate` is not installable here (and needs its schema bundle); this checks what
kubectl's schema would reject in our manifests: known apiVersion/kind pairs, DNS-1123 names,
unknown fields in pod, container and probe specs, selectors that match their template, env
entries with exactly one source, mounts of declared volumes, quantities, access modes.
"""

from __future__ import annotations

import re
from typing import Any

KINDS = {
    "v1": {"ConfigMap", "Secret", "Service", "PersistentVolumeClaim"},
    "apps/v1": {"Deployment", "StatefulSet"},
    "kustomize.config.k8s.io/v1beta1": {"Kustomization"},
}
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
POD_FIELDS = {
    "containers",
    "volumes",
    "terminationGracePeriodSeconds",
    "nodeSelector",
    "tolerations",
    "affinity",
    "serviceAccountName",
    "securityContext",
    "initContainers",
}
CONTAINER_FIELDS = {
    "name",
    "image",
    "args",
    "command",
    "env",
    "envFrom",
    "ports",
    "volumeMounts",
    "resources",
    "startupProbe",
    "readinessProbe",
    "livenessProbe",
    "securityContext",
    "workingDir",
    "imagePullPolicy",
}
PROBE_FIELDS = {
    "exec",
    "httpGet",
    "tcpSocket",
    "grpc",
    "periodSeconds",
    "timeoutSeconds",
    "failureThreshold",
    "successThreshold",
    "initialDelaySeconds",
}
VOLUME_SOURCES = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "hostPath"}
ACCESS_MODES = {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"}


def _pod(spec: dict[str, Any], where: str, errors: list[str], claims: tuple[str, ...] = ()) -> None:
    errors += [f"{where}: unknown pod field {k}" for k in set(spec) - POD_FIELDS]
    volumes: dict[str, Any] = dict.fromkeys(claims)  # a StatefulSet's volumeClaimTemplates
    for v in spec.get("volumes", []):
        sources = set(v) - {"name"}
        if len(sources) != 1 or not sources <= VOLUME_SOURCES:
            errors.append(f"{where}: volume {v.get('name')} needs exactly one source, has {sorted(sources)}")
        volumes[v.get("name")] = v
    if not spec.get("containers"):
        errors.append(f"{where}: no containers")
    for c in spec.get("containers", []):
        cw = f"{where}.containers[{c.get('name')}]"
        errors += [f"{cw}: unknown field {k}" for k in set(c) - CONTAINER_FIELDS]
        if not (isinstance(c.get("name"), str) and NAME.match(c["name"]) and isinstance(c.get("image"), str)):
            errors.append(f"{cw}: name and image are required")
        for key in ("args", "command"):
            if key in c and not all(isinstance(a, str) for a in c[key]):
                errors.append(f"{cw}.{key}: strings only")
        for e in c.get("env", []):
            if not isinstance(e.get("name"), str) or len({"value", "valueFrom"} & set(e)) != 1:
                errors.append(f"{cw}.env {e}: a name and exactly one of value/valueFrom")
        for m in c.get("volumeMounts", []):
            if m.get("name") not in volumes or not str(m.get("mountPath", "")).startswith("/"):
                errors.append(f"{cw}: mount {m} of an undeclared volume or a relative path")
        for kind, amounts in c.get("resources", {}).items():
            if kind not in ("limits", "requests"):
                errors.append(f"{cw}.resources: unknown {kind}")
            for name, q in amounts.items():
                if not QUANTITY.match(str(q)):
                    errors.append(f"{cw}.resources.{kind}.{name}: {q!r} is not a quantity")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in c:
                p = c[probe]
                errors += [f"{cw}.{probe}: unknown field {k}" for k in set(p) - PROBE_FIELDS]
                if len({"exec", "httpGet", "tcpSocket", "grpc"} & set(p)) != 1:
                    errors.append(f"{cw}.{probe}: exactly one handler")


def _workload(doc: dict[str, Any], where: str, errors: list[str]) -> None:
    spec = doc.get("spec", {})
    template = spec.get("template", {})
    selector = spec.get("selector", {}).get("matchLabels", {})
    labels = template.get("metadata", {}).get("labels", {})
    if not selector or not selector.items() <= labels.items():
        errors.append(f"{where}: spec.selector.matchLabels must match the template's labels")
    if not isinstance(spec.get("replicas", 1), int) or spec.get("replicas", 1) < 0:
        errors.append(f"{where}: replicas must be a non-negative integer")
    strategy = spec.get("strategy", {}).get("type", "RollingUpdate")
    if doc["kind"] == "Deployment" and strategy not in ("Recreate", "RollingUpdate"):
        errors.append(f"{where}: strategy {strategy}")
    if doc["kind"] == "StatefulSet" and not spec.get("serviceName"):
        errors.append(f"{where}: a StatefulSet needs serviceName")
    claims = tuple(t.get("metadata", {}).get("name") for t in spec.get("volumeClaimTemplates", []))
    _pod(template.get("spec", {}), f"{where}.spec.template.spec", errors, claims)


def check(doc: dict[str, Any]) -> list[str]:
    """Everything wrong with one object (empty when it would pass the API server's schema)."""
    errors: list[str] = []
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if kind not in KINDS.get(api, set()):
        return [f"unknown apiVersion/kind {api}/{kind}"]
    if kind == "Kustomization":
        return [] if isinstance(doc.get("resources"), list) else ["Kustomization: resources must be a list"]
    name = doc.get("metadata", {}).get("name", "")
    where = f"{kind}/{name}"
    if not NAME.match(name):
        errors.append(f"{where}: metadata.name is not a DNS-1123 label")
    for k, v in doc.get("metadata", {}).get("labels", {}).items():
        if not isinstance(v, str) or len(v) > 63:
            errors.append(f"{where}: label {k}={v!r}")
    if kind in ("Deployment", "StatefulSet"):
        _workload(doc, where, errors)
    elif kind == "PersistentVolumeClaim":
        spec = doc.get("spec", {})
        if not spec.get("accessModes") or not set(spec["accessModes"]) <= ACCESS_MODES:
            errors.append(f"{where}: accessModes {spec.get('accessModes')}")
        if not QUANTITY.match(str(spec.get("resources", {}).get("requests", {}).get("storage", ""))):
            errors.append(f"{where}: resources.requests.storage is required")
    elif kind in ("Secret", "ConfigMap"):
        data = doc.get("stringData" if kind == "Secret" else "data", {})
        if not data or not all(isinstance(v, str) for v in data.values()):
            errors.append(f"{where}: string data required")
    elif kind == "Service":
        for p in doc.get("spec", {}).get("ports", []):
            if not isinstance(p.get("port"), int):
                errors.append(f"{where}: port must be an integer")
    return errors
