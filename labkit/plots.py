"""One plotting style for the whole course; every axis carries its unit.

Use :func:`new_figure` for a figure with labelled axes. Labels must name their unit in
parentheses, e.g. ``"context length (tokens)"`` or ``"time (ms)"``; a label without one raises
ValueError, because a number without a unit is not a measurement.
"""

from __future__ import annotations

import re

import matplotlib

#: Colours used for the same idea everywhere in the course (colour-blind safe, Okabe-Ito).
COLORS = {
    "measured": "#0072B2",   # blue: what this machine did
    "derived": "#E69F00",    # orange: a formula's prediction
    "cited": "#009E73",      # green: a published figure
    "limit": "#D55E00",      # vermillion: the hardware's limit (roofline)
    "other": "#999999",
}
_CYCLE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
_UNIT = re.compile(r"\([^)]+\)|\[[^\]]+\]")

STYLE = {
    "figure.figsize": (6.4, 3.8),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
}


def use_style() -> None:
    """Apply the course style to matplotlib (idempotent)."""
    from cycler import cycler

    matplotlib.rcParams.update(STYLE)
    matplotlib.rcParams["axes.prop_cycle"] = cycler(color=_CYCLE)


def check_label(label: str) -> str:
    """Return ``label`` if it names a unit in parentheses or brackets, else raise ValueError."""
    if not isinstance(label, str) or not _UNIT.search(label):
        raise ValueError(f"axis label {label!r} has no unit; write it like 'time (ms)' or "
                         "'size (GB)' (use '(count)' or '(ratio)' for plain numbers)")
    return label


def new_figure(xlabel: str, ylabel: str, title: str | None = None, *, logx: bool = False,
               logy: bool = False, figsize: tuple[float, float] | None = None):
    """A figure and axes in the course style, with unit-checked labels.

    Returns ``(fig, ax)``. End the cell with ``plt.show()`` so that notebooks under nbval show
    no stray text output.
    """
    import matplotlib.pyplot as plt

    use_style()
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlabel(check_label(xlabel))
    ax.set_ylabel(check_label(ylabel))
    if title:
        ax.set_title(title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    return fig, ax


class Table:
    """A small table that shows as HTML in notebooks and the book, and as text elsewhere.

    Args:
        rows: a list of rows, each a list of cells (numbers are formatted with ``fmt``).
        columns: column headers; include units, e.g. ``"size (MB)"``.
        caption: optional caption shown above the table.
        fmt: format for float cells (default 3 significant digits).
    """

    def __init__(self, rows, columns, caption: str | None = None, fmt: str = "{:.3g}"):
        self.columns = [str(c) for c in columns]
        self.rows = [[self._cell(v, fmt) for v in row] for row in rows]
        bad = [i for i, r in enumerate(self.rows) if len(r) != len(self.columns)]
        if bad:
            raise ValueError(f"rows {bad} do not have {len(self.columns)} cells like the header")
        self.caption = caption

    @staticmethod
    def _cell(value, fmt: str) -> str:
        if isinstance(value, float):
            return fmt.format(value)
        return str(value)

    @staticmethod
    def _html_cell(value: str) -> str:
        import html

        if value.startswith(("https://", "http://")) and " " not in value:
            text = value.split("://", 1)[1]
            text = text if len(text) <= 48 else text[:47] + "…"
            return f'<a href="{html.escape(value)}">{html.escape(text)}</a>'
        return html.escape(value)

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{self._html_cell(v)}</td>" for v in row) + "</tr>"
                       for row in self.rows)
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        size = ' style="font-size: 0.85em"' if len(self.columns) > 5 else ""
        return f"<table{size}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
                  for i, c in enumerate(self.columns)]
        lines = [self.caption] if self.caption else []
        lines.append("  ".join(c.ljust(w) for c, w in zip(self.columns, widths)))
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in self.rows]
        return "\n".join(lines)
