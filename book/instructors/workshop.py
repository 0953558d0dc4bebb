"""The workshop kit's data: what each chapter and lab declares, what it measured, the agendas.

Used by ``agenda.ipynb`` (the Instructor guide's agenda page, rendered at build time, so it
grows with ``_toc.yml``), by ``scripts/collect_timings.py`` and by ``tests/test_workshop.py``.
Nothing here is typed by hand:

* which chapters and labs exist: ``_toc.yml``;
* their title, objectives, learner time and prerequisites: each notebook's *At a glance* box
  (``**You will be able to**`` numbered list, ``**Time:** about N minutes``,
  ``**Prerequisites:** ...``, ``**You need:** ...``);
* their machine time: ``timings.json`` beside this file, written by
  ``scripts/collect_timings.py`` from the junit report of a ``make test`` run;
* the time real learners took, when a pilot has been recorded: ``pilot-timings.json`` beside
  this file (format in :func:`load_pilot`; the issue template "Pilot timings" asks for it).

The agendas are right by construction: an item is scheduled only after everything its
*Prerequisites* name (chapters and labs), or, in a track, after it or with the prerequisites
outside the track listed as work *before the day*. ``tests/test_workshop.py`` checks every
generated agenda for that.
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
PILOT = HERE / "pilot-timings.json"

CHAPTER = re.compile(r"^book/\d\d-[^/]+$")
LAB = re.compile(r"^labs/[^/]+$")
SETUP_LAB = re.compile(r"^labs/00-")
_GLANCE = re.compile(r"^:::+\{admonition\} At a glance\s*$(?P<body>.*?)^:::+\s*$", re.M | re.S)
_FIELD = re.compile(r"\*\*(?P<name>[A-Za-z ]+):\*\*\s*(?P<value>.*?)(?=\s*\*\*[A-Za-z ]+:\*\*|\Z)", re.S)
_MINUTES = re.compile(r"(?:(?P<lo>\d+)\s*[–-]\s*)?(?P<n>\d+|an?)\s*(?P<unit>minutes?|mins?|hours?|h)\b", re.I)
_ROLE = re.compile(r"\{[a-z:]+\}`([^`<]*?)\s*(?:<[^`>]*>)?`")
_CHAPTER_REF = re.compile(r"\bchapters?\s+(\d\d?(?:\s*(?:[–-]|,|and|&)\s*\d\d?)*)\b", re.I)
_LAB_REF = re.compile(r"\bLabs?\s+(\d\d?(?:\s*(?:[–-]|,|and|&)\s*\d\d?)*)\b")
_TEACHING = re.compile(r"(\d+)\s*(?:min(?:utes)?\s+)?(?:of\s+)?teaching", re.I)
_EXERCISES = re.compile(r"(\d+)\s*(?:min(?:utes)?\s+)?(?:of\s+)?(?:exercises?|hands-on)", re.I)


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
    requires_labs: list[str] = field(default_factory=list)      #: "1", "2", ...
    teaching_minutes: int | None = None   #: declared split of ``minutes``: the instructor's part
    exercise_minutes: int | None = None   #: ... and the learners' hands-on part

    @property
    def notebook(self) -> str:
        return f"{self.entry}.ipynb"

    @property
    def number(self) -> str:
        return re.sub(r"^(\d+).*", r"\1", self.entry.split("/")[-1])

    @property
    def ref(self) -> str:
        """How prerequisites name this page: ``chapter 01`` or ``Lab 1``."""
        return f"chapter {self.number}" if self.kind == "chapter" else f"Lab {int(self.number)}"

    @property
    def requires(self) -> list[str]:
        """Every chapter and lab the prerequisites name, as :attr:`ref` strings."""
        return ([f"chapter {c}" for c in self.requires_chapters]
                + [f"Lab {int(n)}" for n in self.requires_labs])

    @property
    def split(self) -> tuple[int, int] | None:
        """(teaching, exercises) minutes as declared, or None when not declared."""
        if self.teaching_minutes is None or self.exercise_minutes is None:
            return None
        return self.teaching_minutes, self.exercise_minutes


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


def lab_numbers(text: str) -> list[str]:
    """Labs named in ``text``: "Lab 1", "Labs 1 and 4", "Labs 1–3" → ``["1", ...]``."""
    found = []
    for group in _LAB_REF.findall(text):
        for lo, hi in re.findall(r"(\d+)(?:\s*[–-]\s*(\d+))?", group):
            found += [str(n) for n in range(int(lo), int(hi or lo) + 1)]
    return list(dict.fromkeys(found))


def parse_split(text: str) -> tuple[int | None, int | None]:
    """The declared split of a time: "about 40 minutes (25 teaching, 15 exercises)" → (25, 15)."""
    teaching, exercises = _TEACHING.search(text), _EXERCISES.search(text)
    return (int(teaching.group(1)) if teaching else None,
            int(exercises.group(1)) if exercises else None)


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
    page.requires_labs = lab_numbers(page.prerequisites)
    page.teaching_minutes, page.exercise_minutes = parse_split(page.time_text)
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


def load_pilot(path: Path = PILOT) -> dict:
    """Learner times recorded in pilot workshops (``{"runs": []}`` when none yet).

    Format (one object per pilot run, added by hand or from a "Pilot timings" issue)::

        {"runs": [{"date": "2027-01-20", "where": "who ran it", "learners": 14,
                   "items": {"book/01-models": {"teaching": 22, "exercises": 18}, ...}}]}

    Minutes are wall-clock minutes in the room: the instructor's part and the learners' hands-on
    part (until most of the room is done) of each chapter or lab.
    """
    return json.loads(path.read_text()) if path.is_file() else {"runs": []}


def pilot_minutes(pilot: dict, page: Page) -> tuple[int, int, int] | None:
    """Median (teaching, exercises) minutes of ``page`` over the pilot runs, and how many runs."""
    seen = [run["items"][page.entry] for run in pilot.get("runs", []) if page.entry in run.get("items", {})]
    if not seen:
        return None
    teaching = sorted(item["teaching"] for item in seen)
    exercises = sorted(item["exercises"] for item in seen)
    mid = len(seen) // 2
    median = (lambda v: v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2)
    return round(median(teaching)), round(median(exercises)), len(seen)


# --- agendas ------------------------------------------------------------------------------

@dataclass
class Format:
    """A workshop format: when each day starts and ends, its breaks, and how many days."""

    name: str
    start: int                  #: minutes after midnight
    end: int
    lunch: bool = False
    days: int = 1
    welcome: int = 15
    wrap_up: int = 15
    max_block: int = 90         #: at most this long without a break
    break_minutes: int = 15
    lunch_minutes: int = 60
    lunch_after: int = 12 * 60  #: lunch at the first gap after this (from 30 min before, instead
                                #: of a break; from 60 min before, if the next item ends after 13:00)


HALF_DAY = Format("half-day", start=9 * 60, end=12 * 60 + 30)
FULL_DAY = Format("full-day", start=9 * 60, end=17 * 60, lunch=True)
TWO_DAYS = Format("two-day", start=9 * 60, end=17 * 60, lunch=True, days=2)
FORMATS = (HALF_DAY, FULL_DAY, TWO_DAYS)


@dataclass
class Track:
    """A named path through the course for one audience, each reaching the EKS chapters."""

    name: str
    key: str
    audience: str
    entries: list[str]          #: toc entries, in teaching order


TRACKS = (
    Track("Serving", "serving", "teams that will run LLM inference on EKS",
          ["book/00-primer", "book/01-models", "labs/01-small-model-inference",
           "book/04-inference-libraries", "book/05-inference-servers", "labs/04-serving",
           "labs/07-routing", "book/08-hardware-options", "book/09-workload-patterns"]),
    Track("Platform sizing", "platform-sizing", "platform teams that size node pools and budgets",
          ["book/01-models", "book/02-training-vs-inference", "book/07-storage",
           "book/08-hardware-options", "labs/06-capacity-planning", "book/09-workload-patterns"]),
    Track("Training and data", "training-and-data", "teams that will run training and data jobs",
          ["book/02-training-vs-inference", "book/06-distributed-computing",
           "labs/05-distributed-ray", "book/07-storage", "labs/03-storage-throughput"]),
)


@dataclass
class Slot:
    start: int
    minutes: int
    what: str
    page: Page | None = None
    detail: str = ""
    day: int = 1
    teaching: int = 0           #: minutes of the slot that are the instructor's part
    exercises: int = 0          #: ... and the learners' hands-on part (the rest is machine time)

    @property
    def end(self) -> int:
        return self.start + self.minutes


@dataclass
class Agenda:
    format: Format
    slots: list[Slot]
    not_scheduled: list[tuple[Page, str]]
    before_the_day: list[Page] = field(default_factory=list)  #: prerequisites outside a track
    title: str = ""

    @property
    def end(self) -> int:
        last = [s for s in self.slots if s.day == self.days_used]
        return last[-1].end if last else self.format.start

    @property
    def days_used(self) -> int:
        return max((s.day for s in self.slots), default=1)

    @property
    def open_minutes(self) -> int:
        return self.format.end - self.end

    def scheduled(self) -> list[Page]:
        return [s.page for s in self.slots if s.page]


def planned_minutes(page: Page, pilot: dict | None = None) -> tuple[int, int] | None:
    """(teaching, exercises) minutes for a slot: the pilot median when learners have been timed,
    else the split the page declares, else all its declared time as teaching."""
    measured = pilot_minutes(pilot or {}, page)
    if measured:
        return measured[0], measured[1]
    if page.split:
        return page.split
    return (page.minutes, 0) if page.minutes is not None else None


def slot_minutes(page: Page, seconds: float | None, pilot: dict | None = None) -> int | None:
    """A page's slot: teaching + exercise minutes plus measured machine time, up to 5 minutes."""
    planned = planned_minutes(page, pilot)
    if planned is None:
        return None
    total = sum(planned) + (seconds or 0) / 60
    return int(math.ceil(total / 5) * 5)


