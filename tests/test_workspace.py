"""`make workspace`: the learner's own copy of the student notebooks in my-work/.

Proved here: the workspace has every student notebook (stubs, no solution code) next to the
files it reads; re-running adds only what is missing and keeps a learner's edit; the folder is
git-ignored; `make clean` and `make distclean` leave it alone (their recipes, read from the
Makefile, are run in a scratch folder); `make lab` opens it; and a real chapter notebook runs
from the workspace, each stub given a minimal answer.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import course_checks as cc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_student as ms  # noqa: E402

#: A path literal a notebook opens relative to its own folder: Path("manifests/x.yaml"), "…yaml".
_PATH_LITERAL = re.compile(r"""["']((?:\.\./)?[A-Za-z0-9_./-]+\.(?:ya?ml|md|json|csv|txt))["']""")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    dest = tmp_path_factory.mktemp("ws") / "my-work"
    written, kept = ms.write_workspace(ROOT, dest)
    return dest, written, kept


def test_the_workspace_has_every_student_notebook_without_solutions(workspace):
    dest, written, kept = workspace
    assert kept == [] and "README.md" in written
    notebooks = [p.relative_to(ROOT) for p in cc.notebooks(ROOT)]
    assert notebooks and all((dest / rel).is_file() for rel in notebooks)
    assert not (dest / "book" / "instructors").exists(), "instructor material stays out"
    for rel in notebooks:
        student = nbformat.read(dest / rel, as_version=4)
        assert student.metadata["course"]["edition"] == "student"
        assert not [c for c in student.cells if "{solution" in c.source], rel
        assert not [c for c in student.cells if "solution" in c.metadata.get("tags", [])], rel


def test_the_files_a_notebook_reads_are_next_to_it_in_the_workspace(workspace):
    dest, _, _ = workspace
    missing = []
    for path in cc.notebooks(ROOT):
        rel = path.relative_to(ROOT)
        for cell in nbformat.read(dest / rel, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            for literal in _PATH_LITERAL.findall(cell.source):
                in_repo = (path.parent / literal).exists()
                if in_repo and not ((dest / rel).parent / literal).exists():
                    missing.append(f"{rel}: {literal}")
    assert missing == []


def test_rerunning_keeps_the_learners_work_and_adds_what_is_missing(tmp_path):
    dest = tmp_path / "my-work"
    ms.write_workspace(ROOT, dest)
    mine = dest / "labs" / "01-small-model-inference.ipynb"
    nb = nbformat.read(mine, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("answer_seconds = 1.5  # my answer"))
    nbformat.write(nb, mine)
    edited = mine.read_bytes()
    (dest / "book" / "05-inference-servers.ipynb").unlink()          # deleted to start afresh
    written, kept = ms.write_workspace(ROOT, dest)
    assert written == ["book/05-inference-servers.ipynb"]
    assert "labs/01-small-model-inference.ipynb" in kept
    assert mine.read_bytes() == edited, "the learner's notebook was overwritten"


def test_the_command_says_what_it_kept(tmp_path, capsys):
    assert ms.main(["--workspace", str(tmp_path / "w")]) == 0
    assert ms.main(["--workspace", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "added 0 file(s)" in out and "not overwritten" in out
    assert "labs/02-quantization.ipynb" in out


def test_my_work_is_ignored_by_git():
    result = subprocess.run(["git", "check-ignore", "-q", "my-work/labs/x.ipynb"], cwd=ROOT)
    assert result.returncode == 0, ".gitignore must list my-work/"


def makefile_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target, with $(VENV) and $(BIN) expanded."""
    lines = (ROOT / "Makefile").read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{target}:", line))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        command = line[1:].lstrip("@")
        recipe.append(command.replace("$(VENV)", ".venv").replace("$(BIN)", ".venv/bin"))
    return recipe


@pytest.mark.parametrize("target", ["clean", "distclean"])
def test_make_clean_and_distclean_leave_my_work_alone(tmp_path, target):
    for folder in ("my-work/labs", "_build/student", ".venv/bin", ".cache", "book/__pycache__"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "my-work" / "labs" / "mine.ipynb").write_text("{}")
    commands = makefile_recipe("clean")
    if target == "distclean":
        commands += makefile_recipe("distclean")
    assert commands and not [c for c in commands if "my-work" in c]
    for command in commands:
        subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True)
    assert not (tmp_path / "_build").exists(), "the recipe did not run"
    assert (tmp_path / "my-work" / "labs" / "mine.ipynb").read_text() == "{}"


def test_make_lab_opens_the_workspace_and_make_workspace_writes_it():
    lab = " ".join(makefile_recipe("lab"))
    assert "--ServerApp.root_dir=my-work" in lab and "--workspace" in lab
    assert "make_student.py --workspace" in " ".join(makefile_recipe("workspace"))
    assert "my-work" not in " ".join(makefile_recipe("student"))


def test_a_chapter_runs_from_the_workspace_with_minimal_answers(workspace):
    """Chapter 06 (about 12 s): reads manifests/ from its folder; each stub raises its title,
    then gets only the names it asks for, and every other cell runs."""
    dest, _, _ = workspace
    rel = Path("book/06-distributed-computing.ipynb")
    student, stubs = ms.studentize(nbformat.read(ROOT / rel, as_version=4), str(rel))
    assert stubs
    assert ms.verify(nbformat.read(dest / rel, as_version=4), stubs, (dest / rel).parent,
                     timeout=180) == []
