"""labkit.solutions: a learner reveals an instructor solution on purpose, by the call the stub
names (and only then: the student notebooks carry none)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from labkit import solutions

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_student as ms  # noqa: E402


def test_every_stub_names_a_call_that_reveals_its_own_solution():
    every = solutions.solutions()
    assert every
    for path in sorted((ROOT / "book").glob("*.ipynb")) + sorted((ROOT / "labs").glob("*.ipynb")):
        rel = str(path.relative_to(ROOT))
        _, stubs = ms.studentize(nbformat.read(path, as_version=4), rel)
        for stub in stubs:
            assert stub.reveal_call in stub.source
            found = solutions.find(stub.label or stub.title,
                                   None if stub.label else stub.notebook)
            assert (found.notebook, found.code) == (rel, stub.solution)


def test_reveal_prints_the_code_and_the_explanation(capsys):
    chapter = next(s for s in solutions.solutions() if s.label and s.prose.strip())
    shown = solutions.reveal(chapter.label)
    out = capsys.readouterr().out
    assert shown == chapter and chapter.code[0].strip() in out and chapter.prose.strip() in out


def test_a_title_prefix_needs_the_notebook_when_several_labs_share_it(capsys):
    with pytest.raises(LookupError, match="matches several exercises"):
        solutions.find("Task 1")
    lab = solutions.find("Task 1", notebook="labs/01-small-model-inference.ipynb")
    assert lab.notebook == "labs/01-small-model-inference.ipynb" and lab.label is None
    with pytest.raises(LookupError, match="no exercise 'ex-none'"):
        solutions.find("ex-none")
    assert solutions.main(["ex-none"]) == 2
    assert "no exercise" in capsys.readouterr().err