def by_ref(pages: list[Page]) -> dict[str, Page]:
    return {p.ref: p for p in pages}


def workshop_order(pages: list[Page], course: list[Page] | None = None) -> list[Page]:
    """``pages`` in an order that honours every prerequisite among them: set-up labs first, then
    chapters in toc order, each lab as soon as everything it names has been placed (labs that
    name nothing go last). Prerequisites outside ``pages`` are ignored here (a track lists them
    as work before the day)."""
    refs = {p.ref for p in pages}
    setup = [p for p in pages if p.kind == "lab" and SETUP_LAB.match(p.entry)]
    rest = [p for p in pages if p not in setup]
    order, placed = list(setup), {p.ref for p in setup}

    def ready(page: Page) -> bool:
        return all(r in placed for r in page.requires if r in refs)

    while rest:
        labs = [p for p in rest if p.kind == "lab" and p.requires and ready(p)]
        chapters = [p for p in rest if p.kind == "chapter" and ready(p)]
        pick = (labs or chapters or [p for p in rest if ready(p)] or rest)[0]
        order.append(pick)
        placed.add(pick.ref)
        rest.remove(pick)
    return order


def build_agenda(pages: list[Page], timings: dict, fmt: Format, items: list[Page] | None = None,
                 pilot: dict | None = None, title: str = "") -> Agenda:
    """Fit ``items`` (default: every chapter and lab), in workshop order, into ``fmt``'s days.

    An item is scheduled only when every chapter or lab its prerequisites name is scheduled
    before it, or (for a track, ``items`` a subset of ``pages``) lies outside ``items`` and is
    listed as work before the day. An item that does not fit the time left (keeping the
    wrap-up) moves to the next day, or, on the last day, is listed as not scheduled (self-paced)
    and the next one is tried. Breaks go in before an item that would make a block longer than
    ``max_block``; a full day has one lunch.
    """
    items = list(pages if items is None else items)
    known, chosen = by_ref(pages), {p.ref for p in items}
    outside = dict.fromkeys(r for p in items for r in p.requires if r in known and r not in chosen)
    before = [known[r] for r in outside]
    done = {p.ref for p in before}
    slots: list[Slot] = []
    not_scheduled: list[tuple[Page, str]] = []
    day = 1

    def open_day(n: int) -> tuple[int, int, bool]:
        what, detail = (("Welcome", "goals, how the notebooks work (predict, run, compare), "
                         "measured/derived/cited/simulated") if n == 1 else
                        ("Welcome back", "recap of day 1: the predictions that surprised the room"))
        slots.append(Slot(fmt.start, fmt.welcome, what, detail=detail, day=n))
        return fmt.start + fmt.welcome, fmt.welcome, False

    def close_day(n: int, clock: int) -> None:
        slots.append(Slot(clock, fmt.wrap_up, "Wrap-up", day=n,
                          detail="key takeaways, questions, feedback"))

    clock, block, had_lunch = open_day(day)
    for page in workshop_order(items, pages):
        planned = planned_minutes(page, pilot)
        minutes = slot_minutes(page, machine_seconds(timings, page), pilot)
        if minutes is None:
            not_scheduled.append((page, "declares no time in its At a glance box"))
            continue
        missing = [r for r in page.requires if r in known and r not in done]
        if missing:
            not_scheduled.append((page, f"needs {', '.join(missing)} first"))
            continue
        while True:
            pause = None
            if fmt.lunch and not had_lunch and (
                    clock >= fmt.lunch_after                                 # it is lunch time
                    or (clock >= fmt.lunch_after - 30 and block + minutes > fmt.max_block)
                    or (clock >= fmt.lunch_after - 60 and clock + minutes > fmt.lunch_after + 60)):
                pause = ("Lunch", fmt.lunch_minutes)
            elif block + minutes > fmt.max_block:
                pause = ("Break", fmt.break_minutes)
            needed = minutes + (pause[1] if pause else 0) + fmt.wrap_up
            fits = clock + needed <= fmt.end
            fresh_day = clock == fmt.start + fmt.welcome
            if fits or fresh_day or day == fmt.days:
                break
            close_day(day, clock)
            day += 1
            clock, block, had_lunch = open_day(day)
        if not fits:
            not_scheduled.append((page, "does not fit the day: self-paced, or swap it in"))
            continue
        if pause:
            slots.append(Slot(clock, pause[1], pause[0], day=day))
            clock += pause[1]
            had_lunch = had_lunch or pause[0] == "Lunch"
            block = 0
        slots.append(Slot(clock, minutes, page.title, page=page, day=day,
                          teaching=planned[0], exercises=planned[1]))
        clock += minutes
        block += minutes
        done.add(page.ref)
    close_day(day, clock)
    return Agenda(fmt, slots, not_scheduled, before, title)


