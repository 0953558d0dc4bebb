"""Every chapter and lab shows the core of the helper that carries its lesson (issue 18, item 4).

d2l's way: a markdown cell that starts with "**Look inside:**" names the labkit helper and says
where it lives; within the next three cells a code cell defines the core in the notebook and
a code cell asserts that the notebook's version and the library agree on one input.
"""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARK = "**Look inside:**"
#: how many cells after the "Look inside" text the asserting code cell may come
WITHIN = 3


def _notebooks() -> list[Path]:
    chapters = sorted((ROOT / "book").glob("0[0-9]-*.ipynb")) + [ROOT / "book" / "10-summary.ipynb"]
    return chapters + sorted((ROOT / "labs").glob("*.ipynb"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def look_inside_problems(path: Path) -> list[str]:
    """Why ``path`` lacks a valid "Look inside" (empty when it has one)."""
    cells = json.loads(path.read_text())["cells"]
    starts = [i for i, c in enumerate(cells)
              if c["cell_type"] == "markdown" and _source(c).lstrip().startswith(MARK)]
    if not starts:
        return [f"{_name(path)}: no markdown cell starts with {MARK!r}"]
    for i in starts:
        following = cells[i + 1:i + 1 + WITHIN]
        if any(c["cell_type"] == "code" and "assert" in _source(c) for c in following):
            return []
    return [f"{_name(path)}: no code cell with an assert within {WITHIN} cells "
            f"after the {MARK!r} cell(s) at {starts}"]


def test_the_check_finds_a_look_inside_and_rejects_one_without_an_assert(tmp_path):
    def notebook(*cells):
        path = tmp_path / "nb.ipynb"
        path.write_text(json.dumps({"cells": [{"cell_type": t, "source": s} for t, s in cells]}))
        return path

    good = notebook(("markdown", "**Look inside:** `labkit.x.f`"), ("code", "def f(): ..."),
                    ("code", "assert f() == x.f()"))
    assert look_inside_problems(good) == []
    far = notebook(("markdown", "**Look inside:** `labkit.x.f`"), ("code", "def f(): ..."),
                   ("markdown", "text"), ("code", "y = 1"), ("code", "assert f() == x.f()"))
    assert look_inside_problems(far)
    none = notebook(("markdown", "Look inside later"), ("code", "assert True"))
    assert look_inside_problems(none)


def test_every_chapter_and_lab_is_listed():
    names = {p.name for p in _notebooks()}
    assert {"00-primer.ipynb", "10-summary.ipynb", "00-setup-check.ipynb"} <= names
    assert "11-glossary.md" not in names


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_chapter_and_lab_shows_the_core_of_its_helper(path):
    assert look_inside_problems(path) == []
