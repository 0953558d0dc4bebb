"""Turn a MyST-Markdown draft (jupytext "myst" format) into a course notebook.

    .venv/bin/python scripts/md2ipynb.py draft.md book/NN-topic.ipynb

The notebook is the source of truth afterwards; this only saves typing JSON by hand. The
result carries no outputs, no execution counts and no jupytext metadata, and uses the
python3 kernel, as the course's structure tests require.
"""

import sys

import jupytext
import nbformat


def convert(src: str, dst: str) -> None:
    nb = jupytext.read(src, fmt="md:myst")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("lines_to_next_cell", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    nbformat.write(nb, dst)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/md2ipynb.py DRAFT.md OUT.ipynb")
    convert(sys.argv[1], sys.argv[2])
