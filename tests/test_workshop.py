"""The workshop kit: At a glance parsing, agendas, and the timing collection from junit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "instructors"))
sys.path.insert(0, str(ROOT / "scripts"))
import collect_timings  # noqa: E402
import workshop as ws  # noqa: E402

GLANCE = """# Chapter X: a title with {term}`KV cache <KV cache>`

:::{admonition} At a glance
:class: tip

**You will be able to**
1. **Measure** one thing
   over two lines.
2. **Explain** {term}`attention`.

**Time:** about 40 minutes to read; about a minute to run.
**Prerequisites:** chapter 01 (weights); chapter 7. **You need:** a CPU.
:::
"""


def test_at_a_glance_is_parsed():
    page = ws.parse_glance(GLANCE, "book/05-x", "chapter")
    assert page.title == "Chapter X: a title with KV cache"
    assert page.objectives == ["**Measure** one thing over two lines.", "**Explain** attention."]
    assert page.minutes == 40
    assert page.prerequisites == "chapter 01 (weights); chapter 7"
    assert page.needs == "a CPU"
    assert page.requires_chapters == ["01", "07"]


@pytest.mark.parametrize("text, chapters", [
    ("chapter 07 (storage), chapter 01", ["07", "01"]), ("chapters 01 and 08", ["01", "08"]),
    ("chapters 01–03; Kubernetes", ["01", "02", "03"]), ("the chapters it summarises", [])])
def test_prerequisite_chapters(text, chapters):
    assert ws.chapter_numbers(text) == chapters


@pytest.mark.parametrize("text, minutes", [
    ("about 40 minutes to read", 40), ("5 minutes.", 5), ("60–75 minutes of work", 75),
    ("about an hour", 60), ("1.5 days", None), ("2 hours", 120)])
def test_declared_minutes(text, minutes):
    assert ws.parse_minutes(text) == minutes


def page(entry, kind, minutes, requires=()):
    return ws.Page(entry=entry, kind=kind, title=entry, minutes=minutes, requires_chapters=list(requires))


def test_labs_follow_the_chapter_they_need_and_setup_comes_first():
    pages = [page("book/01-a", "chapter", 30), page("book/02-b", "chapter", 30),
             page("labs/00-setup", "lab", 5), page("labs/01-lab", "lab", 40, ["01"]),
             page("labs/09-free", "lab", 20)]
    assert [p.entry for p in ws.workshop_order(pages)] == [
        "labs/00-setup", "book/01-a", "labs/01-lab", "book/02-b", "labs/09-free"]


def test_agenda_slots_add_machine_time_breaks_and_leave_out_what_does_not_fit():
    pages = [page("book/01-a", "chapter", 40), page("book/02-b", "chapter", 50),
             page("book/03-c", "chapter", 200), page("labs/02-l", "lab", 30, ["03"]),
             page("book/04-d", "chapter", None)]
    timings = {"notebooks": {"book/01-a.ipynb": {"seconds": 70.0}}}
    agenda = ws.build_agenda(pages, timings, ws.HALF_DAY)
    what = [(ws.hhmm(s.start), s.what, s.minutes) for s in agenda.slots]
    assert what == [("09:00", "Welcome", 15), ("09:15", "book/01-a", 45),   # 40 min + 70 s → 45
                    ("10:00", "Break", 15), ("10:15", "book/02-b", 50), ("11:05", "Wrap-up", 15)]
    reasons = {p.entry: why for p, why in agenda.not_scheduled}
    assert reasons == {"book/03-c": "does not fit the day: self-paced, or swap it in",
                       "labs/02-l": "needs chapter 03 first",
                       "book/04-d": "declares no time in its At a glance box"}
    assert agenda.open_minutes == 12 * 60 + 30 - (11 * 60 + 20)
    text = ws.agenda_markdown(agenda, timings)
    assert "| 09:15–10:00 | **book/01-a**" in text and "machine time 70 s" in text


def test_full_day_has_lunch():
    pages = [page(f"book/0{i}-x", "chapter", 60) for i in range(1, 6)]
    agenda = ws.build_agenda(pages, {}, ws.FULL_DAY)
    names = [s.what for s in agenda.slots]
    assert names.count("Lunch") == 1 and agenda.end <= ws.FULL_DAY.end
    lunch = agenda.slots[names.index("Lunch")]
    assert 11 * 60 + 30 <= lunch.start <= 12 * 60 + 30


def test_every_chapter_and_lab_declares_its_time_and_objectives(repo_root):
    pages = ws.course_pages(repo_root)
    assert pages
    problems = [f"{p.notebook}: no '**Time:** about N minutes' in its At a glance box"
                for p in pages if p.minutes is None]
    problems += [f"{p.notebook}: no numbered objectives under '**You will be able to**'"
                 for p in pages if not p.objectives]
    assert problems == []


def test_the_committed_timings_match_the_toc(repo_root):
    timings = ws.load_timings()
    assert timings, "book/instructors/timings.json is missing: make test && make timings, then commit it"
    listed = {p.notebook for p in ws.course_pages(repo_root)}
    assert set(timings["notebooks"]) <= {str(p.relative_to(repo_root)) for p in
                                         repo_root.glob("*/**/*.ipynb")}, "a timed notebook is gone"
    assert timings["machine"]["cores"] >= 1
    missing = listed - set(timings["notebooks"])
    assert not missing, f"no machine time for {sorted(missing)}: make test && make timings, then commit"


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"
timestamp="2026-11-28T10:00:00+00:00">
<testcase classname="book.01-models.ipynb" name="Cell 0" time="3.5" />
<testcase classname="book.01-models.ipynb" name="Cell 1" time="1.25" />
<testcase classname="labs.00-setup-check.ipynb" name="Cell 0" time="2.0"><failure message="x"/></testcase>
<testcase classname="tests.test_memory" name="test_x" time="9.0" />
</testsuite></testsuites>"""


