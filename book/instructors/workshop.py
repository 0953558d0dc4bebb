"""The workshop kit's data: what each chapter and lab declares, what it measured, the agendas.

Used by ``agenda.ipynb`` (the Instructor guide's agenda page, rendered at build time, so it
grows with ``_toc.yml``), by ``scripts/collect_timings.py`` and by ``tests/test_workshop.py``.
Nothing here is typed by hand:

* which chapters and labs exist: ``_toc.yml``;
* their title, objectives, learner time and prerequisites: each notebook's *At a glance* box
  (``**You will be able to**`` numbered list, ``**Time:** about N minutes``,
  ``**Prerequisites:** ...``, ``**You need:** ...``);
* their machine time: ``timings.json`` beside this file, written by
  ``scripts/collect_timings.py`` from the junit report of a ``make test`` run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from labkit import course

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TIMINGS = HERE / "timings.json"

CHAPTER = re.compile(r"^book/\d\d-[^/]+$")
LAB = re.compile(r"^labs/[^/]+$")
SETUP_LAB = re.compile(r"^labs/00-")
_GLANCE = re.compile(r"^:::+\{admonition\} At a glance\s*$(?P<body>.*?)^:::+\s*$", re.M | re.S)
_FIELD = re.compile(r"\*\*(?P<name>[A-Za-z ]+):\*\*\s*(?P<value>.*?)(?=\s*\*\*[A-Za-z ]+:\*\*|\Z)", re.S)
_MINUTES = re.compile(r"(?:(?P<lo>\d+)\s*[–-]\s*)?(?P<n>\d+|an?)\s*(?P<unit>minutes?|mins?|hours?|h)\b", re.I)
_ROLE = re.compile(r"\{[a-z:]+\}`([^`<]*?)\s*(?:<[^`>]*>)?`")
_CHAPTER_REF = re.compile(r"\bchapters?\s+(\d\d?(?:\s*(?:[–-]|,|and|&)\s*\d\d?)*)\b", re.I)


_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def plain(text: str) -> str:
    """MyST text without roles or links, on one line: ``{term}`KV cache``` → ``KV cache``,
    ``[Lab 1](01-lab.ipynb)`` and ``{doc}`Lab 1 <../labs/01-lab>``` → ``Lab 1``.

    Links are relative to the page they come from, so on the agenda page they would point
    nowhere; the text is kept, the target dropped."""
    text = _LINK.sub(lambda m: m.group(1), text)
    return " ".join(_ROLE.sub(lambda m: m.group(1), text).split())


@dataclass
class Page:
    """A chapter or lab, as its At a glance box declares it."""

    entry: str                      #: toc entry, e.g. "book/01-models"
    kind: str                       #: "chapter" or "lab"
    title: str
    objectives: list[str] = field(default_factory=list)
    minutes: int | None = None      #: declared learner time (upper end of a range)
    time_text: str = ""             #: the declared time, as written
    prerequisites: str = ""
    needs: str = ""
    requires_chapters: list[str] = field(default_factory=list)  #: "07", "01", ...

    @property
    def notebook(self) -> str:
        return f"{self.entry}.ipynb"

    @property
    def number(self) -> str:
        return re.sub(r"^(\d+).*", r"\1", self.entry.split("/")[-1])


def toc_entries(root: Path = ROOT) -> list[str]:
    """Every ``file:`` of ``_toc.yml`` (and its root), in order."""
    return course.toc_entries(root)


def parse_minutes(text: str) -> int | None:
    """Minutes of a declared time: "about 40 minutes" → 40, "60–75 minutes" → 75, "an hour" → 60."""
    m = _MINUTES.search(text)
    if not m:
        return None
    n = 1 if m["n"].lower() in ("a", "an") else int(m["n"])
    return n * 60 if m["unit"].lower().startswith("h") else n


def chapter_numbers(text: str) -> list[str]:
    """Chapters named in ``text``: "chapter 07", "chapters 01 and 08", "chapters 01–03"."""
    found = []
    for group in _CHAPTER_REF.findall(text):
        for lo, hi in re.findall(r"(\d+)(?:\s*[–-]\s*(\d+))?", group):
            found += [f"{n:02d}" for n in range(int(lo), int(hi or lo) + 1)]
    return list(dict.fromkeys(found))


def parse_glance(markdown: str, entry: str, kind: str) -> Page:
    """A :class:`Page` from a notebook's markdown (title: the first ``# `` heading)."""
    title = next((plain(line[2:]) for line in markdown.splitlines() if line.startswith("# ")), entry)
    page = Page(entry=entry, kind=kind, title=title)
    box = _GLANCE.search(markdown)
    if not box:
        return page
    body = box["body"]
    objectives, current = [], None
    in_list = False
    for line in body.splitlines():
        if line.strip().startswith("**You will be able to"):
            in_list = True
            continue
        if not in_list:
            continue
        item = re.match(r"^\s*\d+\.\s+(.*)", line)
        if item:
            current = item.group(1)
            objectives.append(current)
        elif line.startswith((" ", "\t")) and objectives and line.strip():
            objectives[-1] += " " + line.strip()
        elif objectives:
            break
    page.objectives = [plain(o) for o in objectives]
    fields = {m["name"].strip().lower(): plain(m["value"]).rstrip(".")
              for m in _FIELD.finditer(body)}
    page.time_text = fields.get("time", "")
    page.minutes = parse_minutes(page.time_text)
    page.prerequisites = fields.get("prerequisites", "")
    page.needs = fields.get("you need", "")
    page.requires_chapters = chapter_numbers(page.prerequisites)
    return page


