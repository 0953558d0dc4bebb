import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from labkit import plots  # noqa: E402


def test_new_figure_labels_axes_with_units():
    fig, ax = plots.new_figure("context length (tokens)", "time [ms]", "title", logx=True)
    assert ax.get_xlabel() == "context length (tokens)" and ax.get_xscale() == "log"
    assert matplotlib.rcParams["axes.spines.top"] is False
    plt.close(fig)


@pytest.mark.parametrize("label", ["time", "", None])
def test_labels_without_units_are_refused(label):
    with pytest.raises(ValueError, match="has no unit"):
        plots.new_figure(label, "size (GB)")


def test_table_renders_html_and_text():
    t = plots.Table([["a", 1.23456], ["b<", 2]], ["name", "value (ms)"], caption="cap")
    html = t._repr_html_()
    assert "<th>value (ms)</th>" in html and "1.23" in html and "b&lt;" in html and "<caption>cap" in html
    assert repr(t).splitlines()[0] == "cap"
    with pytest.raises(ValueError, match="cells"):
        plots.Table([[1]], ["a", "b"])


def test_table_links_urls_and_shrinks_wide_tables():
    url = "https://docs.aws.amazon.com/fsx/latest/LustreGuide/performance.html"
    html = plots.Table([[url, 1, 2, 3, 4, 5]], list("abcdef"))._repr_html_()
    assert f'<a href="{url}">docs.aws.amazon.com/fsx/latest/LustreGuide/perf…</a>' in html
    assert 'font-size: 0.85em' in html
    assert "font-size" not in plots.Table([["x"]], ["a"])._repr_html_()
