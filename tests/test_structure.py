"""The course's structure: toc, stripped notebooks, the chapter template, manifests."""

import pytest

import course_checks as cc
from labkit import k8s


def test_every_toc_entry_exists(repo_root):
    assert cc.missing_toc_entries(repo_root) == []


def test_every_notebook_is_in_the_toc(repo_root):
    assert cc.notebooks_not_in_toc(repo_root) == []


def test_notebooks_are_stored_without_outputs(repo_root):
    problems = [p for nb in cc.notebooks(repo_root) for p in cc.output_problems(nb)]
    assert problems == [], "strip them: jupyter nbconvert --clear-output --inplace NOTEBOOK"


def test_notebooks_use_the_python3_kernel(repo_root):
    import json

    for nb in cc.notebooks(repo_root):
        assert json.loads(nb.read_text())["metadata"]["kernelspec"]["name"] == "python3", nb.name


@pytest.mark.parametrize("chapter", cc.chapters(cc.Path(__file__).resolve().parent.parent),
                         ids=lambda p: p.name)
def test_chapter_follows_the_template(chapter):
    assert cc.chapter_problems(chapter) == []


def test_there_is_at_least_one_chapter(repo_root):
    assert cc.chapters(repo_root), "book/ has no NN-topic.ipynb chapter"


MANIFESTS = sorted((cc.Path(__file__).resolve().parent.parent / "book" / "manifests").glob("*.yaml"))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_offline(manifest):
    assert k8s.validate_file(manifest)


def test_readme_opens_with_the_two_commands(repo_root):
    text = (repo_root / "README.md").read_text()
    assert text.index("make book") < text.index("make test") < 2500


def test_no_cell_carries_the_no_op_nbval_output_tags(repo_root):
    """Under --nbval-lax nbval compares no output, so nbval-ignore-output / nbval-check-output
    tags would only suggest checks that do not happen: the checks are the asserts (HON-09)."""
    import json

    tagged = [f"{path.relative_to(repo_root)} cell {i}"
              for path in cc.notebooks(repo_root)
              for i, cell in enumerate(json.loads(path.read_text())["cells"])
              if {"nbval-ignore-output", "nbval-check-output"} & set(cell.get("metadata", {}).get("tags", []))]
    assert tagged == []
