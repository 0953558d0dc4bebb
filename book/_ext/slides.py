"""Local Sphinx extension: a short slide deck per chapter, generated from the notebook.

Loaded from _config.yml (``sphinx.local_extensions``). At the end of every HTML build it writes
``slides/<chapter>.html`` (reveal.js, vendored in ``book/_ext/reveal/``, so the decks work
offline) with five slides taken from the chapter itself, so they never drift from it:

1. the title and why the chapter matters (its first paragraph);
2. the learning objectives (its *At a glance* box);
3. the key plot: the code cell tagged ``key-plot`` (else the first cell with a plot's alt text),
   with the image from the built page when the book was executed (``make book``), and its alt
   text as the caption (an executed-book note instead of the image under ``make test``, which
   builds without executing);
4. the *Key takeaways*;
5. one question for the room: the first question of the chapter's section in the instructor
   notes (``book/instructors/notes.md``), else its first "Before you run this, guess" prompt.

The instructor guide's slides page links every deck.
"""

from __future__ import annotations

import html
import json
import posixpath
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "reveal"
CHAPTER = re.compile(r"^book/\d\d-[^/]+$")
_IMG = re.compile(r"<img\b[^>]*>", re.S)
_ATTR = re.compile(r'(\w[\w-]*)="([^"]*)"')


@dataclass
class Deck:
    entry: str                      #: toc entry, e.g. "book/01-models"
    title: str
    why: str = ""
    objectives: list[str] = field(default_factory=list)
    plot_alt: str = ""
    plot_src: str = ""              #: image path relative to the deck, "" when not executed
    takeaways: list[str] = field(default_factory=list)
    question: str = ""

    @property
    def filename(self) -> str:
        return f"{self.entry.split('/')[-1]}.html"


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _section(markdown: str, heading: str) -> str:
    """The text under ``## heading`` up to the next heading of level 1 or 2."""
    match = re.search(rf"^##\s+{re.escape(heading)}\s*$(.*?)(?=^#{{1,2}}\s|\Z)", markdown, re.M | re.S)
    return match.group(1) if match else ""


def _bullets(text: str) -> list[str]:
    items: list[str] = []
    for line in text.splitlines():
        item = re.match(r"^\s*[-*]\s+(.*)", line)
        if item:
            items.append(item.group(1))
        elif items and line.startswith((" ", "\t")) and line.strip():
            items[-1] += " " + line.strip()
    return items


def _first_paragraph(markdown: str) -> str:
    """The first paragraph after the title, skipping directives and headings."""
    lines = markdown.split("\n")
    paragraphs, current = [], []
    fence = None
    for line in lines[1:]:
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence):
                fence = None
            continue
        if stripped.startswith((":::", "```")):
            fence = stripped[:3]
            continue
        if stripped.startswith("#") or not stripped:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        current.append(stripped)
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs[0] if paragraphs else ""


def notes_question(notes: str, notebook: str) -> str:
    """The first question of a chapter's section in the instructor notes, or ""."""
    match = re.search(rf"^##\s.*\(`{re.escape(notebook)}`\)\s*$(.*?)(?=^##\s|\Z)", notes, re.M | re.S)
    if not match:
        return ""
    asks = re.search(r"\*\*Questions to ask\.\*\*\s*(.*?)(?:\n\s*\n|\Z)", match.group(1), re.S)
    if not asks:
        return ""
    quoted = re.search(r"[\"“]([^\"”]+\?)[\"”]", asks.group(1))
    return quoted.group(1) if quoted else asks.group(1).split("?")[0].strip() + "?"


def read_deck(root: Path, entry: str, notes: str = "") -> Deck:
    """A chapter's deck content from its notebook (and the instructor notes)."""
    import workshop

    nb = json.loads((root / f"{entry}.ipynb").read_text())
    markdown = "\n\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    glance = workshop.parse_glance(markdown, entry, "chapter")
    deck = Deck(entry=entry, title=glance.title, why=workshop.plain(_first_paragraph(
        _source(next(c for c in nb["cells"] if c["cell_type"] == "markdown")))),
        objectives=glance.objectives)
    plots = [c for c in nb["cells"] if c["cell_type"] == "code"
             and c.get("metadata", {}).get("mystnb", {}).get("image", {}).get("alt")]
    key = [c for c in plots if "key-plot" in c.get("metadata", {}).get("tags", [])]
    if key or plots:
        deck.plot_alt = (key or plots)[0]["metadata"]["mystnb"]["image"]["alt"]
    deck.takeaways = [workshop.plain(t) for t in _bullets(_section(markdown, "Key takeaways"))]
    question = notes_question(notes, f"{entry}.ipynb")
    if not question:
        guess = re.search(r"\*\*Before you run this, guess[^*]*\*\*\s*(.*?)(?:\n\s*\n|\Z)", markdown, re.S)
        question = guess.group(1).strip() if guess else ""
    question = workshop.plain(question)
    deck.question = question[:1].upper() + question[1:]
    return deck