def test_collect_timings_sums_cells_and_keeps_old_values_of_failed_notebooks(tmp_path):
    root = tmp_path
    for nb in ("book/01-models.ipynb", "labs/00-setup-check.ipynb", "book/gone.ipynb"):
        (root / nb).parent.mkdir(parents=True, exist_ok=True)
    (root / "book/01-models.ipynb").write_text("{}")
    (root / "labs/00-setup-check.ipynb").write_text("{}")
    out = tmp_path / "timings.json"
    out.write_text(json.dumps({"notebooks": {
        "labs/00-setup-check.ipynb": {"seconds": 9.9, "cells": 8, "measured": "2026-11-01"},
        "book/gone.ipynb": {"seconds": 1.0, "cells": 1, "measured": "2026-11-01"}}}))
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    data = collect_timings.collect(junit, out, root=root)
    assert data["notebooks"] == {
        "book/01-models.ipynb": {"seconds": 4.8, "cells": 2, "measured": "2026-11-28"},
        "labs/00-setup-check.ipynb": {"seconds": 9.9, "cells": 8, "measured": "2026-11-01"}}
    assert data["collected"] == "2026-11-28" and data["machine"]["cores"] >= 1
    assert json.loads(out.read_text()) == data


def _check_setup(root, committed: dict):
    (root / "book").mkdir(parents=True)
    (root / "labs").mkdir()
    (root / "book/01-models.ipynb").write_text("{}")
    (root / "labs/00-setup-check.ipynb").write_text("{}")
    out = root / "timings.json"
    out.write_text(json.dumps({"notebooks": committed}))
    junit = root / "junit.xml"
    junit.write_text(JUNIT)     # 01-models 4.8 s, 00-setup-check 2.0 s
    return junit, out, root


def test_timing_check_passes_within_the_limit_and_fails_a_slowdown(tmp_path, monkeypatch):
    ok = {"book/01-models.ipynb": {"seconds": 4.0}, "labs/00-setup-check.ipynb": {"seconds": 2.0}}
    assert collect_timings.check(*_check_setup(tmp_path / "ok", ok)) == []
    monkeypatch.setattr(collect_timings, "SLACK_S", 0.0)
    slow = {"book/01-models.ipynb": {"seconds": 2.0}, "labs/00-setup-check.ipynb": {"seconds": 2.0}}
    (problem,) = collect_timings.check(*_check_setup(tmp_path / "slow", slow))   # 4.8 s > 2 x 2.0 s
    assert "book/01-models.ipynb" in problem and "make timings" in problem


def test_timing_check_fails_a_notebook_without_a_committed_time(tmp_path):
    (problem,) = collect_timings.check(*_check_setup(tmp_path, {"book/01-models.ipynb": {"seconds": 9.0}}))
    assert "labs/00-setup-check.ipynb" in problem and "no committed machine time" in problem


