"""The concept diagrams in book/_static/diagrams: self-contained, accessible, readable.

Each SVG must parse, carry its alt text (<title> and <desc>), reference nothing outside itself,
sit on a white background that fills its viewBox (so it reads the same in light and dark mode,
like the book's PNG plots), use only the system font stack and the Okabe-Ito palette (plus
greys), keep its text at least 12 px when shown 800 px wide, and stay small. The folder's
README lists every diagram with the same alt text.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIAGRAMS = ROOT / "book" / "_static" / "diagrams"
README = DIAGRAMS / "README.md"
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"
OKABE_ITO = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
             "#000000"}
MAX_BYTES = 60 * 1024
MIN_PX_AT_800 = 12.0
SVGS = sorted(DIAGRAMS.glob("*.svg"))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _root(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def _viewbox(root: ET.Element) -> tuple[float, float, float, float]:
    parts = re.split(r"[\s,]+", root.get("viewBox", "").strip())
    assert len(parts) == 4, f"viewBox must have 4 numbers, got {root.get('viewBox')!r}"
    x, y, w, h = (float(p) for p in parts)
    assert w > 0 and h > 0
    return x, y, w, h


def _style_text(root: ET.Element) -> str:
    """All CSS in the file: <style> elements and style="" attributes."""
    chunks = [el.text or "" for el in root.iter() if _local(el.tag) == "style"]
    chunks += [el.get("style", "") for el in root.iter()]
    return "\n".join(chunks)


def _norm(text: str) -> str:
    return " ".join(text.split())


def test_there_are_at_least_eight_diagrams():
    assert len(SVGS) >= 8, [p.name for p in SVGS]


@pytest.mark.parametrize("path", SVGS, ids=lambda p: p.name)
def test_svg_is_self_contained_and_accessible(path: Path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    root = _root(path)                       # parses as XML
    assert root.tag == f"{{{SVG_NS}}}svg"
    _viewbox(root)

    children = [_local(c.tag) for c in root]
    title = root.find(f"{{{SVG_NS}}}title")
    desc = root.find(f"{{{SVG_NS}}}desc")
    assert title is not None and _norm(title.text or ""), "missing <title>"
    assert desc is not None and len(_norm(desc.text or "")) >= 60, "<desc> under 60 characters"
    assert children[:2] == ["title", "desc"], f"<title> and <desc> must come first: {children[:3]}"

    for el in root.iter():
        name = _local(el.tag)
        assert name not in {"image", "script", "foreignObject", "iframe"}, f"<{name}> in {path.name}"
        for attr, value in el.attrib.items():
            if _local(attr) == "href" or attr == f"{{{XLINK_NS}}}href":
                assert value.startswith("#"), f"external reference {value!r} in {path.name}"
            for ref in re.findall(r"url\(\s*['\"]?([^)'\"]*)", value):
                assert ref.startswith("#"), f"external url({ref}) in {path.name}"
    css = _style_text(root)
    for ref in re.findall(r"url\(\s*['\"]?([^)'\"]*)", css):
        assert ref.startswith("#"), f"external url({ref}) in the CSS of {path.name}"
    assert "@import" not in css and "@font-face" not in css, f"web font or import in {path.name}"
    assert "data:" not in path.read_text(encoding="utf-8"), f"embedded data URI in {path.name}"


@pytest.mark.parametrize("path", SVGS, ids=lambda p: p.name)
def test_white_background_fills_the_viewbox(path: Path):
    root = _root(path)
    x, y, w, h = _viewbox(root)
    first = next(el for el in root if _local(el.tag) not in {"title", "desc", "style", "defs",
                                                           "metadata"})
    assert _local(first.tag) == "rect", "the first drawn element must be the background rect"
    assert float(first.get("x", 0)) == x and float(first.get("y", 0)) == y
    assert float(first.get("width")) == w and float(first.get("height")) == h
    assert first.get("fill", "").lower() in {"#fff", "#ffffff", "white"}
    assert first.get("fill-opacity") is None and first.get("opacity") is None


@pytest.mark.parametrize("path", SVGS, ids=lambda p: p.name)
def test_fonts_sizes_and_colours(path: Path):
    root = _root(path)
    assert root.get("font-family") == FONT
    for el in root.iter():
        if el.get("font-family") is not None:
            assert el.get("font-family") == FONT, f"font-family {el.get('font-family')!r}"
    css = _style_text(root)
    for family in re.findall(r"font-family\s*:\s*([^;}]+)", css):
        assert family.strip().strip("'\"") == FONT, f"CSS font-family {family!r} in {path.name}"

    _, _, width, _ = _viewbox(root)
    sizes = [float(v) for v in re.findall(r"font-size\s*:\s*([\d.]+)", css)]
    sizes += [float(re.match(r"[\d.]+", el.get("font-size")).group())
              for el in root.iter() if el.get("font-size")]
    assert sizes, f"{path.name} sets no font size"
    smallest = min(sizes) * 800 / width
    assert smallest >= MIN_PX_AT_800, f"{path.name}: {smallest:.1f} px text at 800 px wide"

    text = path.read_text(encoding="utf-8")
    for colour in re.findall(r"#[0-9A-Fa-f]{6}\b", text):
        c = colour.upper()
        grey = c[1:3] == c[3:5] == c[5:7]
        assert c in OKABE_ITO or grey, f"{colour} in {path.name} is not Okabe-Ito or a grey"


def test_readme_lists_every_diagram_with_its_alt_text():
    readme = README.read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("|")]
    for path in SVGS:
        row = next((r for r in rows if f"`{path.name}`" in r), None)
        assert row is not None, f"README.md has no row for {path.name}"
        desc = _norm(_root(path).find(f"{{{SVG_NS}}}desc").text)
        assert desc in _norm(row.replace("\\|", "|")), f"README alt text for {path.name} != <desc>"
    listed = set(re.findall(r"`([\w.-]+\.svg)`", readme))
    assert listed <= {p.name for p in SVGS}, f"README lists missing files: {listed - {p.name for p in SVGS}}"