def smallest_format_for(pages: list[Page], timings: dict, items: list[Page],
                        pilot: dict | None = None) -> Agenda:
    """The agenda of ``items`` in the shortest format that schedules all of them (else two days)."""
    for fmt in FORMATS:
        agenda = build_agenda(pages, timings, fmt, items, pilot)
        if not agenda.not_scheduled:
            return agenda
    return agenda


def track_agenda(track: Track, pages: list[Page], timings: dict, pilot: dict | None = None) -> Agenda:
    """A track's agenda: its chapters and labs that exist, in the shortest format that fits."""
    have = {p.entry: p for p in pages}
    items = [have[e] for e in track.entries if e in have]
    agenda = smallest_format_for(pages, timings, items, pilot)
    agenda.title = track.name
    return agenda


# --- rendering (Markdown, shown by agenda.ipynb) ----------------------------------------

def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "not measured yet"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def agenda_markdown(agenda: Agenda, timings: dict, pilot: dict | None = None) -> str:
    """The agenda as a Markdown table (teaching and exercise minutes apart), then the work
    before the day, what did not fit and the time left open."""
    text = ""
    if agenda.before_the_day:
        text += ("Before the day (self-paced; this track builds on them): " + "; ".join(
            f"**{p.title}** (`{p.notebook}`)" for p in agenda.before_the_day) + ".\n\n")
    rows = ["| time | block | teaching (min) | exercises (min) | slot (min) |", "|---|---|---|---|---|"]
    for slot in agenda.slots:
        if slot.day > 1 and slot.what == "Welcome back":
            rows.append(f"| **Day {slot.day}** | | | | |")
        elif slot.day == 1 and slot.what == "Welcome" and agenda.format.days > 1:
            rows.append("| **Day 1** | | | | |")
        if slot.page:
            secs = machine_seconds(timings, slot.page)
            source = "pilot median" if pilot_minutes(pilot or {}, slot.page) else "declared"
            what = (f"**{slot.page.title}** (`{slot.page.notebook}`; {slot.page.kind}, {source}; "
                    f"machine time {duration(secs)})")
            rows.append(f"| {hhmm(slot.start)}–{hhmm(slot.end)} | {what} | {slot.teaching} | "
                        f"{slot.exercises} | {slot.minutes} |")
        else:
            rows.append(f"| {hhmm(slot.start)}–{hhmm(slot.end)} | *{slot.what}* {slot.detail} | | | "
                        f"{slot.minutes} |")
    text += "\n".join(rows)
    if agenda.not_scheduled:
        text += "\n\nNot in this agenda (assign as self-paced work before or after):\n\n" + "\n".join(
            f"- **{p.title}** (`{p.notebook}`): {why}" for p, why in agenda.not_scheduled)
    if agenda.open_minutes > 0:
        text += (f"\n\nThe last day ends at {hhmm(agenda.end)}: {agenda.open_minutes} minutes of the "
                 f"{agenda.format.name} ({hhmm(agenda.format.start)}–{hhmm(agenda.format.end)}) are "
                 "left open for discussion and catch-up.")
    return text


