"""Every page of the built book in a real browser: headless Chromium driven by Playwright.

Which HTML is tested:

* ``strict-build``: the strict build that test_book_build.py makes (the session fixture
  ``strict_book``: notebooks not executed, so `make test` builds once and executes notebooks
  only in nbval). Always tested, in CI too. It has no plot images, so "every image loads"
  covers the images it has (theme and launch-button logos, static figures).
* ``make-book``: ``_build/html`` from `make book`, the executed book that is published, with
  every plot. Tested when it exists and is newer than every page's source; skipped with the
  reason otherwise (a fresh clone has none, and building it here would execute every
  notebook a second time). Only its notebook pages are opened (pages from Markdown are the
  same as in the strict build); there "every image loads" and "every image has alt text"
  cover the plots too. The alt text is also checked in the notebooks (test_publishing.py).

Per page: no console errors, no failed or external requests (the book works offline: every
host but 127.0.0.1 fails to resolve), every <img> loads (naturalWidth > 0) and has real alt
text, no untypeset math (a literal ``\\(`` outside code). Once, on the strict build: a
solution dropdown opens on click, every glossary link lands on an existing anchor, search
finds "KV cache". A screenshot of each page (its first screen;
``BOOK_SCREENSHOTS=full`` for whole pages) goes to ``_build/screenshots/<site>/``. Where Chromium (or Playwright) is missing, the tests are
skipped with the reason; .ci/run installs chromium where it can.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

import course_checks as cc

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "_build" / "screenshots"
#: Screenshots show the first screen (1280×900): a full-page PNG of a long chapter takes ~2 s.
#: BOOK_SCREENSHOTS=full saves whole pages instead.
FULL_PAGE = os.environ.get("BOOK_SCREENSHOTS") == "full"
#: Pages besides the toc's: Sphinx's search page and index.
EXTRA_PAGES = ["search.html", "genindex.html"]


def site_pages(root: Path) -> list[str]:
    """The HTML page of every toc entry, then the extra pages."""
    return [f"{entry}.html" for entry in cc.toc_entries(root)] + EXTRA_PAGES


# One static server and one way to find and start Chromium, shared with `make pdf` (scripts/make_pdf.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from make_pdf import CHROMIUM_ARGS, CHROMIUM_NAMES, find_chromium, serve  # noqa: E402


@dataclass
class PageReport:
    """What one page did in the browser."""

    page: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    untypeset_math: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    term_links: list[str] = field(default_factory=list)
    has_dropdown: bool = False


# Runs in the page: waits for MathJax and every image, then reports what the tests check.
INSPECT = r"""async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const images = [...document.images];
  await Promise.all(images.map(img => {
    img.loading = 'eager';
    if (img.complete) return null;
    return new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done);
                                 setTimeout(done, 5000); });
  }));
  const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'TEXTAREA']);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let el = node.parentElement; el; el = el.parentElement) {
        if (skip.has(el.tagName) || el.classList.contains('highlight')) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }});
  const math = [];
  while (walker.nextNode()) {
    const text = walker.currentNode.nodeValue;
    if (text.includes('\\(') || text.includes('\\[')) math.push(text.trim().slice(0, 80));
  }
  return {
    images: images.map(img => ({src: img.currentSrc || img.src, alt: img.getAttribute('alt'),
                                ok: img.complete && img.naturalWidth > 0})),
    math,
    ids: [...document.querySelectorAll('[id]')].map(el => el.id),
    terms: [...document.querySelectorAll('a[href] .std-term')].map(span => span.closest('a').href),
    dropdown: !!document.querySelector('.solution.dropdown'),
  };
}"""


def visit(context, base: str, page: str, screenshot: Path) -> PageReport:
    """Open one page in a new tab, inspect it, save a screenshot."""
    report = PageReport(page)
    tab = context.new_page()
    tab.on("console", lambda m: m.type == "error" and report.console_errors.append(
        f"{m.text} ({m.location.get('url', '')})"))
    tab.on("pageerror", lambda exc: report.console_errors.append(f"uncaught: {exc}"))
    tab.on("requestfailed", lambda r: report.failed_requests.append(f"{r.url}: {r.failure}"))
    tab.on("response", lambda r: r.status >= 400 and report.failed_requests.append(f"{r.url}: HTTP {r.status}"))
    try:
        response = tab.goto(base + page, wait_until="load")
        if response is None or not response.ok:
            report.failed_requests.append(f"{base + page}: the page itself did not load")
            return report
        found = tab.evaluate(INSPECT)
        report.images = found["images"]
        report.untypeset_math = found["math"]
        report.ids = set(found["ids"])
        report.term_links = found["terms"]
        report.has_dropdown = found["dropdown"]
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(screenshot), full_page=FULL_PAGE)
    finally:
        tab.close()
    return report


@dataclass
class Site:
    name: str
    base: str
    context: object
    reports: dict[str, PageReport]
    html: Path = Path()


@pytest.fixture(scope="module")
def browser():
    path = find_chromium()
    if path is None:
        why = ("no Chromium found (looked for $CHROMIUM and " + ", ".join(CHROMIUM_NAMES)
               + "): install it (Debian: apt-get install chromium; .ci/run does this where it can)")
        if "chromium" in os.environ.get("LABKIT_REQUIRE_TOOLS", "").split(","):
            pytest.fail(why + "; LABKIT_REQUIRE_TOOLS lists chromium, so the browser test may not skip")
        pytest.skip(why)
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright package is missing: pip install -r requirements.txt")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def published_html_problem(root: Path) -> str | None:
    """Why ``_build/html`` cannot be tested now, or None when it is there and up to date."""
    marker = root / "_build" / "html" / "searchindex.js"     # rewritten by every build
    if not marker.is_file():
        return "no _build/html: run `make book` first to test the executed book (with its plots) too"
    built = marker.stat().st_mtime
    sources = [root / "_config.yml", root / "_toc.yml"] + [
        p for e in cc.toc_entries(root) if (p := cc.resolve_entry(root, e))]
    stale = [str(p.relative_to(root)) for p in sources if p.stat().st_mtime > built]
    if stale:
        return f"_build/html is older than {', '.join(stale[:3])}: run `make book` to test it"
    return None


def notebook_pages(root: Path) -> list[str]:
    """The pages built from notebooks: the only ones whose HTML differs when executed."""
    return [f"{e}.html" for e in cc.toc_entries(root)
            if (p := cc.resolve_entry(root, e)) is not None and p.suffix == ".ipynb"]


@pytest.fixture(scope="module")
def sites(request, browser):
    """Opens a site on first use (serves it, visits its pages), keeps it for the module."""
    opened: dict[str, Site] = {}
    with ExitStack() as stack:

        def open_site(name: str) -> Site:
            if name in opened:
                return opened[name]
            if name == "strict-build":
                book = request.getfixturevalue("strict_book")
                if book.returncode != 0:
                    pytest.skip("the strict build failed; test_book_build.py shows why")
                html, pages = book.html, site_pages(ROOT)
            else:
                problem = published_html_problem(ROOT)
                if problem:
                    pytest.skip(problem)
                # Pages from Markdown are the same as in the strict build: only notebooks again.
                html, pages = ROOT / "_build" / "html", notebook_pages(ROOT)
            shots = SCREENSHOTS / name
            if shots.exists():
                shutil.rmtree(shots)
            base = stack.enter_context(serve(html))
            context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
            stack.callback(context.close)
            reports = {page: visit(context, base, page, shots / shot_name(page)) for page in pages}
            opened[name] = Site(name, base, context, reports, html)
            return opened[name]

        yield open_site


@pytest.fixture(params=["strict-build", "make-book"])
def site(request, sites):
    """Each site in turn, for the checks of every page."""
    return sites(request.param)


@pytest.fixture
def strict_site(sites):
    """The strict build, for the checks of the whole site (the same in both builds)."""
    return sites("strict-build")


def shot_name(page: str) -> str:
    return page.replace("/", "__").replace(".html", ".png")


def _problems(site: Site, attribute: str) -> dict[str, list]:
    return {page: getattr(r, attribute) for page, r in site.reports.items() if getattr(r, attribute)}


def test_no_console_errors(site):
    assert _problems(site, "console_errors") == {}


def test_no_failed_or_external_requests(site):
    assert _problems(site, "failed_requests") == {}


def test_every_image_loads_and_has_alt_text(site):
    broken = {page: [i["src"] for i in r.images if not i["ok"]] for page, r in site.reports.items()}
    assert {p: b for p, b in broken.items() if b} == {}
    no_alt = {page: [i["src"] for i in r.images
                     if not (i["alt"] or "").strip() or re.search(r"\.(png|jpe?g|svg|gif)$", i["alt"] or "")]
              for page, r in site.reports.items()}
    assert {p: b for p, b in no_alt.items() if b} == {}, "an <img> has no alt text (or its file name as alt)"


def test_math_is_typeset(site):
    assert _problems(site, "untypeset_math") == {}


def test_every_page_has_a_screenshot(site):
    shots = SCREENSHOTS / site.name
    assert sorted(p.name for p in shots.glob("*.png")) == sorted(shot_name(p) for p in site.reports)


def test_glossary_links_resolve(strict_site):
    links = [(page, href) for page, r in strict_site.reports.items() for href in r.term_links]
    assert links, "no glossary ({term}) links found on any page"
    broken = []
    for page, href in links:
        target, fragment = urldefrag(href)
        target_page = urlparse(target).path.lstrip("/")
        report = strict_site.reports.get(target_page)
        if report is None or unquote(fragment) not in report.ids:
            broken.append(f"{page}: {href}")
    assert broken == []


def test_a_solution_dropdown_opens_on_click(strict_site):
    page = next((p for p, r in strict_site.reports.items() if r.has_dropdown), None)
    assert page, "no page has an exercise solution dropdown"
    tab = strict_site.context.new_page()
    try:
        tab.goto(strict_site.base + page, wait_until="load")
        solution = tab.locator(".solution.dropdown").first
        body = solution.locator("section, .section, p:not(.admonition-title)").first
        assert "toggle-hidden" in (solution.get_attribute("class") or "")
        assert not body.is_visible(), "the solution is visible before the click"
        solution.locator(".admonition-title").click()
        tab.wait_for_function("el => !el.classList.contains('toggle-hidden')", arg=solution.element_handle(),
                              timeout=5000)
        assert body.is_visible(), "the solution did not open"
    finally:
        tab.close()


def test_every_launch_link_targets_this_repository_and_the_page_notebook(strict_site):
    """Launch buttons that work or are not there (issue 16): each notebook page's launch menu
    has a Binder link to this repository's branch and that page's notebook (a file that
    exists), no Colab link, and a JupyterHub link only when `jupyterhub_url` is configured.
    The links are read from the page as the browser shows them; they are not followed (the
    test runs offline)."""
    import yaml
    from urllib.parse import parse_qs

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    launch, repository = config.get("launch_buttons") or {}, config["repository"]
    slug = urlparse(repository["url"]).path.strip("/")
    hub = (launch.get("jupyterhub_url") or "").rstrip("/")
    tab = strict_site.context.new_page()
    try:
        for page in notebook_pages(ROOT):
            tab.goto(strict_site.base + page, wait_until="load")
            links = tab.eval_on_selector_all(
                ".dropdown-launch-buttons a[href]", "links => links.map(a => a.href)")
            notebook = page.removesuffix(".html") + ".ipynb"
            assert (ROOT / notebook).is_file()
            binder = [u for u in links if urlparse(u).netloc == "mybinder.org"]
            assert len(binder) == 1, f"{page}: Binder links {binder}"
            url = urlparse(binder[0])
            assert url.scheme == "https" and url.path == f"/v2/gh/{slug}/{repository['branch']}", binder
            assert parse_qs(url.query)["urlpath"] == [f"lab/tree/{notebook}"], binder
            assert not [u for u in links if "colab" in urlparse(u).netloc], f"{page}: a Colab link"
            hubs = [u for u in links if "/hub/user-redirect/git-pull" in u]
            if hub:
                assert len(hubs) == 1 and hubs[0].startswith(hub + "/hub/"), hubs
                assert parse_qs(urlparse(hubs[0]).query)["repo"] == [repository["url"]]
            else:
                assert hubs == [], f"{page}: a JupyterHub link with no hub configured"
            assert set(links) == set(binder + hubs), f"{page}: unexpected launch links {links}"
    finally:
        tab.close()


def test_search_finds_kv_cache(strict_site):
    tab = strict_site.context.new_page()
    try:
        tab.goto(urljoin(strict_site.base, "search.html?q=KV+cache"), wait_until="load")
        tab.wait_for_selector("#search-results .search-summary", timeout=15000)
        hits = tab.eval_on_selector_all("#search-results ul.search li a",
                                        "links => links.map(a => a.getAttribute('href'))")
        assert hits, tab.inner_text("#search-results")
        assert any("glossary" in h for h in hits), hits
    finally:
        tab.close()


def test_a_slide_deck_opens_offline_and_moves_on(site):
    """Every chapter's deck (book/_ext/slides.py) loads without errors or network requests; on
    the executed book the key plot is there."""
    decks = sorted(p.name for p in (site.html / "slides").glob("*.html"))
    assert decks, "no slide decks were written"
    tab = site.context.new_page()
    errors, failed = [], []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # a request the next navigation cancels (e.g. the favicon) is aborted, not failed
    tab.on("requestfailed", lambda r: failed.append(r.url) if "ERR_ABORTED" not in (r.failure or "") else None)
    tab.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    tab.on("request", lambda r: failed.append(r.url) if not r.url.startswith(site.base) else None)
    try:
        for name in decks:
            tab.goto(urljoin(site.base, f"slides/{name}"), wait_until="load")
            tab.wait_for_function("window.Reveal && Reveal.isReady()", timeout=10000)
            assert tab.evaluate("Reveal.getTotalSlides()") == 5, name
            tab.keyboard.press("ArrowRight")
            assert tab.evaluate("Reveal.getIndices().h") == 1, name
            if site.name == "make-book" and name == "01-models.html":
                tab.evaluate("Reveal.slide(2)")
                assert tab.locator("section.present figure img").count() == 1, "no key plot on slide 3"
    finally:
        tab.close()
    assert errors == [] and failed == []


def test_the_checks_catch_a_broken_page(browser, tmp_path):
    """Gate: each per-page check fires on a page that breaks it (so a pass means something)."""
    (tmp_path / "ok.png").write_bytes(bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"))
    (tmp_path / "page.html").write_text(
        "<html><body><p>math left raw: \\(n^2\\)</p>"
        '<img src="ok.png" alt="ok.png"><img src="missing.png" alt="A missing figure">'
        '<img src="http://example.com/x.png" alt="An external figure">'
        "<script>console.error('boom')</script></body></html>")
    with serve(tmp_path) as base:
        context = browser.new_context()
        try:
            report = visit(context, base, "page.html", tmp_path / "shot.png")
        finally:
            context.close()
    assert any("boom" in e for e in report.console_errors)
    assert any("missing.png" in r for r in report.failed_requests)
    assert any("example.com" in r for r in report.failed_requests), "an external request got through"
    assert report.untypeset_math == ["math left raw: \\(n^2\\)"]
    assert [i["ok"] for i in report.images] == [True, False, False]
    assert (tmp_path / "shot.png").is_file()
