"""The chapter slide decks (book/_ext/slides.py): generated from the notebooks, offline."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "book" / "_ext"), str(ROOT / "book" / "instructors")]
import slides  # noqa: E402
import workshop as ws  # noqa: E402

CHAPTERS = [e for e in ws.toc_entries(ROOT) if slides.CHAPTER.match(e) and (ROOT / f"{e}.ipynb").is_file()]
NOTES = (ROOT / "book" / "instructors" / "notes.md").read_text()


@pytest.mark.parametrize("entry", CHAPTERS)
def test_every_chapter_gives_a_full_deck(entry):
    deck = slides.read_deck(ROOT, entry, NOTES)
    glance = ws.course_pages(ROOT)
    page = next(p for p in glance if p.entry == entry)
    assert deck.title == page.title and deck.why
    assert deck.objectives == page.objectives and len(deck.objectives) >= 3
    assert 3 <= len(deck.takeaways) <= 8
    assert deck.question.endswith("?") or deck.question.endswith("."), deck.question


def test_the_key_plot_tag_wins_over_the_first_plot(tmp_path):
    import json

    nb = json.loads((ROOT / "book" / "01-models.ipynb").read_text())
    plots = [c for c in nb["cells"] if c["cell_type"] == "code"
             and c.get("metadata", {}).get("mystnb", {}).get("image", {}).get("alt")]
    assert len(plots) >= 2
    for cell in plots:
        cell["metadata"]["tags"] = [t for t in cell["metadata"].get("tags", []) if t != "key-plot"]
    plots[-1]["metadata"].setdefault("tags", []).append("key-plot")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "01-models.ipynb").write_text(json.dumps(nb))
    deck = slides.read_deck(tmp_path, "book/01-models")
    assert deck.plot_alt == plots[-1]["metadata"]["mystnb"]["image"]["alt"]


def test_find_plot_matches_the_alt_text():
    page = '<p>x</p><img alt="A &amp; B" src="../_images/a.png" class="x"><img src="../_images/b.png" alt="C">'
    assert slides.find_plot(page, "A & B") == "../_images/a.png"
    assert slides.find_plot(page, "C") == "../_images/b.png"
    assert slides.find_plot(page, "D") == ""


def test_notes_question_is_the_first_quoted_question():
    notes = ("## Models (`book/01-models.ipynb`)\n\n**Questions to ask.** \"Why is it so?\" "
             "(Because.) \"And then?\"\n\n## Other (`book/02-x.ipynb`)\n")
    assert slides.notes_question(notes, "book/01-models.ipynb") == "Why is it so?"
    assert slides.notes_question(notes, "book/03-y.ipynb") == ""


def test_written_decks_are_offline_and_have_five_slides(tmp_path):
    written = slides.write_decks(ROOT, tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{e.split('/')[-1]}.html" for e in CHAPTERS)
    for name in ("reveal.js", "reveal.css", "course-slides.css", "LICENSE"):
        assert (tmp_path / "slides" / "reveal" / name).is_file()
    for path in written:
        text = path.read_text()
        assert text.count("<section>") == 5
        assert not re.search(r'(?:src|href)="(?:https?:)?//', text), f"{path.name} loads from the network"
        assert 'href="../book/' in text and "Reveal.initialize" in text


def test_the_strict_build_writes_a_deck_per_chapter(strict_book):
    assert strict_book.returncode == 0
    decks = strict_book.html / "slides"
    for entry in CHAPTERS:
        assert (decks / f"{entry.split('/')[-1]}.html").is_file(), entry
    index = (strict_book.html / "book" / "instructors" / "slides.html").read_text()
    assert all(f'../../slides/{e.split("/")[-1]}.html' in index for e in CHAPTERS)
