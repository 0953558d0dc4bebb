"""The book builds with warnings as errors (nitpicky: every reference and glossary term resolves).

Notebooks are not executed here: nbval executes each one once in the same `make test` run,
so executing them again in the build would double the test time. `make book` builds with
execution (cached). The build itself is the session fixture ``strict_book`` (conftest.py),
which test_browser.py reuses.
"""


def test_strict_build_has_no_warnings(strict_book):
    log = strict_book.log
    assert strict_book.returncode == 0, log[-6000:]
    assert "WARNING" not in log, log[-6000:]
    html = strict_book.html
    assert (html / "book" / "01-models.html").is_file()
    assert (html / "_static" / "mathjax").is_dir(), "offline MathJax missing from the build"
