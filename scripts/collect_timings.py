"""Collect each notebook's measured machine time from a `make test` run into the workshop kit.

    make test       # runs nbval over every notebook, writes _build/reports/junit.xml, then
                    # `collect_timings.py --check`: fails if a notebook got much slower (below)
    make timings    # runs this script: updates book/instructors/timings.json (commit it)

nbval reports every notebook cell as a pytest test case (junit ``classname`` such as
``book.01-models.ipynb``, ``name`` ``Cell 3``). A case's time includes its setup and
teardown, so the first cell carries the kernel start and the last the kernel shut-down: a
notebook's machine time is the sum over its cells, which is what a learner waits for when
running it top to bottom on the same machine.

A notebook with a failing cell in the report keeps its previous timing (a failed run is not a
measurement of the notebook); notebooks that no longer exist are dropped. The file also
records the machine and the date of the run, which the agenda page prints next to the
numbers. The agenda page (book/instructors/agenda.ipynb) renders everything at build time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JUNIT = ROOT / "_build" / "reports" / "junit.xml"
DEFAULT_OUT = ROOT / "book" / "instructors" / "timings.json"
#: A notebook may take at most this many times its committed machine time (plus SLACK_S, which
#: absorbs the kernel start and noise on short notebooks) before `make test` fails.
SLOWDOWN_LIMIT = 2.0
SLACK_S = 20.0
#: Budget for the machine time of all notebooks together (make test must stay within 20 minutes,
#: and the unit tests and the book build take the rest).
TOTAL_BUDGET_S = 600.0


def notebook_keys(root: Path) -> dict[str, str]:
    """``{junit classname: notebook path}`` for every notebook under book/ and labs/."""
    keys = {}
    for folder in ("book", "labs"):
        for path in (root / folder).rglob("*.ipynb"):
            if ".ipynb_checkpoints" in path.parts:
                continue
            rel = path.relative_to(root).as_posix()
            keys[rel[: -len(".ipynb")].replace("/", ".") + ".ipynb"] = rel
    return keys


def read_junit(junit: Path, root: Path) -> tuple[dict[str, dict], set[str], str]:
    """Per-notebook ``{"seconds", "cells"}``, the notebooks with a failure, and the run's date."""
    tree = ET.parse(junit)
    keys = notebook_keys(root)
    times: dict[str, dict] = {}
    failed: set[str] = set()
    date = ""
    for suite in tree.iter("testsuite"):
        date = date or (suite.get("timestamp") or "")[:10]
    for case in tree.iter("testcase"):
        path = keys.get(case.get("classname", ""))
        if path is None:
            continue
        entry = times.setdefault(path, {"seconds": 0.0, "cells": 0})
        entry["seconds"] += float(case.get("time") or 0)
        entry["cells"] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add(path)
    for entry in times.values():
        entry["seconds"] = round(entry["seconds"], 1)
    return times, failed, date


def describe_machine() -> dict:
    """Cores, CPU model, memory and versions of the machine this runs on (the test machine)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    memory_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    versions = {}
    for package in ("torch", "nbval", "jupyter-book"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    description = f"{cores} cores ({cpu})"
    if memory_gib:
        description += f", {memory_gib:g} GiB memory"
    description += f", Python {platform.python_version()}"
    if "torch" in versions:
        description += f", torch {versions['torch']}"
    return {"cores": cores, "cpu": cpu, "memory_GiB": memory_gib,
            "python": platform.python_version(), "versions": versions, "description": description}


def collect(junit: Path, out: Path, root: Path = ROOT) -> dict:
    """Merge the timings of ``junit`` into ``out``; returns the new content."""
    times, failed, date = read_junit(junit, root)
    old = json.loads(out.read_text()) if out.is_file() else {}
    notebooks = {path: entry for path, entry in old.get("notebooks", {}).items()
                 if (root / path).is_file()}
    for path, entry in times.items():
        if path in failed:
            print(f"collect_timings: {path} failed in this run; its timing is not updated",
                  file=sys.stderr)
            continue
        notebooks[path] = {**entry, "measured": date}
    data = {
        "about": "Machine time of each notebook under `make test` (nbval), written by "
                 "scripts/collect_timings.py; do not edit by hand.",
        "collected": date,
        "machine": describe_machine(),
        "notebooks": dict(sorted(notebooks.items())),
    }
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return data


def check(junit: Path, committed: Path, root: Path = ROOT) -> list[str]:
    """Compare a run with the committed timings; return the problems (empty when within limits).

    A notebook fails the check when it took more than ``SLOWDOWN_LIMIT`` × its committed time +
    ``SLACK_S``, when it has no committed time at all (run `make timings` and commit), or when all
    notebooks together took more than ``TOTAL_BUDGET_S``.
    """
    times, _, _ = read_junit(junit, root)
    old = json.loads(committed.read_text()).get("notebooks", {}) if committed.is_file() else {}
    problems = []
    for path, entry in sorted(times.items()):
        before = old.get(path, {}).get("seconds")
        if before is None:
            problems.append(f"{path}: no committed machine time; run `make timings` and commit "
                            f"{committed.relative_to(root)}")
            continue
        limit = SLOWDOWN_LIMIT * before + SLACK_S
        mark = "" if entry["seconds"] <= limit else "   <-- over the limit"
        print(f"{path}: {entry['seconds']:.1f} s (committed {before:.1f} s, limit {limit:.0f} s){mark}")
        if mark:
            problems.append(f"{path}: {entry['seconds']:.1f} s, more than {SLOWDOWN_LIMIT:g} x its "
                            f"committed {before:.1f} s + {SLACK_S:g} s: find what got slower, or "
                            "if the change is intended run `make timings` and commit")
    total = sum(entry["seconds"] for entry in times.values())
    print(f"all notebooks: {total:.0f} s (budget {TOTAL_BUDGET_S:.0f} s)")
    if total > TOTAL_BUDGET_S:
        problems.append(f"all notebooks took {total:.0f} s, over the {TOTAL_BUDGET_S:.0f} s budget")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("junit", nargs="?", type=Path, default=DEFAULT_JUNIT,
                        help=f"pytest --junitxml report (default: {DEFAULT_JUNIT.relative_to(ROOT)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true",
                        help="compare the run with --out instead of updating it; exit 1 when a "
                             "notebook is over its limit or the total over budget")
    args = parser.parse_args(argv)
    if not args.junit.is_file():
        print(f"collect_timings: {args.junit} not found; run `make test` first", file=sys.stderr)
        return 1
    if args.check:
        problems = check(args.junit, args.out)
        for problem in problems:
            print(f"collect_timings: {problem}", file=sys.stderr)
        return 1 if problems else 0
    data = collect(args.junit, args.out)
    for path, entry in data["notebooks"].items():
        print(f"{path}: {entry['seconds']:.1f} s over {entry['cells']} cells ({entry['measured']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
