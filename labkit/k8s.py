"""Kubernetes manifests, checked offline.

The course's manifests are real YAML files in ``book/manifests/``. :func:`validate_file`
checks every document in a file without a cluster: core kinds (Deployment, Service, PVC...)
against the official OpenAPI schemas bundled in ``kubernetes-validate``, in strict mode
(unknown fields are errors, as a typo would be); custom resources (Karpenter NodePool,
KubeRay RayCluster...) against a JSON schema of the fields the course uses, kept in
``labkit/data/crd_schemas/<kind>.json`` and written from the project's API reference, with every
Pod template inside them checked against the core schema too. Core kinds are checked against two
Kubernetes versions (:func:`checked_versions`): the oldest one Amazon EKS still has in standard
support, and the newest whose schemas the pinned ``kubernetes-validate`` ships.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

#: The oldest Kubernetes minor version in Amazon EKS standard support at the course date (checked
#: 2026-12-05 against the EKS version calendar, docs.aws.amazon.com/eks/latest/userguide/
#: kubernetes-versions.html: 1.34 left standard support on 2026-12-02; 1.35 is in standard support
#: until 2027-03-27). Manifests must work on every cluster still in standard support.
EKS_OLDEST_STANDARD = "1.35"
#: Kept for code written against earlier versions of the course (the oldest version checked).
K8S_VERSION = EKS_OLDEST_STANDARD


def newest_schema_version() -> str:
    """The newest Kubernetes minor version whose strict schemas ``kubernetes-validate`` ships."""
    import kubernetes_validate

    return kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version())


def checked_versions() -> tuple[str, ...]:
    """The Kubernetes versions every manifest is validated against: the oldest EKS standard-support
    version and the newest schema the pinned ``kubernetes-validate`` ships (one entry if equal)."""
    newest = newest_schema_version()
    return (EKS_OLDEST_STANDARD,) if newest == EKS_OLDEST_STANDARD else (EKS_OLDEST_STANDARD, newest)

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


def parse_quantity(quantity: str | int | float) -> float:
    """A Kubernetes resource quantity as a number: ``"16Gi"`` -> 17179869184, ``"500m"`` -> 0.5.

    Raises ValueError for anything Kubernetes would reject, naming the allowed suffixes.
    """
    if isinstance(quantity, (int, float)) and not isinstance(quantity, bool):
        return float(quantity)
    match = _QUANTITY.match(str(quantity).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}; write a number with an optional "
                         f"suffix ({', '.join(s for s in _SUFFIX if s)}), e.g. '16Gi' or '500m'")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def load_manifests(path: str | Path) -> list[dict]:
    """Every non-empty YAML document in ``path``."""
    import yaml

    text = Path(path).read_text()
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc]
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err


def crd_schema(kind: str) -> dict | None:
    """The course's JSON schema for a custom resource ``kind``, or None if it has none."""
    name = f"{kind.lower()}.json"
    ref = resources.files("labkit") / "data" / "crd_schemas" / name
    return json.loads(ref.read_text()) if ref.is_file() else None


def validate_manifest(doc: dict, k8s_version: str | None = None) -> str:
    """Validate one manifest document; return how (``"kubernetes 1.35, 1.37 strict"`` or ``"crd schema"``).

    Core kinds are checked against every version in :func:`checked_versions` (or only
    ``k8s_version`` when given), so an API removed in a newer release or not yet served by the
    oldest supported EKS version is caught. Raises ValueError naming the document, the Kubernetes
    version, the field path and the problem.
    """
    import jsonschema
    import kubernetes_validate

    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        raise ValueError("a manifest needs 'apiVersion' and 'kind' at its top level")
    label = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
    versions = (k8s_version,) if k8s_version else checked_versions()
    try:
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = ".".join(str(p) for p in err.path) or "(top level)"
                raise ValueError(f"{label}: kubernetes {version}: {path}: {err.message}") from None
        return f"kubernetes {', '.join(versions)} strict"
    except kubernetes_validate.SchemaNotFoundError:
        schema = crd_schema(doc["kind"])
        if schema is None:
            raise ValueError(f"{label}: no schema for {doc['apiVersion']} {doc['kind']}; it is not a core "
                             "Kubernetes kind, so add a JSON schema to labkit/data/crd_schemas/"
                             f"{doc['kind'].lower()}.json") from None
        try:
            jsonschema.Draft202012Validator(schema).validate(doc)
        except jsonschema.ValidationError as err:
            path = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            raise ValueError(f"{label}: {path}: {err.message}") from None
        for path, template in embedded_pod_templates(doc):
            wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                       "template": template}
            for version in versions:
                try:
                    kubernetes_validate.validate(wrapper, version, strict=True)
                except kubernetes_validate.ValidationError as err:
                    inner = ".".join(str(p) for p in list(err.path)[1:])
                    raise ValueError(f"{label}: kubernetes {version}: {path}.{inner}: "
                                     f"{err.message}") from None
        return "crd schema"


#: keys under which a custom resource embeds a Pod template (``template`` in Jobs, PyTorchJob,
#: RayCluster ..., and LeaderWorkerSet's ``leaderTemplate`` / ``workerTemplate``)
POD_TEMPLATE_KEYS = ("template", "leaderTemplate", "workerTemplate")


def embedded_pod_templates(doc: dict, path: str = "") -> list[tuple[str, dict]]:
    """Every Pod template inside a custom resource (a :data:`POD_TEMPLATE_KEYS` value whose
    ``spec`` has ``containers``), with its dotted path: these are checked against the core
    PodTemplateSpec schema in strict mode, on top of the course's CRD schema."""
    found = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            where = f"{path}.{key}" if path else str(key)
            if (key in POD_TEMPLATE_KEYS and isinstance(value, dict)
                    and isinstance(value.get("spec"), dict) and "containers" in value["spec"]):
                found.append((where, value))
            else:
                found.extend(embedded_pod_templates(value, where))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found.extend(embedded_pod_templates(value, f"{path}.{i}"))
    return found


def validate_file(path: str | Path, k8s_version: str | None = None) -> list[str]:
    """Validate every document of a manifest file; return ``["Kind/name", ...]``.

    Raises ValueError on the first problem, naming the file.
    """
    docs = load_manifests(path)
    if not docs:
        raise ValueError(f"{path}: no Kubernetes documents in this file")
    checked = []
    for doc in docs:
        try:
            validate_manifest(doc, k8s_version)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        checked.append(f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}")
    return checked
