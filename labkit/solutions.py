"""Reveal an exercise's instructor solution on purpose, from a student notebook.

The student notebooks (``make workspace`` writes them into ``my-work/``) have stubs instead of
solutions, so no answer is in view. When you are stuck, ask for one::

    from labkit.solutions import reveal
    reveal("ex-01-llama3-8b")                                  # a chapter exercise, by label
    reveal("Task 3: SmolLM2, a real 135 M model", notebook="02-quantization")   # a lab task

or from a terminal: ``python -m labkit.solutions ex-01-llama3-8b``. Each stub's "Stuck?" line
gives the exact call. The solution is read from the course repository's own notebook (the
instructor edition) at the time of the call, so it is the one the tests run.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from labkit.course import ROOT

#: Where the course's notebooks are, relative to the repository root.
FOLDERS = ("book", "labs")


@dataclass
class Solution:
    """One exercise's solution, as the instructor notebook has it."""

    notebook: str          #: the notebook's path relative to the repository root
    title: str             #: the exercise or task title
    label: str | None      #: the exercise label (chapters), None for a lab's tagged cells
    code: list[str]        #: the solution's code cells
    prose: str             #: the explanation written with it (chapters), may be empty

    def text(self) -> str:
        parts = [f"Solution of {self.title!r} ({self.notebook}):", ""]
        for number, code in enumerate(self.code, 1):
            if len(self.code) > 1:
                parts.append(f"# --- cell {number} of {len(self.code)}")
            parts.append(code.rstrip())
        if self.prose.strip():
            parts += ["", self.prose.strip()]
        return "\n".join(parts)


def _make_student(root: Path):
    """The repository's scripts/make_student.py (it knows how solutions are marked)."""
    path = root / "scripts" / "make_student.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reveal() needs the course repository")
    spec = importlib.util.spec_from_file_location("_labkit_make_student", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def solutions(root: str | Path = ROOT) -> list[Solution]:
    """Every solution with code in the course's notebooks, in book order of the folders.

    Read again whenever a notebook changes (a solution is always the notebook's current one).
    """
    root = Path(root)
    stamp = tuple((str(p), p.stat().st_mtime_ns) for folder in FOLDERS
                  for p in sorted((root / folder).glob("*.ipynb")))
    return list(_read_solutions(root, stamp))


@functools.lru_cache(maxsize=4)
def _read_solutions(root: Path, stamp: tuple) -> tuple[Solution, ...]:
    import nbformat

    ms = _make_student(root)
    found = []
    for folder in FOLDERS:
        for path in sorted((root / folder).glob("*.ipynb")):
            rel = str(path.relative_to(root))
            _, stubs = ms.studentize(nbformat.read(path, as_version=4), rel)
            found += [Solution(rel, s.title, s.label, list(s.solution),
                               "\n".join(getattr(s, "prose", []))) for s in stubs]
    return tuple(found)


def find(exercise: str, notebook: str | None = None, root: str | Path = ROOT) -> Solution:
    """The solution of ``exercise``: its label, its exact title, or the start of its title
    ("Task 3b"), in ``notebook`` (a stem or path, e.g. ``"02-quantization"``) if given.

    Raises LookupError, listing the candidates, when none or several match.
    """
    wanted = exercise.strip().casefold()
    pool = [s for s in solutions(root)
            if notebook is None or Path(notebook).stem == Path(s.notebook).stem]
    for match in (lambda s: (s.label or "").casefold() == wanted,
                  lambda s: s.title.casefold() == wanted,
                  lambda s: s.title.casefold().startswith(wanted)):
        hits = [s for s in pool if match(s)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            names = "; ".join(f"{s.title!r} in {s.notebook}" for s in hits)
            raise LookupError(f"{exercise!r} matches several exercises ({names}): "
                              "name the notebook, e.g. notebook=\"02-quantization\"")
    where = f" in {notebook}" if notebook else ""
    raise LookupError(f"no exercise {exercise!r}{where}: give its label (ex-01-...) or its "
                      "title as the stub's \"Stuck?\" line shows it")


def reveal(exercise: str, notebook: str | None = None) -> Solution:
    """Print the instructor's solution of ``exercise`` (see :func:`find`) and return it."""
    solution = find(exercise, notebook)
    print(solution.text())
    return solution


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.solutions",
                                     description="Print an exercise's instructor solution.")
    parser.add_argument("exercise", help="its label (ex-01-llama3-8b) or title (Task 3b)")
    parser.add_argument("--notebook", default=None, help="e.g. 02-quantization")
    args = parser.parse_args(argv)
    try:
        reveal(args.exercise, args.notebook)
    except LookupError as exc:
        print(f"labkit.solutions: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
