"""Kubernetes manifests, checked offline.

The course's manifests are real YAML files in ``book/manifests/``. :func:`validate_file`
checks every document in a file without a cluster: core kinds (Deployment, Service, PVC...)
against the official OpenAPI schemas bundled in ``kubernetes-validate``, in strict mode
(unknown fields are errors, as a typo would be); custom resources (Karpenter NodePool,
KubeRay RayCluster...) against a JSON schema of the fields the course uses, kept in
``labkit/data/crd_schemas/<kind>.json`` and written from the project's API reference.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

#: Kubernetes minor version the manifests are checked against (an Amazon EKS standard-support version).
K8S_VERSION = "1.33"

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


def validate_manifest(doc: dict, k8s_version: str = K8S_VERSION) -> str:
    """Validate one manifest document; return how (``"kubernetes 1.33 strict"`` or ``"crd schema"``).

    Raises ValueError naming the document, the field path and the problem.
    """
    import jsonschema
    import kubernetes_validate

    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        raise ValueError("a manifest needs 'apiVersion' and 'kind' at its top level")
    label = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
    try:
        version = kubernetes_validate.validate(doc, k8s_version, strict=True)
        return f"kubernetes {version} strict"
    except kubernetes_validate.ValidationError as err:
        path = ".".join(str(p) for p in err.path) or "(top level)"
        raise ValueError(f"{label}: {path}: {err.message}") from None
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
        return "crd schema"


def validate_file(path: str | Path, k8s_version: str = K8S_VERSION) -> list[str]:
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