def test_the_committed_timings_fit_the_budget():
    timings = ws.load_timings()
    total = sum(entry["seconds"] for entry in timings["notebooks"].values())
    assert total <= collect_timings.TOTAL_BUDGET_S


def test_plain_drops_roles_and_links_that_would_break_on_the_agenda_page():
    text = ("[Lab 1](../labs/01-small-model-inference.ipynb) ({term}`prefill`, roofline); "
            "see {doc}`Lab 5 <../labs/05-distributed-ray>`.")
    assert ws.plain(text) == "Lab 1 (prefill, roofline); see Lab 5."


# --- agendas right by construction (issue 17, item 1) ---

def _all_agendas():
    pages, timings, pilot = ws.course_pages(ROOT), ws.load_timings(), ws.load_pilot()
    agendas = [(f.name, ws.build_agenda(pages, timings, f, pilot=pilot)) for f in ws.FORMATS]
    agendas += [(f"track:{t.key}", ws.track_agenda(t, pages, timings, pilot)) for t in ws.TRACKS]
    return pages, agendas


def _respects_prerequisites(pages, agenda) -> list[str]:
    known = ws.by_ref(pages)
    before = {p.ref for p in agenda.before_the_day}
    seen, problems = set(), []
    for slot in sorted(agenda.slots, key=lambda s: (s.day, s.start)):
        if not slot.page:
            continue
        for need in slot.page.requires:
            if need in known and need not in seen and need not in before:
                problems.append(f"{slot.page.ref} (day {slot.day} {ws.hhmm(slot.start)}) before {need}")
        seen.add(slot.page.ref)
    return problems


def test_lab_prerequisites_are_parsed():
    assert ws.lab_numbers("Lab 1 (decode, roofline) and chapter 01") == ["1"]
    assert ws.lab_numbers("Labs 1 and 4; Labs 2–3") == ["1", "4", "2", "3"]
    assert ws.lab_numbers("a lab in the cloud") == []
    page = ws.parse_glance(GLANCE.replace("chapter 7.", "chapter 7, Lab 1."), "labs/02-x", "lab")
    assert page.requires == ["chapter 01", "chapter 07", "Lab 1"]


@pytest.mark.parametrize("text, split", [
    ("about 40 minutes (25 teaching, 15 exercises)", (25, 15)),
    ("about an hour: 20 minutes of teaching and 40 minutes of exercises", (20, 40)),
    ("about 40 minutes to read", (None, None))])
def test_declared_split_is_parsed(text, split):
    assert ws.parse_split(text) == split


def test_every_generated_agenda_respects_every_prerequisite():
    pages, agendas = _all_agendas()
    assert {name for name, _ in agendas} >= {"half-day", "full-day", "two-day", "track:serving",
                                             "track:platform-sizing", "track:training-and-data"}
    problems = {name: p for name, agenda in agendas if (p := _respects_prerequisites(pages, agenda))}
    assert problems == {}


def test_the_check_catches_an_agenda_that_breaks_a_prerequisite():
    pages, agendas = _all_agendas()
    agenda = dict(agendas)["full-day"]
    lab1 = next(s for s in agenda.slots if s.page and s.page.ref == "Lab 1")
    lab2 = next(s for s in agenda.slots if s.page and s.page.ref == "Lab 2")
    lab1.start, lab2.start = lab2.start, lab1.start            # Lab 2 before Lab 1
    assert _respects_prerequisites(pages, agenda) == [
        f"Lab 2 (day 1 {ws.hhmm(lab2.start)}) before Lab 1"]


def test_every_track_schedules_all_its_items_and_reaches_the_eks_chapters():
    pages, agendas = _all_agendas()
    have = {p.entry for p in pages}
    for track in ws.TRACKS:
        agenda = dict(agendas)[f"track:{track.key}"]
        scheduled = [p.entry for p in agenda.scheduled()]
        assert agenda.not_scheduled == [], (track.name, agenda.not_scheduled)
        assert scheduled == [e for e in track.entries if e in have], track.name   # in teaching order
        assert {"book/07-storage", "book/08-hardware-options", "book/09-workload-patterns"} & set(scheduled)


