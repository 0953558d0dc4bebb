"""The student edition (`make student`, scripts/make_student.py): stubs in place of solutions.

What is proved, and how cheaply:

* On small fixture notebooks written in tmp_path: the rules (gated solutions, tagged lab
  cells, prose-only solutions, malformed markings), and two real kernel runs: a student
  notebook whose stubs raise and are then replaced by their solutions runs to the end, and
  one with an error outside a stub is reported.
* On the real course, without executing anything again: for every notebook, apart from its
  stubs the student notebook has exactly the instructor notebook's non-solution code cells,
  unchanged and in order (solution cells found here by an independent, simpler rule), every
  solution's code went into a stub and nowhere else, and every stub raises exactly
  ``NotImplementedError(title)``. nbval executes the instructor notebooks in the same
  `make test`; together that proves each student notebook fails only at its stubs, at no
  extra kernel time (re-executing every student notebook would double the notebook time;
  ``scripts/make_student.py --verify`` does that on demand). Plus one strict build of the
  student HTML (notebooks not executed, a few seconds).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

import course_checks as cc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import make_student as ms  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def md(text):
    return nbformat.v4.new_markdown_cell(text)


def code(text, *tags):
    cell = nbformat.v4.new_code_cell(text)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def notebook(*cells):
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def sources(nb, kind=None):
    return [c.source for c in nb.cells if kind is None or c.cell_type == kind]


def gated(label, title, body="Do it."):
    return md(f"## Exercises\n\n```{{exercise}} {title}\n:label: {label}\n\n{body}\n```\n\n"
              f"```{{solution-start}} {label}\n:class: dropdown\n```")


# --- the rules, on fixtures ---------------------------------------------------------------

def test_a_gated_solution_becomes_one_stub_and_its_prose_goes():
    nb = notebook(code("x = 2"),
                  gated("ex-a", "Double it"),
                  code("y = 2 * x"), code("assert y == 4"),
                  md("Because 2 × 2 = 4.\n\n```{solution-end}\n```\n\n## Key takeaways\n\n- x"))
    student, stubs = ms.studentize(nb)
    assert [(s.title, s.label, s.solution) for s in stubs] == [
        ("Double it", "ex-a", ["y = 2 * x", "assert y == 4"])]
    assert sources(student) == [
        "x = 2",
        "## Exercises\n\n```{exercise} Double it\n:label: ex-a\n\nDo it.\n```",
        '# Exercise: Double it. Replace this line and the next with your solution.\n'
        'raise NotImplementedError("Double it")',
        "## Key takeaways\n\n- x"]
    assert student.cells[2].metadata["tags"] == [ms.STUB_TAG] and stubs[0].index == 2
    assert sources(nb)[1].endswith(":class: dropdown\n```"), "the instructor notebook is untouched"


def test_a_solution_end_can_open_the_next_exercise_in_the_same_cell():
    nb = notebook(gated("ex-a", "First"), code("a = 1"),
                  md("Text of the first answer.\n```{solution-end}\n```\n\n"
                     "```{exercise} Second\n:label: ex-b\n\nMore.\n```\n\n"
                     "```{solution-start} ex-b\n:class: dropdown\n```"),
                  code("b = 2"), md("```{solution-end}\n```"))
    student, stubs = ms.studentize(nb)
    assert [s.title for s in stubs] == ["First", "Second"]
    assert [c.cell_type for c in student.cells] == ["markdown", "code", "markdown", "code"]
    assert "answer" not in " ".join(sources(student, "markdown"))
    assert "{solution" not in " ".join(sources(student))


def test_tagged_lab_cells_become_one_stub_and_the_check_stays():
    nb = notebook(md("# Lab\n\n## Task 1: size the **KV cache**"),
                  code("from math import prod"),
                  code("kv = prod([2, 3])", "solution"), code("kv *= 2", "solution"),
                  code("assert kv == 12  # the lab's check", "nbval-ignore-output"),
                  md("## Task 2: tokens"), code("tokens = 5", "solution"))
    student, stubs = ms.studentize(nb)
    assert [(s.title, s.solution) for s in stubs] == [
        ("Task 1: size the KV cache", ["kv = prod([2, 3])", "kv *= 2"]),
        ("Task 2: tokens", ["tokens = 5"])]
    assert sources(student, "code")[0] == "from math import prod"
    assert sources(student, "code")[2] == "assert kv == 12  # the lab's check"
    assert student.cells[3].metadata["tags"] == ["nbval-ignore-output"]


def test_a_tagged_cell_takes_the_nearest_exercise_title():
    nb = notebook(md("## Tasks\n\n```{exercise} Count the bytes\n:label: ex-c\n\nHow many?\n```"),
                  code("n = 4", "solution"))
    assert ms.studentize(nb)[1][0].title == "Count the bytes"


def test_a_prose_only_solution_leaves_an_answer_cell():
    nb = notebook(md("```{exercise} Explain\n:label: ex-p\n\nWhy?\n```\n\n"
                     "````{solution} ex-p\n:class: dropdown\n\nBecause:\n```python\nx = 1\n```\n````\n"
                     "\nAfter."))
    student, stubs = ms.studentize(nb)
    assert stubs == []
    text = sources(student)[0]
    assert "Because" not in text and "x = 1" not in text and text.endswith("After.")
    assert "*Your answer* to **Explain**" in text


@pytest.mark.parametrize("cells, message", [
    ([gated("ex-a", "A"), code("a = 1")], "solution-start 'ex-a' has no solution-end"),
    ([md("```{solution-end}\n```")], "solution-end without a solution-start"),
    ([code("a = 1", "solution")], "needs an exercise or a heading above it"),
    ([md("```{solution-start} ex-a\n:class: dropdown")], "is never closed"),
], ids=["unclosed", "end-without-start", "untitled-tag", "unclosed-fence"])
def test_malformed_solutions_are_refused_with_a_reason(cells, message):
    with pytest.raises(ms.StudentError, match=re.escape(message)):
        ms.studentize(notebook(*cells), "fixture.ipynb")


def test_titles_with_quotes_make_valid_stubs():
    stub = ms.Stub(index=0, title='The "KV cache" isn\'t free', label=None)
    assert ms.stub_raises_its_title(stub) is None
    assert ms.stub_raises_its_title(ms.Stub(0, "x", None)) is None


def test_the_student_config_hides_solutions_and_executes_nothing():
    config = ms.student_config(yaml.safe_load((ROOT / "_config.yml").read_text()))
    assert config["sphinx"]["config"]["hide_solutions"] is True
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["title"].endswith("(student edition)")
    assert set(config["launch_buttons"]) == {"notebook_interface"}
    toc = {"root": "intro", "parts": [{"caption": "Labs", "chapters": [{"file": "labs/x"}]},
                                      {"caption": ms.INSTRUCTOR_PART, "chapters": [{"file": "i"}]}]}
    assert [p["caption"] for p in ms.toc_without_instructors(toc)["parts"]] == ["Labs"]


# --- executing fixtures: fails only at its stubs -------------------------------------------

def test_a_student_notebook_fails_only_at_its_stubs(tmp_path):
    nb = notebook(md("# Lab\n\n## Task 1: a number"),
                  code("import math"),
                  code("answer = math.sqrt(16)", "solution"),
                  code("assert answer == 4, 'check: the square root of 16'"),
                  gated("ex-b", "Twice"), code("twice = 2 * answer"),
                  md("```{solution-end}\n```"),
                  code("print(twice)"))
    student, stubs = ms.studentize(nb)
    assert ms.verify(student, stubs, tmp_path, timeout=60) == []

    # the same notebook with a non-solution cell broken (a tool bug would look like this)
    broken = notebook(*[c for c in nb.cells if "import math" not in c.source])
    student, stubs = ms.studentize(broken)
    problems = ms.verify(student, stubs, tmp_path, timeout=60)
    assert problems and all("NameError" in p for p in problems), problems
    assert "the solution of 'Task 1: a number' raised NameError" in problems[0]


# --- the real course, without executing it again -------------------------------------------

def solution_cells(nb) -> set[int]:
    """Instructor solution code cells, by a rule independent of make_student's parser."""
    inside, found = False, set()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            marks = re.findall(r"\{solution-(start|end)\}", cell.source)
            if marks:
                inside = marks[-1] == "start"
        elif cell.cell_type == "code" and (inside or "solution" in cell.metadata.get("tags", [])):
            found.add(i)
    return found


