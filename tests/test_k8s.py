import pytest

from labkit import k8s

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo}
spec:
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers:
        - name: c
          image: busybox:1.36
          resources: {requests: {memory: 1Gi}}
"""


def test_valid_deployment(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(DEPLOYMENT)
    assert k8s.validate_file(path) == ["Deployment/demo"]


def test_unknown_field_is_an_error_in_strict_mode(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(DEPLOYMENT.replace("resources:", "resourcez:"))
    with pytest.raises(ValueError, match="d.yaml: Deployment/demo"):
        k8s.validate_file(path)


def test_custom_resource_without_schema_says_what_to_do():
    doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(ValueError, match="crd_schemas/widget.json"):
        k8s.validate_manifest(doc)


def test_not_a_manifest():
    with pytest.raises(ValueError, match="apiVersion"):
        k8s.validate_manifest({"hello": 1})


def test_empty_or_broken_yaml(tmp_path):
    (tmp_path / "e.yaml").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no Kubernetes documents"):
        k8s.validate_file(tmp_path / "e.yaml")
    (tmp_path / "b.yaml").write_text("a: [1,\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        k8s.validate_file(tmp_path / "b.yaml")


@pytest.mark.parametrize("text,value", [("16Gi", 16 * 2**30), ("500m", 0.5), ("1", 1.0), ("2G", 2e9), (3, 3.0)])
def test_parse_quantity(text, value):
    assert k8s.parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["16GB", "lots", "-1Gi"])
def test_parse_quantity_rejects(bad):
    with pytest.raises(ValueError, match="suffix"):
        k8s.parse_quantity(bad)


# --- Kubernetes versions (issue 13, item 6) and strict custom-resource schemas (BLD-10) ---
import copy
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "book" / "manifests").glob("*.yaml"))
# Fields that are maps by design (any key is valid), as in the Kubernetes and CRD APIs.
MAP_FIELDS = {"labels", "annotations", "nodeSelector", "requests", "limits", "rayStartParams",
              "tags", "minResources", "matchLabels", "data"}


def test_checked_versions_are_oldest_eks_standard_and_newest_schema():
    import kubernetes_validate

    versions = k8s.checked_versions()
    assert versions[0] == k8s.EKS_OLDEST_STANDARD == k8s.K8S_VERSION
    assert versions[-1] == kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version())
    assert [tuple(map(int, v.split("."))) for v in versions] == sorted(
        tuple(map(int, v.split("."))) for v in versions)


def test_core_kinds_are_checked_against_every_version(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(DEPLOYMENT)
    (doc,) = k8s.load_manifests(path)
    assert k8s.validate_manifest(doc) == f"kubernetes {', '.join(k8s.checked_versions())} strict"


def test_an_api_version_no_release_serves_is_rejected():
    pdb = {"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
           "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}}
    with pytest.raises(Exception):
        k8s.validate_manifest(pdb)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_validates_against_both_versions(path):
    assert k8s.validate_file(path)
    for version in k8s.checked_versions():
        assert k8s.validate_file(path, version)


def _dict_paths(node, path=()):
    if isinstance(node, dict):
        yield path
        for key, value in node.items():
            yield from _dict_paths(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _dict_paths(value, path + (i,))


def _custom_resources() -> list:
    return [pytest.param(doc, id=f"{path.name}:{doc['kind']}/{doc['metadata']['name']}")
            for path in MANIFESTS for doc in k8s.load_manifests(path)
            if k8s.crd_schema(doc["kind"]) is not None]


@pytest.mark.parametrize("doc", _custom_resources())
def test_a_typo_at_any_object_level_of_a_custom_resource_is_an_error(doc):
    accepted = []
    for where in _dict_paths(doc):
        if where and where[-1] in MAP_FIELDS:
            continue
        bad = copy.deepcopy(doc)
        target = bad
        for key in where:
            target = target[key]
        target["zzTypoField"] = 1
        try:
            k8s.validate_manifest(bad)
        except ValueError as err:
            assert "zzTypoField" in str(err) or "additional" in str(err).lower(), err
        else:
            accepted.append(".".join(map(str, where)) or "(top level)")
    assert not accepted, f"unknown fields accepted at: {accepted}"


@pytest.mark.parametrize("schema_path", sorted((ROOT / "labkit" / "data" / "crd_schemas").glob("*.json")),
                         ids=lambda p: p.name)
def test_every_schema_object_is_closed_or_says_why_not(schema_path):
    open_objects = []

    def walk(node, where):
        if isinstance(node, dict):
            is_object = "properties" in node or node.get("type") == "object"
            if is_object and node.get("additionalProperties") is None:
                if not str(node.get("$comment", "")).startswith(("open", "constraint:")):
                    open_objects.append(where)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(json.loads(schema_path.read_text()), "")
    assert not open_objects, f"objects that accept any field without saying why: {open_objects}"


def test_a_leaderworkerset_s_leader_and_worker_pod_templates_are_checked_strictly():
    docs = k8s.load_manifests(ROOT / "book" / "manifests" / "09-leaderworkerset-vllm.yaml")
    (doc,) = [d for d in docs if d["kind"] == "LeaderWorkerSet"]
    found = dict(k8s.embedded_pod_templates(doc))
    assert set(found) == {"spec.leaderWorkerTemplate.leaderTemplate",
                          "spec.leaderWorkerTemplate.workerTemplate"}
    k8s.validate_manifest(doc)
    for role in ("leaderTemplate", "workerTemplate"):
        bad = copy.deepcopy(doc)
        bad["spec"]["leaderWorkerTemplate"][role]["spec"]["containers"][0]["imagee"] = "x"
        with pytest.raises(ValueError, match="imagee"):
            k8s.validate_manifest(bad)


def test_a_pod_template_inside_a_custom_resource_is_checked_strictly():
    (doc,) = k8s.load_manifests(ROOT / "book" / "manifests" / "06-pytorchjob.yaml")
    (where, template), *_ = k8s.embedded_pod_templates(doc)
    bad = copy.deepcopy(doc)
    target = bad
    for key in where.split("."):
        target = target[int(key) if key.isdigit() else key]
    target["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(ValueError, match="imagePullPolicyy"):
        k8s.validate_manifest(bad)