def find_plot(page_html: str, alt: str) -> str:
    """The ``src`` of the image whose alt text is ``alt`` on a built page, or ""."""
    for tag in _IMG.findall(page_html):
        attrs = dict(_ATTR.findall(tag))
        if html.unescape(attrs.get("alt", "")) == alt:
            return attrs.get("src", "")
    return ""


def _inline(text: str) -> str:
    """Markdown emphasis and code of one line as HTML (everything else escaped)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![*\w])\*([^*]+)\*(?!\w)", r"<em>\1</em>", out)


def render(deck: Deck, course: str, chapter_link: str) -> str:
    """The deck as one self-contained reveal.js page (assets in ``reveal/`` beside it)."""
    items = lambda xs: "\n".join(f"<li>{_inline(x)}</li>" for x in xs)  # noqa: E731
    if deck.plot_src:
        plot = (f'<figure><img src="{html.escape(deck.plot_src)}" alt="{html.escape(deck.plot_alt)}">'
                f"<figcaption>{_inline(deck.plot_alt)}</figcaption></figure>")
    else:
        plot = (f'<p class="no-plot">{_inline(deck.plot_alt or "This chapter has no plot.")}'
                "<br><br>(The plot itself appears in the executed book: <code>make book</code>.)</p>")
    sections = [
        f'<h1>{_inline(deck.title)}</h1><p>{_inline(deck.why)}</p>'
        f'<p class="course">{html.escape(course)} · <a href="{chapter_link}">the chapter</a></p>',
        f"<h2>You will be able to</h2><ol>{items(deck.objectives)}</ol>",
        f"<h2>What we measured</h2>{plot}",
        f"<h2>Key takeaways</h2><ul>{items(deck.takeaways)}</ul>",
        f'<h2>A question for the room</h2><p class="question">{_inline(deck.question)}</p>',
    ]
    body = "\n".join(f"<section>\n{s}\n</section>" for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(deck.title)} (slides)</title>
<link rel="icon" href="../_static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="reveal/reveal.css">
<link rel="stylesheet" href="reveal/course-slides.css">
</head>
<body>
<div class="reveal"><div class="slides">
{body}
</div></div>
<script src="reveal/reveal.js"></script>
<script>Reveal.initialize({{hash: true, slideNumber: "c/t", transition: "none"}});</script>
</body>
</html>
"""


def write_decks(root: Path, outdir: Path) -> list[Path]:
    """Write every chapter's deck into ``outdir/slides`` (the built site); return the paths."""
    import workshop

    notes_path = root / "book" / "instructors" / "notes.md"
    notes = notes_path.read_text() if notes_path.is_file() else ""
    target = outdir / "slides"
    (target / "reveal").mkdir(parents=True, exist_ok=True)
    for name in ("reveal.js", "reveal.css", "course-slides.css", "LICENSE"):
        shutil.copyfile(ASSETS / name, target / "reveal" / name)
    written = []
    for entry in workshop.toc_entries(root):
        if not CHAPTER.match(entry) or not (root / f"{entry}.ipynb").is_file():
            continue
        deck = read_deck(root, entry, notes)
        page = outdir / f"{entry}.html"
        src = find_plot(page.read_text(), deck.plot_alt) if page.is_file() and deck.plot_alt else ""
        if src:   # relative to the chapter page (outdir/book/); make it relative to outdir/slides/
            deck.plot_src = "../" + posixpath.normpath(posixpath.join(posixpath.dirname(entry), src))
        path = target / deck.filename
        path.write_text(render(deck, "AI on EKS Foundations", f"../{entry}.html"))
        written.append(path)
    return written


def _build_finished(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    try:
        import workshop  # noqa: F401  (book/instructors/, the instructor guide's module)
    except ModuleNotFoundError:
        return          # the student edition has no instructor guide, so no decks either
    write_decks(Path(app.srcdir), Path(app.outdir))


def setup(app):
    app.connect("build-finished", _build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
