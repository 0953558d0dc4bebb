"""Local Sphinx extension of the course book: small fixes to the generated HTML.

Loaded from _config.yml (``sphinx.local_extensions``).

* Inline scripts added after the HTML builder starts (sphinx-thebe adds one) are written
  twice by Sphinx 7.4: the builder keeps them once with filename ``None`` and once with
  ``''``. The second ``const THEBE_JS_URL`` is then an uncaught SyntaxError on every page.
  Fixed upstream in Sphinx 8.2 (sphinx-doc/sphinx PR #13402); Jupyter Book 1 needs Sphinx 7,
  so each page's scripts are de-duplicated here.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        key = (getattr(script, "filename", script) or "", getattr(script, "priority", 0),
               tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
