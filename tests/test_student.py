"""The student edition (`make student`, scripts/make_student.py): stubs in place of solutions.

What is proved, and how cheaply:

* On small fixture notebooks written in tmp_path: the rules (gated solutions, tagged lab
  cells, prose-only solutions, malformed markings), the scaffolds (the names the task asks
  for, ``...``, a hint; an unfilled stub raises ``NotImplementedError(title)`` at its cell),
  and real kernel runs: a student notebook whose stubs raise and are then given *minimal*
  answers (only the names each task asks for, with the solution's values) runs to the end;
  one with an error outside a stub is reported; one whose later cells read a helper made
  inside a solution fails with minimal answers though it passes with whole solutions (the
  Lab 2 bug, LRN-11).
* On the real course, without executing anything again: for every notebook, apart from its
  stubs the student notebook has exactly the instructor notebook's non-solution code cells,
  unchanged and in order (solution cells found here by an independent, simpler rule), every
  solution's code went into a stub and nowhere else, and every stub raises exactly
  ``NotImplementedError(title)``; and no cell reads a name only a solution defines (static,
  the minimal-answer condition). Plus one strict build of the student HTML (notebooks not
  executed, a few seconds).
* Executed, at no extra kernel time: the notebook run of ``make test`` *is* the student run.
  tests/conftest.py rewrites each solution cell, in memory, before nbval executes it: the
  student's stub must raise ``NotImplementedError(title)`` at that cell, then a minimal answer
  runs. With the static proof above that every other cell is the student notebook's own, one
  run proves each student notebook fails exactly at its stubs and passes with minimal answers
  (``LABKIT_NBVAL_AS_WRITTEN=1`` runs the instructor notebooks as written instead).
"""

from __future__ import annotations

import os
import re
import subprocess
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
        '# Exercise: Double it\n'
        '# Hint: replace each ... below with your answer to "Double it" (the text above says '
        'what to compute).\n'
        'y = ...\n'
        '# Stuck? In a new cell: from labkit.solutions import reveal; reveal("ex-a")\n'
        'if any(answer is ... for answer in (y,)):\n'
        '    raise NotImplementedError("Double it")',
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


# --- scaffolds: the shape of the answer ---------------------------------------------------

def run_stub(source, **filled):
    """Run a stub's code as a learner would after replacing ``name = ...`` lines."""
    for name, value in filled.items():
        source = source.replace(f"{name} = ...", f"{name} = {value!r}")
    namespace = {}
    exec(compile(source, "<stub>", "exec"), namespace)
    return namespace


def test_a_stub_asks_for_the_names_the_task_text_names_and_no_helpers():
    nb = notebook(md("## Task 3: speed"), code("rows = [1, 4]"),
                  md("**Your answer.** Store the ratio in `speedup` and the change in "
                     "`change_pct`."),
                  code("by = {i: r for i, r in enumerate(rows)}\n"
                       "speedup = by[1] / by[0]  # hint: the later row over the first\n"
                       "change_pct = 100 * (speedup - 1)", "solution"),
                  code("assert speedup == 4"))
    student, [stub] = ms.studentize(nb, "labs/09-fixture.ipynb")
    assert stub.answers == ["speedup", "change_pct"] and stub.functions == {}
    assert stub.hint == "the later row over the first"
    text = student.cells[stub.index].source
    assert "speedup = ...\nchange_pct = ...\n" in text and "by = " not in text
    assert "# Hint: the later row over the first" in text
    assert 'reveal("Task 3: speed", notebook="09-fixture")' in text
    with pytest.raises(NotImplementedError, match="^Task 3: speed$"):
        run_stub(text)                                   # left as it is: fails at this cell
    with pytest.raises(NotImplementedError, match="^Task 3: speed$"):
        run_stub(text, speedup=4.0)                      # half filled: still fails here
    assert run_stub(text, speedup=4.0, change_pct=300.0)["change_pct"] == 300.0


