"""`make pdf` (scripts/make_pdf.py): the built HTML book printed by Chromium into one PDF.

Proved here, where Chromium and pypdf are installed (otherwise skipped, with the reason):

* on a small fixture site: one bookmark per page in the given order, each page's sections
  under it, on the pages where they are, and a PNG figure embedded as an image;
* on the real book: the executed book of `make book` (``_build/html``) when it is there and
  up to date, else the strict build the other tests share (no plots): one bookmark per toc
  page, titled as the page and in toc order, at least one PDF page per toc page, and every
  raster figure of a page (plots, PNG/JPEG) embedded in that chapter's PDF pages; the
  reference card (book/reference.md), once in the toc, on one page.
"""

from __future__ import annotations

import re
import sys
from html import unescape
from pathlib import Path

import pytest

import course_checks as cc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_pdf as mp  # noqa: E402

PNG_1x1 = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")


@pytest.fixture(scope="module")
def pypdf():
    return pytest.importorskip("pypdf", reason=f"pypdf is not installed: add {mp.PYPDF_PIN} to "
                                               "requirements.txt and run make setup")


@pytest.fixture(scope="module")
def chromium():
    path = mp.find_chromium()
    if path is None:
        pytest.skip("no Chromium found: apt-get install chromium (as for the browser test)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
    return path


def outline(reader) -> list[tuple[str, int, list[tuple[str, int]]]]:
    """``[(title, page, [(section, page), ...]), ...]`` of the PDF's bookmarks."""
    found = []
    for entry in reader.outline:
        if isinstance(entry, list):
            found[-1][2].extend((e.title, reader.get_destination_page_number(e))
                                for e in entry if not isinstance(e, list))
        else:
            found.append((entry.title, reader.get_destination_page_number(entry), []))
    return found


def images_on(page) -> int:
    """Image XObjects drawn on a PDF page (inside form XObjects too)."""
    def count(resources, seen):
        total = 0
        xobjects = (resources or {}).get("/XObject") or {}
        for ref in xobjects.values():
            obj = ref.get_object()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.get("/Subtype") == "/Image":
                total += 1
            elif obj.get("/Subtype") == "/Form":
                total += count(obj.get("/Resources"), seen)
        return total
    return count(page.get("/Resources"), set())


def test_a_fixture_site_prints_with_bookmarks_sections_and_its_figure(tmp_path, pypdf, chromium):
    site = tmp_path / "html"
    site.mkdir()
    (site / "plot.png").write_bytes(PNG_1x1)
    long_text = "<p>" + "A paragraph of the chapter. " * 60 + "</p>"
    (site / "one.html").write_text(
        '<html><head><meta charset="utf-8"><title>First chapter — Book</title></head>'
        "<body><main><article>"
        "<h1>First chapter</h1><h2>Measure it</h2>" + long_text
        + '<img src="plot.png" alt="A plot" style="width:200px;height:120px">'
        + "<h2>Key takeaways</h2>" + long_text * 3 + "</article></main></body></html>")
    (site / "two.html").write_text(
        '<html><head><meta charset="utf-8"><title>Second chapter — Book</title></head>'
        "<body><main><article>"
        "<h1>Second chapter</h1><p>Short.</p></article></main></body></html>")
    out = tmp_path / "book.pdf"
    count = mp.make_pdf(site, out, ["one.html", "two.html"], title="Book")
    reader = pypdf.PdfReader(str(out))
    assert count == len(reader.pages) >= 3
    marks = outline(reader)
    assert [m[0] for m in marks] == ["First chapter", "Second chapter"]
    assert marks[0][1] == 0 < marks[1][1] == len(reader.pages) - 1
    assert [s[0] for s in marks[0][2]] == ["Measure it", "Key takeaways"]
    assert 0 <= marks[0][2][0][1] <= marks[0][2][1][1] < marks[1][1]
    assert sum(images_on(p) for p in reader.pages[:marks[1][1]]) >= 1, "the figure is embedded"
    assert reader.metadata.title == "Book"


def test_a_missing_page_is_refused_with_the_fix(tmp_path, chromium):
    with pytest.raises(mp.PdfError, match="run make book first"):
        mp.print_pages(tmp_path, ["nowhere.html"], tmp_path)


def book_html(request) -> tuple[str, Path]:
    """The executed book when it is there and up to date, else the shared strict build."""
    marker = ROOT / "_build" / "html" / "searchindex.js"
    if marker.is_file():
        sources = [ROOT / "_config.yml", ROOT / "_toc.yml"] + [
            p for e in cc.toc_entries(ROOT) if (p := cc.resolve_entry(ROOT, e))]
        if all(p.stat().st_mtime <= marker.stat().st_mtime for p in sources):
            return "make-book", ROOT / "_build" / "html"
    book = request.getfixturevalue("strict_book")
    if book.returncode != 0:
        pytest.skip("the strict build failed; test_book_build.py shows why")
    return "strict-build", book.html


def raster_figures(html_page: Path) -> int:
    """PNG/JPEG figures in a page's article (plots; not the theme's logos)."""
    text = html_page.read_text()
    start, end = text.find("<article"), text.rfind("</article>")
    article = text[start:end] if start >= 0 else ""
    return len(set(re.findall(r'<img[^>]+src="([^"]+\.(?:png|jpe?g))"', article, re.I)))


def test_the_book_prints_in_toc_order_with_a_bookmark_per_page_and_its_figures(
        request, tmp_path, pypdf, chromium):
    which, html = book_html(request)
    pages = mp.toc_pages(ROOT)
    out = tmp_path / "book.pdf"
    count = mp.make_pdf(html, out, pages)
    reader = pypdf.PdfReader(str(out))
    marks = outline(reader)
    titles = [mp.page_title(unescape(re.search(r"<title>(.*?)</title>", (html / p).read_text(),
                                               re.S).group(1))) for p in pages]
    assert [m[0] for m in marks] == titles, f"{which}: one bookmark per toc page, in order"
    starts = [m[1] for m in marks]
    assert starts == sorted(set(starts)) and starts[0] == 0, "each page starts on a new PDF page"
    assert count == len(reader.pages) >= len(pages)
    assert sum(bool(m[2]) for m in marks) >= len([p for p in pages if "/" in p]) // 2, \
        "chapters carry their sections as bookmarks"
    ends = starts[1:] + [len(reader.pages)]
    missing = {}
    for page, start, end in zip(pages, starts, ends):
        want = raster_figures(html / page)
        got = sum(images_on(reader.pages[i]) for i in range(start, end))
        if got < want:
            missing[page] = f"{got} of {want} figures"
    assert missing == {}, f"{which}: figures not embedded"
    if "book/reference.html" in pages:                   # the card is one printed page
        k = pages.index("book/reference.html")
        assert ends[k] - starts[k] == 1, f"the reference card prints on {ends[k] - starts[k]} pages"
