"""Shared fixtures of the course's tests."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NBVAL_DEFAULT_CELL_TIMEOUT = 2000   # nbval's own default, replaced by the book's limit below


def book_cell_timeout(root: Path = ROOT) -> int:
    """``execute.timeout`` of _config.yml: one per-cell limit for the book build and for nbval."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    return int(config["execute"]["timeout"])


def pytest_configure(config):
    option = config.option
    if getattr(option, "nbval_cell_timeout", None) in (NBVAL_DEFAULT_CELL_TIMEOUT, str(NBVAL_DEFAULT_CELL_TIMEOUT)):
        option.nbval_cell_timeout = book_cell_timeout()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where _config.yml and _toc.yml are)."""
    return ROOT


@pytest.fixture(scope="session")
def strict_book(repo_root, tmp_path_factory):
    """One strict build of the real book, notebooks not executed, shared by the whole run.

    test_book_build.py checks it has no warnings; test_browser.py opens its pages in Chromium.
    Built once per `make test`, so the book costs one build, and nbval alone executes notebooks.
    Returns ``returncode``, ``log`` and ``html`` (the built site's folder).
    """
    from types import SimpleNamespace

    from book_build import strict_build

    out = tmp_path_factory.mktemp("strict-book")
    result = strict_build(repo_root, out, execute="off")
    return SimpleNamespace(returncode=result.returncode, log=result.stdout + result.stderr,
                           html=out / "_build" / "html")


# --- The notebook run is also the student run -------------------------------------------------
# nbval executes each instructor notebook once. Each solution is run the way the student edition
# meets it: first the student's stub, at that cell, must raise exactly NotImplementedError(title)
# (a learner who runs it unfilled is stopped there, with the exercise's name); then a *minimal*
# answer runs in its place, the instructor's solution executed in a copy of the namespace of
# which only the names the task asks for come back. Every other cell is the student notebook's
# own (tests/test_student.py proves statically that they are the same cells, unchanged, in
# order). So one `make test` proves each student notebook fails exactly at its stubs and, with
# minimal answers, runs to the end, at no extra kernel time. LABKIT_NBVAL_AS_WRITTEN=1 runs the
# instructor notebooks exactly as written instead.
AS_WRITTEN_ENV = "LABKIT_NBVAL_AS_WRITTEN"

_STUB_CHECK = """\
# The student edition's stub for {title!r}, then a minimal answer (tests/conftest.py).
def _labkit_stub_fails_here(source, title):
    try:
        exec(compile(source, "<stub>", "exec"), dict(globals()))
    except NotImplementedError as exc:
        if exc.args == (title,):
            return
        raise AssertionError(f"the stub of {{title!r}} raised NotImplementedError{{exc.args!r}}, "
                             f"not its title") from exc
    raise AssertionError(f"the student stub of {{title!r}} did not raise NotImplementedError")
_labkit_stub_fails_here({source!r}, {title!r})
del _labkit_stub_fails_here
"""


def _make_student():
    """scripts/make_student.py, the student edition's own rules, imported once."""
    import sys

    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import make_student

    return make_student


def student_run_source(stub) -> str:
    """Kernel code for the first solution cell of ``stub``: its stub fails, a minimal answer runs."""
    return (_STUB_CHECK.format(source=stub.source, title=stub.title)
            + _make_student().minimal_answer_source(stub))


def _as_student_run(notebook_file) -> None:
    """Rewrite the solution cells of the notebook nbval collected (in memory only)."""
    ms = _make_student()
    cells = notebook_file.nb.cells
    _, stubs = ms.studentize(notebook_file.nb, Path(str(notebook_file.fspath)).stem)
    start = 0
    for stub in stubs:
        for n, solution in enumerate(stub.solution):
            index = next((i for i in range(start, len(cells)) if cells[i].cell_type == "code"
                          and cells[i].source == solution), None)
            if index is None:
                raise RuntimeError(f"{notebook_file.fspath}: the solution of {stub.title!r} was "
                                   "not found in order; make_student and the notebook disagree")
            cells[index].source = (student_run_source(stub) if n == 0 else
                                   f"pass  # part of the solution of {stub.title!r}, run above")
            start = index + 1


def pytest_collection_modifyitems(session, config, items):
    import os

    if os.environ.get(AS_WRITTEN_ENV):
        return
    done = set()
    for item in items:
        parent = item.parent
        if type(item).__name__ == "IPyNbCell" and id(parent) not in done:
            done.add(id(parent))
            _as_student_run(parent)