def test_without_names_in_the_text_a_stub_asks_for_what_later_cells_read():
    nb = notebook(gated("ex-a", "Count"), code("a = 1\nb = a + 1\nfor i in range(3):\n    c = i"),
                  md("```{solution-end}\n```"), code("print(b)"))
    assert ms.studentize(nb)[1][0].answers == ["b"]
    nb = notebook(gated("ex-a", "Count"), code("a = 1\nb = a + 1"), md("```{solution-end}\n```"))
    assert ms.studentize(nb)[1][0].answers == ["a", "b"], "else every name the solution assigns"


def test_a_function_answer_keeps_its_signature_and_code_answers_keep_a_raise():
    nb = notebook(md("## Task 2: shards\n\nWrite `make_shards`."),
                  code("def make_shards(items, n_shards=2):\n    return [items]", "solution"),
                  md("## Task 3: print it"), code("print(make_shards([1]))", "solution"))
    student, (shards, printing) = ms.studentize(nb)
    assert shards.functions == {"make_shards": "items, n_shards=2"}
    assert "def make_shards(items, n_shards=2):\n    ...  # your code here\n    return ...\n" \
        in shards.source
    assert printing.answers == [] and "...  # your code here" in printing.source
    for stub in (shards, printing):
        assert ms.stub_raises_its_title(stub) is None
        assert stub.source.endswith("  # delete this line when your code works")


def test_a_name_only_a_solution_defines_is_found_statically_and_by_a_minimal_run(tmp_path):
    """The Lab 2 bug (issue 16, LRN-11): later cells read a helper the solution made."""
    nb = notebook(md("## Task 1: ratio"), code("rows = [2, 8]"),
                  md("Store the ratio in `ratio`."),
                  code("by = dict(enumerate(rows))\nratio = by[1] / by[0]", "solution"),
                  code("assert ratio == 4"), code("print(by[0])"))
    student, stubs = ms.studentize(nb)
    assert ms.names_only_a_solution_defines(student, stubs) == [
        "cell 5 reads 'by', which only the solution of 'Task 1: ratio' defines: define it in a "
        "cell outside the solution, or ask for it in the task's text"]
    assert ms.verify(student, stubs, tmp_path, timeout=60, minimal=False) == [], \
        "running the whole solution hides the bug"
    problems = ms.verify(student, stubs, tmp_path, timeout=60)
    assert problems == ["cell 5 (not a stub) raised NameError: name 'by' is not defined"]


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
    assert [s.answers for s in stubs] == [["answer"], ["twice"]]
    assert ms.verify(student, stubs, tmp_path, timeout=60) == []             # minimal answers
    assert ms.verify(student, stubs, tmp_path, timeout=60, minimal=False) == []

    # the same notebook with a non-solution cell broken (a tool bug would look like this)
    broken = notebook(*[c for c in nb.cells if "import math" not in c.source])
    student, stubs = ms.studentize(broken)
    problems = ms.verify(student, stubs, tmp_path, timeout=60)
    assert problems[0] == "the solution of 'Task 1: a number' raised NameError: name 'math' " \
                          "is not defined", problems            # the first error is the cause


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


#: Notebooks known to break with minimal answers, {path: why}, each marked xfail (strict: the
#: mark must go when the notebook is fixed). Empty since Lab 2's fix for LRN-11 (smol_by and
#: by_threads were made in solution cells): this check flagged it.
MINIMAL_ANSWER_BUGS: dict[str, str] = {}


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.xfail(reason=MINIMAL_ANSWER_BUGS[rel], strict=True))
    if (rel := str(p.relative_to(ROOT))) in MINIMAL_ANSWER_BUGS else p
    for p in cc.notebooks(ROOT)], ids=lambda p: str(p.relative_to(ROOT)))