def course_pages(root: Path = ROOT) -> list[Page]:
    """Every chapter (``book/NN-topic``) and lab (``labs/…``) notebook in the toc, in toc order."""
    pages = []
    for entry in toc_entries(root):
        kind = "chapter" if CHAPTER.match(entry) else "lab" if LAB.match(entry) else None
        path = root / f"{entry}.ipynb"
        if kind is None or not path.is_file():
            continue
        nb = json.loads(path.read_text())
        markdown = "\n\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                               for c in nb["cells"] if c["cell_type"] == "markdown")
        pages.append(parse_glance(markdown, entry, kind))
    return pages


def load_timings(path: Path = TIMINGS) -> dict:
    """The measured machine times (``{}`` before the first collection)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def machine_seconds(timings: dict, page: Page) -> float | None:
    entry = timings.get("notebooks", {}).get(page.notebook)
    return entry["seconds"] if entry else None


# --- agendas ------------------------------------------------------------------------------

@dataclass
class Format:
    """A workshop format: when it starts and ends, and its breaks."""

    name: str
    start: int                  #: minutes after midnight
    end: int
    lunch: bool = False
    welcome: int = 15
    wrap_up: int = 15
    max_block: int = 90         #: at most this long without a break
    break_minutes: int = 15
    lunch_minutes: int = 60
    lunch_after: int = 12 * 60  #: lunch at the first gap after this (from 30 min before, instead
                                #: of a break; from 60 min before, if the next item ends after 13:00)


HALF_DAY = Format("half-day", start=9 * 60, end=12 * 60 + 30)
FULL_DAY = Format("full-day", start=9 * 60, end=17 * 60, lunch=True)


@dataclass
class Slot:
    start: int
    minutes: int
    what: str
    page: Page | None = None
    detail: str = ""

    @property
    def end(self) -> int:
        return self.start + self.minutes


@dataclass
class Agenda:
    format: Format
    slots: list[Slot]
    not_scheduled: list[tuple[Page, str]]

    @property
    def end(self) -> int:
        return self.slots[-1].end if self.slots else self.format.start

    @property
    def open_minutes(self) -> int:
        return self.format.end - self.end


def slot_minutes(page: Page, seconds: float | None) -> int | None:
    """A page's slot: declared learner time plus measured machine time, up to 5 minutes."""
    if page.minutes is None:
        return None
    total = page.minutes + (seconds or 0) / 60
    return int(math.ceil(total / 5) * 5)


