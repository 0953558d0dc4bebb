"""The gate really fails: a raising cell, a missing toc entry, stored outputs, a broken chapter.

Each test builds a small broken fixture in a temporary folder and checks that the same
machinery `make test` uses on the real course rejects it.
"""

import json
import shutil
import subprocess
import sys

import course_checks as cc
from book_build import strict_build


def notebook(cells, outputs=False):
    """A minimal notebook; ``cells`` are (type, source) pairs."""
    out = []
    for i, (kind, source) in enumerate(cells):
        cell = {"cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "2\n"}] if outputs else []
            cell["execution_count"] = i + 1 if outputs else None
        out.append(cell)
    return {"cells": out, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                       "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def write(path, nb):
    path.write_text(json.dumps(nb))
    return path


def test_nbval_fails_when_a_cell_raises(tmp_path):
    write(tmp_path / "broken.ipynb", notebook([("code", "x = 1"), ("code", "raise RuntimeError('boom')")]))
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider",
                             "broken.ipynb"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "RuntimeError" in result.stdout and "1 failed" in result.stdout


def test_structure_check_finds_a_missing_toc_entry(tmp_path):
    (tmp_path / "intro.md").write_text("# Intro\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nparts:\n"
                                       "  - caption: X\n    chapters:\n      - file: book/99-missing\n")
    assert cc.missing_toc_entries(tmp_path) == [
        "_toc.yml lists 'book/99-missing' but neither book/99-missing.ipynb nor book/99-missing.md exists"]


def test_structure_check_finds_a_notebook_outside_the_toc(tmp_path):
    (tmp_path / "intro.md").write_text("# Intro\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (tmp_path / "book").mkdir()
    write(tmp_path / "book" / "01-orphan.ipynb", notebook([("code", "1")]))
    assert cc.notebooks_not_in_toc(tmp_path) == ["book/01-orphan.ipynb is not in _toc.yml"]


def test_structure_check_finds_stored_outputs(tmp_path):
    nb = write(tmp_path / "01-kept.ipynb", notebook([("code", "1 + 1")], outputs=True))
    assert cc.output_problems(nb) == ["01-kept.ipynb: cell 0 has stored outputs",
                                      "01-kept.ipynb: cell 0 has an execution count"]


def test_structure_check_finds_missing_template_sections(tmp_path):
    text = ("# T\n\n:::{admonition} At a glance\n:::\n\n## Exercises\n\n"
            "```{exercise} E\n:label: ex-a\n\nDo it.\n```\n")
    nb = write(tmp_path / "01-thin.ipynb", notebook([("markdown", text)]))
    assert cc.chapter_problems(nb) == ["01-thin.ipynb: no 'On EKS' section",
                                       "01-thin.ipynb: no 'Key takeaways' section",
                                       "01-thin.ipynb: no 'Further reading' section",
                                       "01-thin.ipynb: exercise 'ex-a' has no solution"]


def test_strict_build_fails_on_a_raising_cell_and_a_missing_page(repo_root, tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    shutil.copy(repo_root / "_config.yml", book / "_config.yml")
    (book / "intro.md").write_text("# Intro\n\nSee {doc}`chapter`.\n")
    write(book / "chapter.ipynb", notebook([("markdown", "# Chapter"), ("code", "raise ValueError('cell fails')")]))
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapter\n  - file: missing\n")
    result = strict_build(book, tmp_path / "out", execute="force")
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ValueError" in log or "cell fails" in log or "Executing notebook failed" in log, log[-3000:]
    assert "missing" in log, log[-3000:]
