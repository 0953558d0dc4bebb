"""Write the student edition of the course: notebooks with exercise stubs, and its HTML book.

    python scripts/make_student.py            # what `make student` runs
    python scripts/make_student.py --no-html  # the notebooks only
    python scripts/make_student.py --verify   # also execute every student notebook (slow),
                                              # each stub given a minimal answer
    python scripts/make_student.py --workspace   # `make workspace`: add them to my-work/

Output (under ``_build/``, never committed)::

    _build/student/book/, labs/   the student notebooks, plus every other file of book/ and
                                  labs/ the notebooks read (pages, manifests, data), so a
                                  student notebook runs from its folder like the original
    _build/student/_config.yml    generated: solutions hidden, notebooks not executed, no
                                  launch buttons (they would open the instructor notebooks)
    _build/student/_toc.yml       the course's toc without the "Instructor guide" part
    _build/student/_build/html/   the student HTML book: stubs, no solutions, no outputs

How a solution is marked (the convention for chapters and labs)
----------------------------------------------------------------
1. **Gated solutions** (chapters, and labs that use dropdowns): a markdown cell containing
   ``{solution-start} LABEL`` (sphinx-exercise), then the solution's code cell(s) and any
   explanation, up to the markdown cell containing ``{solution-end}``. Everything in between
   is the solution. Text before ``solution-start`` and after ``solution-end`` in those two
   markdown cells is kept (e.g. the next exercise).
2. **Tagged solution cells** (labs): a code cell with the cell tag ``solution``. Consecutive
   tagged cells form one solution. Put the lab's check call (``labkit.check...``) in the
   next, *untagged* cell, so students keep it.
3. **Plain** ``{solution}`` **directives** in markdown (prose-only answers) are removed.

In the student notebook each solution with code becomes one stub cell (tag
``exercise-stub``) that keeps the shape of the answer::

    # Exercise: <title>
    # Hint: <the solution's "# hint: ..." comments, else a line made from the title>
    speedup = ...
    ppl_change_pct = ...
    # Stuck? In a new cell: from labkit.solutions import reveal; reveal("<label or title>", ...)
    if any(answer is ... for answer in (speedup, ppl_change_pct)):
        raise NotImplementedError("<title>")

The names are those the solution assigns that the task's text (the markdown just above the
stub) shows as inline code; if it shows none, those that later cells read; if none is read,
every name the solution assigns. A function keeps its signature (``def knee(rows): ...``), and
a stub with a function or no name to test ends with an unconditional ``raise`` the learner
deletes. So an unfilled stub fails at its own cell with ``NotImplementedError(title)``.

A solution without code (prose only) becomes a markdown cell "*Your answer:* ...". The title
is the one of the exercise whose ``:label:`` the solution names; for a tagged cell it is the
nearest exercise title or heading above the cell. Every other cell is copied unchanged, so
check functions, imports and the cells after an exercise stay as they are; outputs are
stripped.

What the tests prove (tests/test_student.py): every stub raises exactly
``NotImplementedError(title)``; apart from the stubs the student notebook has the instructor
notebook's code cells, unchanged and in order (so, since nbval runs the instructor notebooks,
a student notebook fails only at its stubs); no cell reads a name that only a solution defines
(:func:`names_only_a_solution_defines`, the condition for a *minimal* answer, i.e. only the
names a task asks for, to be enough); and, on fixture notebooks, full executions in which each
stub raises and is then replaced by a minimal answer (the solution's values for the names the
task asks for, nothing else) run to the end. ``--verify`` runs that execution on the real
notebooks.

``--workspace [DIR]`` (what `make workspace` runs) writes the same student notebooks and files
into ``my-work/`` (or DIR) instead, adding only what is missing and never overwriting a file.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
SOLUTION_TAG = "solution"
STUB_TAG = "exercise-stub"
INSTRUCTOR_PART = "Instructor guide"
#: A markdown cell that starts with this is an instructor callout: the student edition drops it.
INSTRUCTOR_CALLOUT = ":::{admonition} For instructors"
#: Folders whose notebooks and files make up the student edition.
FOLDERS = ("book", "labs")
#: Folders left out of the student edition (instructor material).
SKIP = ("instructors", ".ipynb_checkpoints", "__pycache__")

_DIRECTIVE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[a-z-]+)\}[ \t]*(?P<arg>.*?)\s*$")
_LABEL = re.compile(r"^:label:\s*(\S+)\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_ROLE = re.compile(r"\{[a-z:]+\}`([^`<]*?)\s*(?:<[^`>]*>)?`")


class StudentError(ValueError):
    """A notebook's solutions are not marked in a way the student edition can handle."""


