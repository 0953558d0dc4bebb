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
