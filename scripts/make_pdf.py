"""Print the built HTML book into one PDF, chapters in toc order, with a bookmark per chapter.

    python scripts/make_pdf.py                         # what `make pdf` runs
    python scripts/make_pdf.py _build/html _build/pdf/book.pdf

It prints the pages of ``_build/html`` (built by `make book`, so with every plot) with the
Chromium the browser test uses (Debian's ``/usr/bin/chromium``, or ``$CHROMIUM``), driven by
Playwright's ``page.pdf()`` (never ``playwright install``). The site is served on 127.0.0.1 and
every other host fails to resolve, as in the browser test: the PDF is made offline. Each page
is printed as the browser prints it (the theme's print style: no sidebars), after MathJax has
typeset, every image has loaded and the cell outputs folded on screen are opened (exercise
solutions stay folded: the PDF has none); the pages are then merged with pypdf into one file whose
outline has one bookmark per toc page (its title) with that page's own headings under it.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:   # `python scripts/make_pdf.py` puts scripts/ first, not the repository
    sys.path.insert(0, str(ROOT))
# One Chromium finder for `make pdf`, the browser test and `python -m labkit doctor`.
from labkit.machine.tools import CHROMIUM_NAMES, find_chromium  # noqa: E402,F401

#: No network but 127.0.0.1, nothing Chromium would fetch itself (tests/test_browser.py uses these too).
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
#: Page furniture that means nothing on paper (the theme's print style hides most of it already).
PRINT_CSS = """
.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .header-article, .prev-next-area,
.bd-footer, .bd-footer-article, .bd-footer-content, .headerlink, #pst-back-to-top,
.skip-link, details.hide > summary { display: none !important; }
.bd-main .bd-content .bd-article-container { max-width: 100% !important; }
"""
#: Runs in the page before printing: the cell outputs folded on screen (myst-nb's
#: ``hide-output``, e.g. the answer to a "guess first") opened, since paper cannot unfold them
#: (exercise solutions stay folded); every image loaded; MathJax done.
READY = r"""async () => {
  // Every wait is bounded: a frame that never paints or a promise that never settles must not
  // hang the print (rAF can stall in a headless tab).
  const within = (promise, ms) => Promise.race([promise, new Promise(done => setTimeout(done, ms))]);
  const frame = () => within(new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done))), 200);
  document.querySelectorAll('details.hide').forEach(d => { d.open = true; });
  for (const img of document.images) { img.loading = 'eager'; }
  await within(Promise.all([...document.images].map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done); img.addEventListener('error', done); }))), 10000);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await within(MathJax.startup.promise, 10000); }
  // A loaded image may still be undecoded, and Chromium then prints a blank where it goes.
  await within(Promise.all([...document.images].map(img => img.decode().catch(() => null))), 10000);
  // Paint every part of the page once (scrolled into view), as Chromium may skip images it has
  // not painted yet when it prints; then back to the top.
  for (let y = 0; y < document.body.scrollHeight; y += window.innerHeight) {
    window.scrollTo(0, y);
    await frame();
  }
  window.scrollTo(0, 0);
  await frame();
  return [...document.images].filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src);
}"""
PYPDF_PIN = "pypdf==6.19.0"
#: The theme's type is sized for screens; 80 % reads like a printed book and halves the pages.
PRINT_SCALE = 0.8


class PdfError(RuntimeError):
    """The PDF cannot be made here (and why)."""


def toc_pages(root: Path = ROOT) -> list[str]:
    """The HTML page of every toc entry, in book order."""
    sys.path.insert(0, str(root))
    from labkit.course import toc_entries

    return [f"{entry}.html" for entry in toc_entries(root)]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serve(folder: Path):
    """Serve ``folder`` on 127.0.0.1 (an ephemeral port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


#: The page's section headings as the reader sees them (without the "#" permalink).
HEADINGS = r"""() => [...document.querySelectorAll('article h2, main h2')]
    .filter(h => !h.closest('nav, .onlyprint, .bd-toc, .bd-sidebar-secondary')).map(h => {
  const copy = h.cloneNode(true);
  copy.querySelectorAll('.headerlink').forEach(a => a.remove());
  return copy.textContent.replace(/\s+/g, ' ').trim();
}).filter((text, i, all) => text && all.indexOf(text) === i)"""


@dataclass
class Printed:
    page: str       #: the page's path in the site
    title: str      #: its title (the bookmark)
    pdf: Path       #: the page printed alone
    headings: list[str] = field(default_factory=list)   #: its h2 headings, in order


def page_title(document_title: str) -> str:
    """A page's own title from its <title> ("Storage — AI on EKS Foundations" -> "Storage")."""
    return document_title.rsplit(" — ", 1)[0].strip() or document_title


def print_pages(html: Path, pages: list[str], folder: Path, chromium: str | None = None,
                timeout_ms: int = 60000) -> list[Printed]:
    """Print each page of the site in ``html`` to its own PDF in ``folder``."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:          # pragma: no cover - pinned in requirements.txt
        raise PdfError("the playwright package is missing: run make setup") from exc
    chromium = chromium or find_chromium()
    if chromium is None:
        raise PdfError("no Chromium found (looked for $CHROMIUM and " + ", ".join(CHROMIUM_NAMES)
                       + "): install it (Debian: apt-get install chromium)")
    missing = [p for p in pages if not (html / p).is_file()]
    if missing:
        raise PdfError(f"{html} has no {', '.join(missing[:3])}: run make book first")
    printed = []
    with serve(html) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(service_workers="block")
            for number, page in enumerate(pages):
                tab = context.new_page()
                try:
                    tab.goto(base + page, wait_until="load", timeout=timeout_ms)
                    tab.add_style_tag(content=PRINT_CSS)
                    broken = tab.evaluate(READY)
                    if broken:
                        raise PdfError(f"{page}: images did not load: {', '.join(broken[:3])}")
                    out = folder / f"{number:03d}.pdf"
                    tab.pdf(path=str(out), format="A4", scale=PRINT_SCALE, print_background=True,
                            outline=True, tagged=True,      # tagged: Chromium's outline needs it
                            margin={"top": "14mm", "bottom": "14mm", "left": "12mm",
                                    "right": "12mm"})
                    printed.append(Printed(page, page_title(tab.title()), out,
                                           tab.evaluate(HEADINGS)))
                finally:
                    tab.close()
            context.close()
        finally:
            browser.close()
    return printed


def _squash(text: str) -> str:
    return "".join(text.split()).casefold()


def section_pages(reader, headings: list[str]) -> list[tuple[str, int]]:
    """``(heading, page index)`` of each section heading, from Chromium's outline of the page.

    Chromium builds that outline from the tagged PDF, and its titles lose the spaces where a
    heading wraps (and may repeat a line); so each entry is matched, in order, to the page's
    heading it starts like, and the heading's own text is the bookmark.
    """
    entries = []

    def walk(outline, depth):
        for entry in outline:
            if isinstance(entry, list):
                walk(entry, depth + 1)
            elif depth <= 1:
                page = reader.get_destination_page_number(entry)
                if page is not None and page >= 0:
                    entries.append((_squash(entry.title), page))

    walk(reader.outline, 0)
    found, position = [], 0
    for heading in headings:
        key = _squash(heading)[:12]
        for k in range(position, len(entries)):
            if entries[k][0].startswith(key):
                found.append((heading, entries[k][1]))
                position = k + 1
                break
    return found


def merge(printed: list[Printed], out: Path, title: str = "") -> int:
    """Merge the printed pages into ``out``: one bookmark per page, its sections under it.

    Returns the number of PDF pages.
    """
    try:
        from pypdf import PdfReader, PdfWriter
    except ImportError as exc:
        raise PdfError(f"the pypdf package is missing: add {PYPDF_PIN} to requirements.txt "
                       "and run make setup") from exc
    writer = PdfWriter()
    for item in printed:
        reader = PdfReader(str(item.pdf))
        start = len(writer.pages)
        writer.append(reader, import_outline=False)
        chapter = writer.add_outline_item(item.title, start)
        for heading, page in section_pages(reader, item.headings):
            writer.add_outline_item(heading, start + page, parent=chapter)
    if title:
        writer.add_metadata({"/Title": title})
    writer.page_mode = "/UseOutlines"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "wb") as handle:
        writer.write(handle)
    partial.replace(out)
    return len(writer.pages)


def make_pdf(html: Path, out: Path, pages: list[str] | None = None, title: str = "") -> int:
    """Print ``pages`` (default: the toc's) of the site in ``html`` into ``out``; page count."""
    pages = pages if pages is not None else toc_pages()
    with tempfile.TemporaryDirectory(prefix="book-pdf-") as tmp:
        printed = print_pages(html, pages, Path(tmp))
        return merge(printed, out, title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("html", nargs="?", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "_build" / "pdf" / "book.pdf")
    args = parser.parse_args(argv)
    import yaml

    title = yaml.safe_load((ROOT / "_config.yml").read_text()).get("title", "")
    try:
        count = make_pdf(args.html, args.out, title=title)
    except PdfError as exc:
        print(f"make_pdf: {exc}", file=sys.stderr)
        return 1
    print(f"book PDF: {args.out} ({count} pages, {len(toc_pages())} bookmarked pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