@dataclass
class Stub:
    """One exercise stub in a student notebook."""

    index: int                 #: cell index in the student notebook
    title: str                 #: the exercise title (the NotImplementedError message)
    label: str | None          #: the exercise label (gated solutions) or None (tagged cells)
    solution: list[str] = field(default_factory=list)  #: the instructor's solution code cells
    answers: list[str] = field(default_factory=list)   #: the names the task asks for
    functions: dict[str, str] = field(default_factory=dict)  #: answer name -> its signature
    hint: str = ""             #: the hint line (from ``# hint:`` in the solution, or the title)
    notebook: str = ""         #: the notebook's stem, for the reveal call of tagged solutions
    prose: list[str] = field(default_factory=list)     #: the solution's explanation (markdown)

    @property
    def reveal_call(self) -> str:
        if self.label:
            return f"reveal({json.dumps(self.label)})"
        return (f"reveal({json.dumps(self.title, ensure_ascii=False)}, "
                f"notebook={json.dumps(self.notebook)})")

    @property
    def source(self) -> str:
        return scaffold_source(self)


def scaffold_source(stub: Stub) -> str:
    """The code of a stub cell: the shape of the answer, a hint, and a line that fails clearly.

    Each name the task asks for is assigned ``...`` (a function gets its signature and a body of
    ``...``); the last line raises ``NotImplementedError(title)`` while any name is still
    ``...`` (or, when the answer is code with no name to test, until the learner deletes it).
    """
    title = json.dumps(stub.title, ensure_ascii=False)
    lines = [f"# Exercise: {stub.title}",
             f"# Hint: {stub.hint or default_hint(stub)}"]
    values = [n for n in stub.answers if n not in stub.functions]
    for name in stub.answers:
        if name in stub.functions:
            lines += [f"def {name}({stub.functions[name]}):", "    ...  # your code here",
                      "    return ..."]
        else:
            lines.append(f"{name} = ...")
    if not stub.answers:
        lines.append("...  # your code here")
    lines.append(f"# Stuck? In a new cell: from labkit.solutions import reveal; {stub.reveal_call}")
    if values and not stub.functions:
        names = ", ".join(values) + ("," if len(values) == 1 else "")
        lines.append(f"if any(answer is ... for answer in ({names})):")
        lines.append(f"    raise NotImplementedError({title})")
    else:
        lines.append(f"raise NotImplementedError({title})  # delete this line when your code works")
    return "\n".join(lines)


def default_hint(stub: Stub) -> str:
    """The hint line when the solution has no ``# hint:`` comment: derived from the title."""
    what = "replace each ... below with" if stub.answers else "write"
    return f"{what} your answer to \"{stub.title}\" (the text above says what to compute)."


def stub_source(title: str) -> str:
    """The code of a stub cell for the exercise ``title`` with no names to assign."""
    return Stub(index=0, title=title, label=None).source


