"""Write the student edition of the course: notebooks with exercise stubs, and its HTML book.

    python scripts/make_student.py            # what `make student` runs
    python scripts/make_student.py --no-html  # the notebooks only
    python scripts/make_student.py --verify   # also execute every student notebook (slow)

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
``exercise-stub``)::

    # Exercise: <title>. Replace this line and the next with your solution.
    raise NotImplementedError("<title>")

A solution without code (prose only) becomes a markdown cell "*Your answer:* ...". The title
is the one of the exercise whose ``:label:`` the solution names; for a tagged cell it is the
nearest exercise title or heading above the cell. Every other cell is copied unchanged, so
check functions, imports and the cells after an exercise stay as they are; outputs are
stripped.

What the tests prove (tests/test_student.py): every stub raises exactly
``NotImplementedError(title)``; apart from the stubs the student notebook has the instructor
notebook's code cells, unchanged and in order (so, since nbval runs the instructor notebooks,
a student notebook fails only at its stubs); and, on fixture notebooks, a full execution in
which each stub raises and is then replaced by its solution runs to the end. ``--verify``
runs that full execution on the real notebooks.
"""

from __future__ import annotations

import argparse
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

    @property
    def source(self) -> str:
        return stub_source(self.title)


def stub_source(title: str) -> str:
    """The code of a stub cell for the exercise ``title``."""
    return (f"# Exercise: {title}. Replace this line and the next with your solution.\n"
            f"raise NotImplementedError({json.dumps(title, ensure_ascii=False)})")


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
                i += 1                      # solution prose: dropped
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
    student = copy.deepcopy(nb)
    student.cells = out
    student.metadata.setdefault("course", {})["edition"] = "student"
    return student, stubs


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


def verify(student, stubs: list[Stub], cwd: Path, timeout: int = 180) -> list[str]:
    """Execute a student notebook in a kernel; return the problems found (empty: all is well).

    Each stub must raise ``NotImplementedError(title)``; the instructor's solution is then run
    in its place, so that the following cells see what a learner's answer would define. Any
    other error, in any cell, is a problem: the student notebook must fail only at its stubs.
    """
    from nbclient import NotebookClient

    nb = copy.deepcopy(student)
    by_index = {s.index: s for s in stubs}
    problems = []
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel(stderr=subprocess.DEVNULL):   # hides ipykernel's TCP notice
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            client.execute_cell(cell, index)
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
            for source in stub.solution:
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
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root)
            if any(part in SKIP for part in rel.parts) or not path.is_file():
                continue
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


def build_html(out: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Strict build of the student edition in ``out`` into ``out/_build/html``."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(out), "-W", "-n", "--keep-going", "--all"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the course repository")
    parser.add_argument("--out", type=Path, default=None, help="default: ROOT/_build/student")
    parser.add_argument("--no-html", action="store_true", help="write the notebooks only")
    parser.add_argument("--verify", action="store_true",
                        help="execute every student notebook (stubs replaced by solutions)")
    args = parser.parse_args(argv)
    out = args.out or args.root / "_build" / "student"
    try:
        written = write_student_tree(args.root, out)
    except StudentError as exc:
        print(f"make_student: {exc}", file=sys.stderr)
        return 1
    status = 0
    for rel, stubs in written.items():
        problems = [p for s in stubs if (p := stub_raises_its_title(s))]
        print(f"{rel}: {len(stubs)} stub(s)" + "".join(f"\n  {p}" for p in problems))
        status |= bool(problems)
        if args.verify:
            student = nbformat.read(out / rel, as_version=4)
            problems = verify(student, stubs, (out / rel).parent)
            print("  verified: " + ("fails only at its stubs" if not problems else
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