def track_markdown(track: Track, pages: list[Page], timings: dict, pilot: dict | None = None) -> str:
    agenda = track_agenda(track, pages, timings, pilot)
    days = f"{agenda.format.days} days" if agenda.format.days > 1 else agenda.format.name
    return (f"For {track.audience}; fits a {days} "
            f"({hhmm(agenda.format.start)}–{hhmm(agenda.format.end)}).\n\n"
            + agenda_markdown(agenda, timings, pilot))


def timings_markdown(pages: list[Page], timings: dict, pilot: dict | None = None) -> str:
    """Declared learner time (teaching and exercises), pilot medians where learners were timed,
    and measured machine time of every chapter and lab."""
    rows = ["| chapter or lab | declared (teaching + exercises) | pilot median (runs) | "
            "machine time (measured) | slot (min) |", "|---|---|---|---|---|"]
    for page in pages:
        secs = machine_seconds(timings, page)
        minutes = slot_minutes(page, secs, pilot)
        declared = (f"{page.split[0]} + {page.split[1]} min" if page.split else
                    page.time_text or "not declared")
        timed = pilot_minutes(pilot or {}, page)
        timed_text = f"{timed[0]} + {timed[1]} min ({timed[2]})" if timed else "–"
        rows.append(f"| **{page.title}** (`{page.notebook}`) | {declared} | {timed_text} | "
                    f"{duration(secs)} | {minutes if minutes is not None else '–'} |")
    machine = timings.get("machine", {})
    rows.append("")
    if machine:
        rows.append(f"Machine time is measured by `make test` (nbval: kernel start, every cell, "
                    f"shut-down) on {machine.get('description', 'the course machine')}, "
                    f"collected {timings.get('collected', '?')} by `scripts/collect_timings.py`.")
    else:
        rows.append("No machine times yet: run `make test`, then `make timings`.")
    runs = len((pilot or {}).get("runs", []))
    rows.append(f" Pilot runs recorded in `book/instructors/pilot-timings.json`: {runs}"
                + ("." if runs else " (none yet: slots use the declared times)."))
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