def workshop_order(pages: list[Page]) -> list[Page]:
    """Set-up labs first, then chapters in toc order, each lab right after the last chapter
    its prerequisites name (labs naming none go last)."""
    setup = [p for p in pages if p.kind == "lab" and SETUP_LAB.match(p.entry)]
    chapters = [p for p in pages if p.kind == "chapter"]
    labs = [p for p in pages if p.kind == "lab" and p not in setup]
    order = list(setup)
    placed = set()
    for chapter in chapters:
        order.append(chapter)
        for lab in labs:
            if lab.entry in placed or not lab.requires_chapters:
                continue
            known = [c for c in lab.requires_chapters if any(ch.number == c for ch in chapters)]
            if known and chapter.number == max(known):
                order.append(lab)
                placed.add(lab.entry)
    order += [lab for lab in labs if lab.entry not in placed]
    return order


def build_agenda(pages: list[Page], timings: dict, fmt: Format) -> Agenda:
    """Fit the chapters and labs, in workshop order, into ``fmt``'s day.

    An item that does not fit in the time left (keeping the wrap-up), or whose prerequisite
    chapter is not in the day, is listed as not scheduled (self-paced) and the next one is
    tried. Breaks go in before an item that would make a block longer than ``max_block``.
    """
    clock = fmt.start
    slots = [Slot(clock, fmt.welcome, "Welcome", detail="goals, how the notebooks work "
                  "(predict, run, compare), measured/derived/cited")]
    clock += fmt.welcome
    block, had_lunch = fmt.welcome, False
    scheduled, not_scheduled = set(), []
    for page in workshop_order(pages):
        minutes = slot_minutes(page, machine_seconds(timings, page))
        if minutes is None:
            not_scheduled.append((page, "declares no time in its At a glance box"))
            continue
        missing = [c for c in page.requires_chapters
                   if any(p.number == c and p.kind == "chapter" for p in pages) and c not in scheduled]
        if missing:
            not_scheduled.append((page, f"needs chapter {', '.join(missing)} first"))
            continue
        pause = None
        if fmt.lunch and not had_lunch and (
                clock >= fmt.lunch_after                                 # it is lunch time
                or (clock >= fmt.lunch_after - 30 and block + minutes > fmt.max_block)
                or (clock >= fmt.lunch_after - 60 and clock + minutes > fmt.lunch_after + 60)):
            pause = ("Lunch", fmt.lunch_minutes)
        elif block + minutes > fmt.max_block:
            pause = ("Break", fmt.break_minutes)
        needed = minutes + (pause[1] if pause else 0) + fmt.wrap_up
        if clock + needed > fmt.end:
            not_scheduled.append((page, "does not fit the day: self-paced, or swap it in"))
            continue
        if pause:
            slots.append(Slot(clock, pause[1], pause[0]))
            clock += pause[1]
            had_lunch = had_lunch or pause[0] == "Lunch"
            block = 0
        slots.append(Slot(clock, minutes, page.title, page=page))
        clock += minutes
        block += minutes
        scheduled.add(page.number if page.kind == "chapter" else page.entry)
    slots.append(Slot(clock, fmt.wrap_up, "Wrap-up", detail="key takeaways, questions, feedback"))
    return Agenda(fmt, slots, not_scheduled)


# --- rendering (Markdown, shown by agenda.ipynb) ----------------------------------------

