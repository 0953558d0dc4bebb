"""Checks of the course's structure, used by the tests on the real repository and on fixtures.

Each function returns a list of problems (empty when all is well), so a test can show every
problem at once and the gate tests can prove that each check really fails on a broken course.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from labkit import course

CHAPTER = re.compile(r"^\d\d-.+\.ipynb$")
#: What every chapter notebook must contain, per the chapter template (course-design.md).
CHAPTER_SECTIONS = {
    "At a glance": re.compile(r"^:::\{admonition\} At a glance", re.M),
    "On EKS": re.compile(r"^## On EKS\s*$", re.M),
    "an exercise": re.compile(r"^```\{exercise(-start)?\}", re.M),
    "Key takeaways": re.compile(r"^## Key takeaways\s*$", re.M),
    "Further reading": re.compile(r"^## Further reading\s*$", re.M),
}
_EXERCISE_LABEL = re.compile(r"^```\{exercise(?:-start)?\}[^\n]*\n:label: (\S+)", re.M)
_SOLUTION_FOR = re.compile(r"^```\{solution(?:-start)?\} (\S+)", re.M)


def toc_entries(root: Path) -> list[str]:
    """Every ``file:`` and the ``root:`` of ``_toc.yml``, without suffix, in order."""
    return course.toc_entries(root)


def resolve_entry(root: Path, entry: str) -> Path | None:
    """The file a toc entry points to (``.ipynb`` or ``.md``), or None if none exists."""
    for suffix in (".ipynb", ".md"):
        if (root / (entry + suffix)).is_file():
            return root / (entry + suffix)
    return None


def missing_toc_entries(root: Path) -> list[str]:
    """Toc entries with no file behind them."""
    return [f"_toc.yml lists {e!r} but neither {e}.ipynb nor {e}.md exists"
            for e in toc_entries(root) if resolve_entry(root, e) is None]


def notebooks(root: Path) -> list[Path]:
    """The course's notebooks: everything under book/ and labs/."""
    return sorted(p for folder in ("book", "labs") for p in (root / folder).rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def notebooks_not_in_toc(root: Path) -> list[str]:
    """Notebooks under book/ and labs/ that the toc does not list (they would never be built)."""
    listed = {resolve_entry(root, e) for e in toc_entries(root)}
    return [f"{p.relative_to(root)} is not in _toc.yml" for p in notebooks(root) if p not in listed]


def output_problems(path: Path) -> list[str]:
    """Outputs or execution counts stored in a notebook (the course stores them stripped)."""
    nb = json.loads(path.read_text())
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"{path.name}: cell {i} has stored outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"{path.name}: cell {i} has an execution count")
    return problems


def markdown_of(path: Path) -> str:
    """All markdown cells of a notebook (or the text of a .md page), joined."""
    if path.suffix == ".md":
        return path.read_text()
    nb = json.loads(path.read_text())
    return "\n\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                       for c in nb["cells"] if c["cell_type"] == "markdown")


def chapter_problems(path: Path) -> list[str]:
    """Sections of the chapter template that a chapter lacks, and exercises without a solution."""
    text = markdown_of(path)
    problems = [f"{path.name}: no {name!r} section" for name, rx in CHAPTER_SECTIONS.items()
                if not rx.search(text)]
    exercises = _EXERCISE_LABEL.findall(text)
    solved = set(_SOLUTION_FOR.findall(text))
    problems += [f"{path.name}: exercise {label!r} has no solution" for label in exercises
                 if label not in solved]
    problems += [f"{path.name}: exercise without a :label: (solutions refer to it)"
                 for _ in range(len(re.findall(r"^```\{exercise(?:-start)?\}", text, re.M)) - len(exercises))]
    return problems


def chapters(root: Path) -> list[Path]:
    """Chapter notebooks: book/NN-topic.ipynb."""
    return sorted(p for p in (root / "book").glob("*.ipynb") if CHAPTER.match(p.name))
