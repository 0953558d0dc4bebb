"""The course's own structure, for its tooling: which pages the book lists.

Used by the structure tests and by the instructor guide's agenda (book/instructors/workshop.py),
so both read ``_toc.yml`` the same way.
"""

from __future__ import annotations

from pathlib import Path

#: The repository root (where _config.yml and _toc.yml are) of this checkout.
ROOT = Path(__file__).resolve().parent.parent


def toc_entries(root: str | Path = ROOT) -> list[str]:
    """Every ``file:`` of ``_toc.yml`` and its ``root:``, without suffix, in book order."""
    import yaml

    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    entries = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                entries.append(item["file"])
            walk(item.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return entries
