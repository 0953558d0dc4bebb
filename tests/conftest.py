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