def slides_markdown(pages: list[Page]) -> str:
    """A table linking each chapter's slide deck (written by book/_ext/slides.py into the built
    site's ``slides/`` folder; the links are relative to this page, book/instructors/)."""
    rows = ["| chapter | slides |", "|---|---|"]
    for page in pages:
        if page.kind == "chapter":
            name = page.entry.split("/")[-1]
            rows.append(f"| {page.title} | <a href=\"../../slides/{name}.html\">{name} slides</a> |")
    return "\n".join(rows)


# --- Sphinx extension: the {workshop} directive --------------------------------------------

RENDERERS = {
    **{fmt.name: (lambda fmt: lambda pages, timings, pilot: agenda_markdown(
        build_agenda(pages, timings, fmt, pilot=pilot), timings, pilot))(fmt) for fmt in FORMATS},
    **{f"track:{t.key}": (lambda t: lambda pages, timings, pilot: track_markdown(
        t, pages, timings, pilot))(t) for t in TRACKS},
    "timings": timings_markdown,
    "objectives": lambda pages, timings, pilot: objectives_markdown(pages),
    "slides": lambda pages, timings, pilot: slides_markdown(pages),
}


def setup(app):
    """Sphinx extension (``sphinx.local_extensions`` in _config.yml) for the agenda page.

    ````md
    ```{workshop} half-day
    ```
    ````

    renders, at build time, the half-day agenda (also ``full-day``, ``two-day``,
    ``track:serving``, ``track:platform-sizing``, ``track:training-and-data``, ``timings``,
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
            for path in [root / "_toc.yml", TIMINGS, PILOT] + [root / p.notebook for p in pages]:
                self.env.note_dependency(str(path))
            text = RENDERERS[what](pages, load_timings(), load_pilot())
            container = nodes.container(classes=["workshop", f"workshop-{what}"])
            self.state.nested_parse(StringList(text.splitlines(), source=str(TIMINGS)),
                                    self.content_offset, container)
            return [container]

    app.add_directive("workshop", WorkshopDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