def test_real_student_notebook_runs_with_minimal_answers(path):
    """Statically: after each stub, no cell reads a name that only an instructor solution
    defines, so a learner who assigns just the names the task asks for gets no NameError
    (`scripts/make_student.py --verify` proves it by running the notebooks)."""
    student, stubs = ms.studentize(nbformat.read(path, as_version=4), path.name)
    assert ms.names_only_a_solution_defines(student, stubs) == []


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


# --- the notebook run of `make test` is the student run (tests/conftest.py) ------------------

def _run_as_nbval_would(nb, tmp_path):
    """The hook of tests/conftest.py applied to ``nb``, then every code cell executed in order
    (as nbval does); returns the first error as ``(cell index, ename, evalue)`` or None."""
    from types import SimpleNamespace

    from nbclient import NotebookClient

    import conftest

    conftest._as_student_run(SimpleNamespace(nb=nb, fspath=str(tmp_path / "fixture.ipynb")))
    client = NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel(stderr=subprocess.DEVNULL):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)
                errors = [o for o in cell.outputs if o.output_type == "error"]
                if errors:
                    return index, errors[0].ename, errors[0].evalue
    return None


def test_the_notebook_run_is_the_student_run(tmp_path):
    """Each solution cell runs as the student meets it: the stub must fail at its cell, then a
    minimal answer runs; a later cell that reads a name only the solution made then fails (the
    Lab 2 bug, LRN-11), though the notebook as written passes."""
    def lab(*later):
        return notebook(md("# Lab"), code("import math"),
                        md("## Task 1: a number\n\nStore it in `answer`."),
                        code("helper = 3\nanswer = math.sqrt(16)", "solution"),
                        code("assert answer == 4, 'check: the square root of 16'"), *later)

    good = lab(gated("ex-b", "Twice"), code("twice = 2 * answer"),
               md("```{solution-end}\n```"), code("print(twice)"))
    assert _run_as_nbval_would(good, tmp_path) is None
    rewritten = [c.source for c in good.cells if c.cell_type == "code"]
    assert "NotImplementedError" in rewritten[1] and "_labkit_minimal_answer" in rewritten[1]
    assert "NotImplementedError" in rewritten[3] and "'Twice'" in rewritten[3]

    index, ename, evalue = _run_as_nbval_would(lab(code("print(helper)")), tmp_path)
    assert (index, ename) == (5, "NameError") and "helper" in evalue


def test_a_stub_that_does_not_fail_is_caught(tmp_path, monkeypatch):
    """A stub that lets an unfilled answer through is an error at the stub's own cell."""
    monkeypatch.setattr(ms, "scaffold_source", lambda stub: "answer = ...  # no raise")
    nb = notebook(md("# Lab\n\n## Task 1: a number"),
                  code("answer = 4", "solution"), code("print(answer)"))
    index, ename, evalue = _run_as_nbval_would(nb, tmp_path)
    assert (index, ename) == (1, "AssertionError") and "did not raise" in evalue


def test_instructor_callouts_are_dropped_from_the_student_edition():
    callout = (":::{admonition} For instructors\n:class: instructor dropdown\n\n"
               "Collect the predictions on the board.\n:::")
    nb = notebook(md("# Chapter\n\nText."), md(callout), code("x = 1"), md("More text."))
    student, stubs = ms.studentize(nb)
    assert stubs == []
    assert not any(ms.INSTRUCTOR_CALLOUT in s for s in sources(student))
    assert sources(student) == ["# Chapter\n\nText.", "x = 1", "More text."]


def test_every_instructor_callout_in_the_course_starts_its_cell():
    """The student edition drops a callout only when it starts its own markdown cell."""
    import json

    misplaced = []
    for path in cc.notebooks(ROOT):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            src = "".join(cell["source"])
            if "For instructors" in src and ":::{admonition}" in src \
                    and not src.lstrip().startswith(ms.INSTRUCTOR_CALLOUT):
                misplaced.append(f"{path.relative_to(ROOT)} cell {i}")
    assert misplaced == []
