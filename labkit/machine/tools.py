"""Finders for the external tools some labs and tests use, and the Python version check.

:mod:`labkit.machine.doctor`, ``scripts/make_pdf.py`` and ``tests/test_browser.py`` share these,
so "is Chromium here?" has one answer everywhere.
"""

from __future__ import annotations

import os
import shutil
import sys

#: Oldest Python the course runs on.
MIN_PYTHON = (3, 10)

#: Names a Chromium or Chrome binary goes by on PATH (Debian's is ``chromium``).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def tool_path(name: str) -> str | None:
    """Path of a command-line tool (``fio``, ``chromium``...) on PATH, or None."""
    return shutil.which(name)


def find_chromium() -> str | None:
    """``$CHROMIUM``, or the first Chromium/Chrome on PATH (:data:`CHROMIUM_NAMES`), or None."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((p for name in CHROMIUM_NAMES if (p := tool_path(name))), None)


def python_ok(minimum: tuple[int, int] = MIN_PYTHON) -> bool:
    """Whether this Python is at least ``minimum``."""
    return sys.version_info[:2] >= minimum