@pytest.mark.parametrize("path", cc.notebooks(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_real_student_notebook_is_the_instructor_one_minus_solutions(path):
    nb = nbformat.read(path, as_version=4)
    student, stubs = ms.studentize(nb, path.name)
    nbformat.validate(student)
    solutions = solution_cells(nb)
    kept = [c.source for i, c in enumerate(nb.cells) if c.cell_type == "code" and i not in solutions]
    student_code = [c for c in student.cells if c.cell_type == "code"]
    assert [c.source for c in student_code if ms.STUB_TAG not in c.metadata.get("tags", [])] == kept
    assert sorted(src for s in stubs for src in s.solution) == sorted(
        nb.cells[i].source for i in solutions), "every solution cell goes into exactly one stub"
    for i in solutions:
        assert not any(nb.cells[i].source.strip() in c.source for c in student_code
                       if nb.cells[i].source.strip()), f"solution cell {i} leaked"
    assert not [c for c in student.cells if "{solution" in c.source]
    assert [student.cells[s.index].source for s in stubs] == [s.source for s in stubs]
    assert [p for s in stubs if (p := ms.stub_raises_its_title(s))] == []
    titles = ms.exercise_titles(nb)
    assert all(s.title == titles[s.label] for s in stubs if s.label), "stub titled by its exercise"


def test_the_student_html_builds_without_solutions(tmp_path):
    written = ms.write_student_tree(ROOT, tmp_path / "student")
    assert written and not (tmp_path / "student" / "book" / "instructors").exists()
    result = ms.build_html(tmp_path / "student")
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "WARNING" not in log, log[-6000:]
    html = tmp_path / "student" / "_build" / "html"
    pages = list(html.rglob("*.html"))
    assert [p.name for p in pages if 'class="solution' in p.read_text()] == []
    in_toc = {f"{entry}.ipynb" for entry in cc.toc_entries(ROOT)}
    n_stubs = sum(len(s) for rel, s in written.items() if rel in in_toc)
    assert sum(p.read_text().count("NotImplementedError") for p in pages) >= n_stubs