def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "not measured yet"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def agenda_markdown(agenda: Agenda, timings: dict) -> str:
    """The agenda as a Markdown table, then what did not fit and the time left open."""
    rows = ["| time | block | learners | slot (min) |", "|---|---|---|---|"]
    for slot in agenda.slots:
        if slot.page:
            secs = machine_seconds(timings, slot.page)
            what = f"**{slot.page.title}** (`{slot.page.notebook}`)"
            detail = (f"{slot.page.kind}: {slot.page.minutes} min declared, "
                      f"machine time {duration(secs)}")
        else:
            what, detail = f"*{slot.what}*", slot.detail
        rows.append(f"| {hhmm(slot.start)}–{hhmm(slot.end)} | {what} | {detail} | {slot.minutes} |")
    text = "\n".join(rows)
    if agenda.not_scheduled:
        text += "\n\nNot in this day (assign as self-paced work before or after):\n\n" + "\n".join(
            f"- **{p.title}** (`{p.notebook}`): {why}" for p, why in agenda.not_scheduled)
    if agenda.open_minutes > 0:
        text += (f"\n\nThe day ends at {hhmm(agenda.end)}: {agenda.open_minutes} minutes of the "
                 f"{agenda.format.name} ({hhmm(agenda.format.start)}–{hhmm(agenda.format.end)}) are "
                 "left open for discussion and catch-up.")
    return text


def timings_markdown(pages: list[Page], timings: dict) -> str:
    """Declared learner time and measured machine time of every chapter and lab."""
    rows = ["| chapter or lab | learner time (declared) | machine time (measured) | slot (min) |",
            "|---|---|---|---|"]
    for page in pages:
        secs = machine_seconds(timings, page)
        minutes = slot_minutes(page, secs)
        rows.append(f"| **{page.title}** (`{page.notebook}`) | {page.time_text or 'not declared'} | "
                    f"{duration(secs)} | {minutes if minutes is not None else '–'} |")
    machine = timings.get("machine", {})
    if machine:
        rows.append("")
        rows.append(f"Machine time is measured by `make test` (nbval: kernel start, every cell, "
                    f"shut-down) on {machine.get('description', 'the course machine')}, "
                    f"collected {timings.get('collected', '?')} by `scripts/collect_timings.py`.")
    else:
        rows.append("")
        rows.append("No machine times yet: run `make test`, then `make timings`.")
    return "\n".join(rows)


def objectives_markdown(pages: list[Page]) -> str:
    """Each chapter's and lab's objectives, prerequisites and needs, as declared."""
    parts = []
    for page in pages:
        lines = [f"**{page.title}** (`{page.notebook}`, {page.kind})", ""]
        lines += [f"{i}. {o}" for i, o in enumerate(page.objectives, 1)] or ["- (no objectives declared)"]
        lines += ["", f"*Prerequisites:* {page.prerequisites or 'none declared'}. "
                      f"*You need:* {page.needs or 'not declared'}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


# --- Sphinx extension: the {workshop} directive --------------------------------------------

RENDERERS = {
    "half-day": lambda pages, timings: agenda_markdown(build_agenda(pages, timings, HALF_DAY), timings),
    "full-day": lambda pages, timings: agenda_markdown(build_agenda(pages, timings, FULL_DAY), timings),
    "timings": timings_markdown,
    "objectives": lambda pages, timings: objectives_markdown(pages),
}


def setup(app):
    """Sphinx extension (``sphinx.local_extensions`` in _config.yml) for the agenda page.

    ````md
    ```{workshop} half-day
    ```
    ````

    renders, at build time, the half-day agenda (also ``full-day``, ``timings``,
    ``objectives``) as MyST Markdown, from the toc, the notebooks and ``timings.json``; the
    page is rebuilt whenever one of them changes.
    """
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    class WorkshopDirective(SphinxDirective):
        required_arguments = 1
        has_content = False

        def run(self):
            what = self.arguments[0]
            if what not in RENDERERS:
                raise self.error(f"workshop: unknown table {what!r}; use one of {sorted(RENDERERS)}")
            root = Path(self.env.srcdir)
            pages = course_pages(root)
            for path in [root / "_toc.yml", TIMINGS] + [root / p.notebook for p in pages]:
                self.env.note_dependency(str(path))
            text = RENDERERS[what](pages, load_timings())
            container = nodes.container(classes=["workshop", f"workshop-{what}"])
            self.state.nested_parse(StringList(text.splitlines(), source=str(TIMINGS)),
                                    self.content_offset, container)
            return [container]

    app.add_directive("workshop", WorkshopDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
