from labkit import course


def test_toc_entries_of_a_small_book(tmp_path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n  - caption: A\n    chapters:\n"
        "      - file: a\n        sections:\n          - file: a1\n      - file: b\n")
    assert course.toc_entries(tmp_path) == ["intro", "a", "a1", "b"]


def test_toc_entries_of_this_course():
    entries = course.toc_entries()
    assert entries[0] == "book/intro" and "book/01-models" in entries