def plain(text: str) -> str:
    """Markdown title text without roles, emphasis or code marks (for messages)."""
    text = _ROLE.sub(lambda m: m.group(1), text)
    return re.sub(r"[*_`]", "", text).strip()


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _block_end(lines: list[str], start: int, fence: str, where: str) -> int:
    """Index just after the closing fence of the directive opened at ``lines[start]``."""
    closing = re.compile(rf"^{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    for k in range(start + 1, len(lines)):
        if closing.match(lines[k]):
            return k + 1
    raise StudentError(f"{where}: the directive on line {start + 1} ({lines[start].strip()!r}) "
                       f"is never closed with {fence}")


def exercise_titles(nb) -> dict[str, str]:
    """``{label: title}`` of every ``{exercise}``/``{exercise-start}`` in the notebook."""
    titles = {}
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = _source(cell).split("\n")
        for i, line in enumerate(lines):
            m = _DIRECTIVE.match(line)
            if not m or m["name"] not in ("exercise", "exercise-start"):
                continue
            for option in lines[i + 1:i + 8]:
                label = _LABEL.match(option)
                if label:
                    titles[label.group(1)] = plain(m["arg"]) or label.group(1)
                    break
                if not option.startswith(":"):
                    break
    return titles


def studentize(nb, name: str = "notebook"):
    """The student edition of notebook ``nb``; returns ``(student_nb, stubs)``.

    ``nb`` is not modified. Raises :class:`StudentError` for a solution that is opened and
    never closed (or closed and never opened), or a tagged solution cell with no exercise or
    heading above it to name it.
    """
    titles = exercise_titles(nb)
    out = []
    stubs: list[Stub] = []
    region: Stub | None = None      # an open gated solution
    tagged: Stub | None = None      # the stub of the current run of tagged cells
    last_title = None               # nearest exercise title or heading above, for tagged cells

    def emit_stub(stub: Stub):
        stub.index = len(out)
        cell = nbformat.v4.new_code_cell(stub.source)
        cell.metadata["tags"] = [STUB_TAG]
        out.append(cell)
        stubs.append(stub)

    def close(stub: Stub):
        if stub.solution:
            emit_stub(stub)
        else:
            out.append(nbformat.v4.new_markdown_cell(
                f"*Your answer* to **{stub.title}**: double-click this cell and write it here."))

    for number, cell in enumerate(nb.cells):
        where = f"{name}, cell {number}"
        if cell.cell_type == "code":
            if region is not None:
                region.solution.append(_source(cell))
                continue
            if SOLUTION_TAG in _tags(cell):
                if tagged is None:
                    if last_title is None:
                        raise StudentError(f"{where}: a cell tagged {SOLUTION_TAG!r} needs an "
                                           "exercise or a heading above it to name its stub")
                    tagged = Stub(index=-1, title=last_title, label=None)
                    emit_stub(tagged)
                tagged.solution.append(_source(cell))
                continue
            tagged = None
            kept = copy.deepcopy(cell)
            kept.outputs = []
            kept.execution_count = None
            out.append(kept)
            continue
        tagged = None
        if cell.cell_type != "markdown":
            if region is None:
                out.append(copy.deepcopy(cell))
            continue
        if region is None and _source(cell).lstrip().startswith(INSTRUCTOR_CALLOUT):
            continue                      # instructor callouts are not in the student edition
        # A markdown cell: split it into kept text, solution text and the events between.
        lines = _source(cell).split("\n")
        chunks: list[list[str]] = [[]]
        i = 0
        while i < len(lines):
            line = lines[i]
            m = _DIRECTIVE.match(line)
            name_ = m["name"] if m else None
            if region is None:
                if name_ == "solution-start":
                    end = _block_end(lines, i, m["fence"], where)
                    label = m["arg"].split()[0] if m["arg"] else ""
                    region = Stub(index=-1, title=titles.get(label, label or "exercise"),
                                  label=label or None)
                    i = end
                    continue
                if name_ == "solution-end":
                    raise StudentError(f"{where}: solution-end without a solution-start above it")
                if name_ == "solution":
                    end = _block_end(lines, i, m["fence"], where)
                    label = m["arg"].split()[0] if m["arg"] else ""
                    chunks[-1].append(f"*Your answer* to **{titles.get(label, label)}**: "
                                      "double-click this cell and write it here.")
                    i = end
                    continue
                if name_ in ("exercise", "exercise-start"):
                    last_title = plain(m["arg"]) or last_title
                heading = _HEADING.match(line)
                if heading and not m:
                    last_title = plain(heading.group(1))
                chunks[-1].append(line)
                i += 1
            else:
                if name_ == "solution-end":
                    i = _block_end(lines, i, m["fence"], where)
                    chunks.append(region)   # the stub goes here, between the kept chunks
                    chunks.append([])
                    region = None
                    continue
                if name_ == "solution-start":
                    raise StudentError(f"{where}: solution-start inside the open solution "
                                       f"{region.label!r} (missing solution-end?)")
                region.prose.append(line)   # solution prose: dropped (reveal shows it)
                i += 1
        first = True
        for chunk in chunks:
            if isinstance(chunk, Stub):
                close(chunk)
                continue
            text = "\n".join(chunk).strip("\n")
            if not text.strip():
                continue
            if first and text == _source(cell):
                out.append(copy.deepcopy(cell))
            elif first:
                kept = copy.deepcopy(cell)
                kept.source = text
                out.append(kept)
            else:
                out.append(nbformat.v4.new_markdown_cell(text))
            first = False
    if region is not None:
        raise StudentError(f"{name}: solution-start {region.label!r} has no solution-end")
    for stub in stubs:
        scaffold(stub, out, Path(name).stem)
        out[stub.index].source = stub.source
    student = copy.deepcopy(nb)
    student.cells = out
    student.metadata.setdefault("course", {})["edition"] = "student"
    return student, stubs


_INLINE_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")
_HINT = re.compile(r"#\s*hint:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def _parse(source: str) -> ast.Module | None:
    """The syntax tree of a cell (IPython magics turned into Python first), or None."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        source = TransformerManager().transform_cell(source)
    except ImportError:                     # pragma: no cover - IPython comes with ipykernel
        pass
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def _target_names(node) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def assigned_names(sources: list[str]) -> tuple[list[str], dict[str, str]]:
    """Names the code assigns outside any function or class (in order), and the signatures of
    the functions it defines at top level: ``(names, {function: "a, b=2"})``.

    Names bound inside loops, and names starting with ``_``, are not answers: left out.
    """
    names: list[str] = []
    functions: dict[str, str] = {}

    def add(name):
        if not name.startswith("_") and name not in names:
            names.append(name)

    def visit(body):
        for node in body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    for name in _target_names(target):
                        add(name)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                for name in _target_names(node.target):
                    add(name)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                add(node.name)
                functions[node.name] = ast.unparse(node.args)
            elif isinstance(node, ast.ClassDef):
                add(node.name)
            elif isinstance(node, (ast.If, ast.With, ast.Try)):   # not loops: their names vary
                for part in ("body", "orelse", "finalbody"):
                    visit(getattr(node, part, []) or [])
                for handler in getattr(node, "handlers", []) or []:
                    visit(handler.body)

    for source in sources:
        tree = _parse(source)
        if tree is not None:
            visit(tree.body)
    return names, functions


def bound_names(source: str) -> set[str]:
    """Every name a cell binds anywhere (assignments, imports, defs, loop and ``as`` targets)."""
    tree = _parse(source)
    if tree is None:
        return set()
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound


def read_names(source: str) -> set[str]:
    """Names a cell reads and does not bind itself (what it needs from the cells above)."""
    tree = _parse(source)
    if tree is None:
        return set()
    loads = {n.id for n in ast.walk(tree)
             if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return loads - bound_names(source)


def scaffold(stub: Stub, cells: list, notebook: str = "") -> None:
    """Fill in the stub's answer names, function signatures and hint.

    The names the task asks for are the names the solution assigns that the task's text (the
    markdown cells just above the stub) shows as inline code, e.g. "store it in `speedup`".
    Where the text names none of them, those that later cells read; where no later cell reads
    any, every name the solution assigns (a chapter exercise's worked answer).
    """
    stub.notebook = notebook
    names, functions = assigned_names(stub.solution)
    prompt = []
    for cell in reversed(cells[:stub.index]):
        if cell.cell_type == "code":
            break
        if cell.cell_type == "markdown":
            prompt.append(_source(cell))
    mentioned = set(_INLINE_NAME.findall("\n".join(prompt)))
    later = set().union(*(read_names(_source(c)) for c in cells[stub.index + 1:]
                          if c.cell_type == "code" and STUB_TAG not in _tags(c)))
    answers = ([n for n in names if n in mentioned] or [n for n in names if n in later] or names)
    stub.answers = answers
    stub.functions = {n: functions[n] for n in answers if n in functions}
    hints = [h for source in stub.solution for h in _HINT.findall(source)]
    stub.hint = "; ".join(hints)


def names_only_a_solution_defines(student, stubs: list[Stub]) -> list[str]:
    """Cells that read a name which only an instructor solution defines, not its stub's answers.

    A learner who assigns just the names a task asks for would get a ``NameError`` there (the
    Lab 2 bug of issue 16: ``smol_by`` was made inside a solution and read by later cells).
    Static: each code cell's reads are compared with what the cells above bind.
    """
    by_index = {s.index: s for s in stubs}
    defined: set[str] = set()
    only_in_solution: dict[str, str] = {}
    problems = []
    for index, cell in enumerate(student.cells):
        if cell.cell_type != "code":
            continue
        stub = by_index.get(index)
        if stub is not None:
            defined |= set(stub.answers)
            for name in assigned_names(stub.solution)[0]:
                if name not in defined:
                    only_in_solution.setdefault(name, stub.title)
            continue
        source = _source(cell)
        for name in sorted(read_names(source) & (only_in_solution.keys() - defined)):
            problems.append(f"cell {index} reads {name!r}, which only the solution of "
                            f"{only_in_solution[name]!r} defines: define it in a cell outside "
                            "the solution, or ask for it in the task's text")
        defined |= bound_names(source)
    return problems


def stub_raises_its_title(stub: Stub) -> str | None:
    """Run a stub's code; None when it raises exactly ``NotImplementedError(title)``, else why not.

    A stub is a single ``raise`` statement, so it is run in this process (no kernel needed).
    """
    try:
        exec(compile(stub.source, f"<stub {stub.title}>", "exec"), {})
    except NotImplementedError as exc:
        if exc.args == (stub.title,):
            return None
        return f"stub {stub.title!r} raised NotImplementedError{exc.args!r}"
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        return f"stub {stub.title!r} raised {type(exc).__name__}: {exc}"
    return f"stub {stub.title!r} did not raise"


#: Run in the kernel in place of a stub for a *minimal* answer: the instructor's solution runs in
#: a copy of the notebook's namespace, and only the names the task asks for come back.
_MINIMAL = """\
def _labkit_minimal_answer(sources, names):
    from IPython import get_ipython
    namespace = dict(globals())
    for source in sources:
        exec(compile(get_ipython().transform_cell(source), "<solution>", "exec"), namespace)
    return {{name: namespace[name] for name in names}}
globals().update(_labkit_minimal_answer({sources!r}, {names!r}))
del _labkit_minimal_answer
"""


def minimal_answer_source(stub: Stub) -> str:
    """Kernel code that assigns only ``stub.answers``, with the values the solution computes."""
    return _MINIMAL.format(sources=list(stub.solution), names=list(stub.answers))


def verify(student, stubs: list[Stub], cwd: Path, timeout: int = 180,
           minimal: bool = True) -> list[str]:
    """Execute a student notebook in a kernel; return the problems found (empty: all is well).

    Each stub must raise ``NotImplementedError(title)`` as written. Then an answer runs in its
    place: with ``minimal`` (the default) only the names the task asks for are assigned, with
    the values the instructor's solution computes (a learner who answers just what is asked);
    otherwise the whole solution runs. Any other error, in any cell, is a problem: the student
    notebook must fail only at its stubs.
    """
    from nbclient import NotebookClient

    nb = copy.deepcopy(student)
    by_index = {s.index: s for s in stubs}
    problems = []
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}})
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    with client.setup_kernel(stderr=subprocess.DEVNULL):   # hides ipykernel's TCP notice
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except (CellTimeoutError, DeadKernelError) as exc:
                problems.append(f"cell {index}: {type(exc).__name__} (the run stops here): "
                                f"{str(exc).splitlines()[0]}")
                break
            errors = [o for o in cell.outputs if o.output_type == "error"]
            stub = by_index.get(index)
            if stub is None:
                problems += [f"cell {index} (not a stub) raised {e.ename}: {e.evalue}" for e in errors]
                continue
            expected = [e for e in errors if e.ename == "NotImplementedError"
                        and e.evalue == stub.title]
            if not expected:
                got = ", ".join(f"{e.ename}: {e.evalue}" for e in errors) or "nothing"
                problems.append(f"stub {stub.title!r} (cell {index}) should raise "
                                f"NotImplementedError({stub.title!r}); it raised {got}")
            answers = [minimal_answer_source(stub)] if minimal else stub.solution
            for source in answers:
                solution = nbformat.v4.new_code_cell(source)
                client.execute_cell(solution, index)
                problems += [f"the solution of {stub.title!r} raised {o.ename}: {o.evalue}"
                             for o in solution.outputs if o.output_type == "error"]
    return problems


def toc_without_instructors(toc: dict) -> dict:
    """The toc without the instructor guide part (instructor-only pages)."""
    toc = copy.deepcopy(toc)
    toc["parts"] = [p for p in toc.get("parts", []) if p.get("caption") != INSTRUCTOR_PART]
    return toc


def student_config(config: dict) -> dict:
    """The book configuration of the student edition, derived from the course's _config.yml."""
    config = copy.deepcopy(config)
    config["title"] = f"{config.get('title', 'Course')} (student edition)"
    config.setdefault("execute", {})["execute_notebooks"] = "off"   # stubs raise: not executed
    sphinx = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx["hide_solutions"] = True      # sphinx-exercise: plain {solution} blocks vanish too
    # The launch buttons would open the instructor notebooks from the repository; students get
    # theirs from this folder (download button, or nbgitpuller from a student repository).
    config["launch_buttons"] = {"notebook_interface": "jupyterlab"}
    return config


def write_student_tree(root: Path, out: Path) -> dict[str, list[Stub]]:
    """Write the student edition's sources into ``out``; returns ``{notebook: stubs}``."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    written = {}
    for rel, path in student_sources(root):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix != ".ipynb":
            shutil.copy2(path, target)
            continue
        nb = nbformat.read(path, as_version=4)
        student, stubs = studentize(nb, str(rel))
        nbformat.validate(student)
        nbformat.write(student, target)
        written[str(rel)] = stubs
    config = student_config(yaml.safe_load((root / "_config.yml").read_text()))
    extensions = config.get("sphinx", {}).get("local_extensions") or {}
    for name, path in list(extensions.items()):
        if not (out / path).is_dir():       # e.g. the instructor guide's, which is left out
            del extensions[name]
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    (out / "_toc.yml").write_text(yaml.safe_dump(toc_without_instructors(toc), sort_keys=False))
    return written


WORKSPACE_README = """\
# Your workspace

These are the course's student notebooks: each exercise is a stub that keeps the shape of the
answer (the names to assign, `...` to replace, a hint). Fill in a stub, run it, and run the
check cell after it: the check tells you what is off. This folder is yours: git ignores it, no
`make` target deletes it, and `make workspace` only adds what is missing (after a `git pull`,
new notebooks appear; the ones you have are never overwritten). To start a notebook afresh,
delete or rename your copy and run `make workspace` again.

Stuck? In a new cell, `from labkit.solutions import reveal` and call what the stub's
"Stuck?" line says, e.g. `reveal("ex-01-llama3-8b")`: it prints the instructor's solution.
"""


def student_sources(root: Path):
    """``(relative path, path)`` of every file of the student edition, in a stable order."""
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root)
            if any(part in SKIP for part in rel.parts) or not path.is_file():
                continue
            yield rel, path


def write_workspace(root: Path, dest: Path) -> tuple[list[str], list[str]]:
    """Add the student notebooks and the files they read to ``dest``, never overwriting.

    The layout is the student edition's (``book/``, ``labs/``, each notebook next to the files
    it reads), so a notebook runs from its folder as in the repository. A file already in
    ``dest`` is kept as it is, whatever its content (it may be a learner's work). Returns
    ``(written, kept)``: the relative paths added and those left alone.
    """
    written, kept = [], []
    dest.mkdir(parents=True, exist_ok=True)
    files = [(Path("README.md"), None)] + list(student_sources(root))
    for rel, path in files:
        target = dest / rel
        if target.exists():
            kept.append(str(rel))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path is None:
            target.write_text(WORKSPACE_README)
        elif path.suffix == ".ipynb":
            student, _ = studentize(nbformat.read(path, as_version=4), str(rel))
            nbformat.validate(student)
            partial = target.with_name(target.name + ".partial")
            nbformat.write(student, partial)
            partial.replace(target)          # never a half-written notebook under its name
        else:
            shutil.copy2(path, target)
        written.append(str(rel))
    return written, kept


def build_html(out: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Strict build of the student edition in ``out`` into ``out/_build/html``."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(out), "-W", "-n", "--keep-going", "--all"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def workspace_main(root: Path, dest: Path) -> int:
    """``make workspace``: add what is missing to ``dest``, say what was kept."""
    try:
        written, kept = write_workspace(root, dest)
    except StudentError as exc:
        print(f"make_student: {exc}", file=sys.stderr)
        return 1
    notebooks = [k for k in kept if k.endswith(".ipynb")]
    print(f"workspace {dest}: added {len(written)} file(s)"
          + "".join(f"\n  + {w}" for w in written if w.endswith(".ipynb")))
    if kept:
        print(f"kept {len(kept)} file(s) you already have, not overwritten "
              f"({len(notebooks)} notebook(s)" + (": " + ", ".join(notebooks) if notebooks else "")
              + "); delete one and re-run to get a fresh copy")
    print(f"open it with: make lab  (JupyterLab in {dest})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the course repository")
    parser.add_argument("--out", type=Path, default=None, help="default: ROOT/_build/student")
    parser.add_argument("--no-html", action="store_true", help="write the notebooks only")
    parser.add_argument("--verify", action="store_true",
                        help="execute every student notebook, each stub replaced by a minimal "
                             "answer (only the names its task asks for)")
    parser.add_argument("--only", default="", help="with --verify: only notebooks whose path "
                                                   "contains this text (e.g. labs/02)")
    parser.add_argument("--workspace", type=Path, nargs="?", const=Path("my-work"), default=None,
                        help="instead: add the student notebooks to this folder (default "
                             "my-work/, relative to --root), never overwriting a file")
    args = parser.parse_args(argv)
    if args.workspace is not None:
        dest = args.workspace if args.workspace.is_absolute() else args.root / args.workspace
        return workspace_main(args.root, dest)
    out = args.out or args.root / "_build" / "student"
    try:
        written = write_student_tree(args.root, out)
    except StudentError as exc:
        print(f"make_student: {exc}", file=sys.stderr)
        return 1
    status = 0
    for rel, stubs in written.items():
        student = nbformat.read(out / rel, as_version=4)
        problems = [p for s in stubs if (p := stub_raises_its_title(s))]
        problems += names_only_a_solution_defines(student, stubs)
        print(f"{rel}: {len(stubs)} stub(s)" + "".join(f"\n  {p}" for p in problems))
        status |= bool(problems)
        if args.verify and args.only in rel:
            problems = verify(student, stubs, (out / rel).parent)
            print("  verified with minimal answers: " + (
                "fails only at its stubs" if not problems else
                "PROBLEMS\n    " + "\n    ".join(problems)))
            status |= bool(problems)
    print(f"student notebooks: {out}")
    if not args.no_html:
        result = build_html(out)
        log = result.stdout + result.stderr
        if result.returncode != 0 or "WARNING" in log:
            print(log[-6000:], file=sys.stderr)
            print("make_student: the student HTML build failed (see above)", file=sys.stderr)
            return 1
        print(f"student HTML book: {out / '_build' / 'html' / 'index.html'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