def test_slots_show_teaching_and_exercise_minutes_apart_and_add_up():
    pages, agendas = _all_agendas()
    for name, agenda in agendas:
        text = ws.agenda_markdown(agenda, ws.load_timings())
        assert "| teaching (min) | exercises (min) |" in text, name
        for slot in agenda.slots:
            if slot.page:
                assert slot.teaching + slot.exercises <= slot.minutes < slot.teaching + slot.exercises + 5 + 5


def test_two_days_start_again_in_the_morning():
    pages = [page(f"book/0{i}-x", "chapter", 100) for i in range(1, 8)]
    agenda = ws.build_agenda(pages, {}, ws.TWO_DAYS)
    assert agenda.days_used == 2
    day2 = [s for s in agenda.slots if s.day == 2]
    assert day2[0].what == "Welcome back" and day2[0].start == ws.TWO_DAYS.start
    assert [s.what for s in agenda.slots].count("Lunch") == 2


def test_pilot_medians_replace_declared_times():
    p = page("book/01-a", "chapter", 40)
    p.teaching_minutes, p.exercise_minutes = 25, 15
    pilot = {"runs": [{"items": {"book/01-a": {"teaching": 30, "exercises": 20}}},
                      {"items": {"book/01-a": {"teaching": 34, "exercises": 26}}},
                      {"items": {"book/02-b": {"teaching": 5, "exercises": 5}}}]}
    assert ws.pilot_minutes(pilot, p) == (32, 23, 2)
    assert ws.planned_minutes(p, pilot) == (32, 23) and ws.planned_minutes(p, {}) == (25, 15)
    assert ws.slot_minutes(p, 30.0, pilot) == 60                  # 55 min + 30 s, up to 5 min
    agenda = ws.build_agenda([p], {}, ws.HALF_DAY, pilot=pilot)
    assert "pilot median" in ws.agenda_markdown(agenda, {}, pilot)


def test_the_pilot_file_is_valid():
    pilot = ws.load_pilot()
    assert isinstance(pilot["runs"], list)
    entries = {p.entry for p in ws.course_pages(ROOT)}
    for run in pilot["runs"]:
        assert set(run["items"]) <= entries, "a pilot run names a page that is not in the toc"
        for item in run["items"].values():
            assert item["teaching"] >= 0 and item["exercises"] >= 0


def test_the_pilot_timings_issue_template_asks_for_teaching_and_exercise_minutes():
    import yaml

    form = yaml.safe_load((ROOT / ".github" / "ISSUE_TEMPLATE" / "pilot-timings.yml").read_text())
    assert form["name"] == "Pilot timings"
    fields = {item.get("id"): item for item in form["body"] if item["type"] != "markdown"}
    assert {"date", "learners", "format", "items"} <= set(fields)
    assert all(fields[f]["validations"]["required"] for f in ("date", "learners", "format", "items"))
    example = fields["items"]["attributes"]["placeholder"]
    assert "teaching" in example and "exercises" in example
    tracks = fields["format"]["attributes"]["options"]
    assert all(any(t.name in option for option in tracks) for t in ws.TRACKS)


def test_the_notes_have_a_section_for_every_chapter_and_lab_with_the_four_parts(repo_root):
    """Issue 17: notes for every chapter and lab, in the four-part template."""
    import re

    notes = (repo_root / "book" / "instructors" / "notes.md").read_text()
    by_notebook = {nb: title for title, nb in re.findall(r"^## (.+?) \(`([^`]+\.ipynb)`\)\s*$", notes, re.M)}
    missing = [p.notebook for p in ws.course_pages(repo_root) if p.notebook not in by_notebook]
    assert missing == [], f"no instructor notes for {missing}"
    for page in ws.course_pages(repo_root):
        assert by_notebook[page.notebook] == page.title, (page.notebook, "heading must be the title")
        body = notes.split(f"## {page.title} (`{page.notebook}`)", 1)[1].split("\n## ", 1)[0]
        for part in ("**Pacing.**", "**When it goes wrong**", "**If you are late, skip**",
                     "**Never skip**", "**Questions to ask.**"):
            assert part in body, (page.notebook, part)


def test_every_chapter_and_lab_declares_teaching_and_exercise_minutes_that_add_up(repo_root):
    problems = []
    for page in ws.course_pages(repo_root):
        if page.split is None:
            problems.append(f"{page.notebook}: no '(N teaching, M exercises)' after its **Time:**")
        elif sum(page.split) != page.minutes:
            problems.append(f"{page.notebook}: {page.split} does not add up to {page.minutes} minutes")
    assert problems == []
