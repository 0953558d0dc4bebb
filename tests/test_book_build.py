"""The book builds with warnings as errors (nitpicky: every reference and glossary term resolves).

Notebooks are not executed here: nbval executes each one once in the same `make test` run,
so executing them again in the build would double the test time. `make book` builds with
execution (cached).
"""

from book_build import strict_build


def test_strict_build_has_no_warnings(repo_root, tmp_path):
    result = strict_build(repo_root, tmp_path, execute="off")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "WARNING" not in log, log[-6000:]
    html = tmp_path / "_build" / "html"
    assert (html / "book" / "01-models.html").is_file()
    assert (html / "_static" / "mathjax").is_dir(), "offline MathJax missing from the build"
