"""Sphinx extension of the mrcnn_teach book (loaded from the staged source folder by book/build.py).

For every chapter (a notebook page):
- under the title, a line of links: download this notebook (.ipynb, the file as saved), open it in
  Colab, open it in Binder (the same targets as the header's download and rocket menus);
- the notebook's Colab install cell (book/colab_cell.py) is left out of the page: it does nothing
  outside Colab, and a reader of the book opens Colab from the link instead. The downloaded .ipynb
  keeps it.
And on every page, sphinx-thebe's scripts are left out: Jupyter Book 1 always loads sphinx-thebe,
which adds its inline config twice (an uncaught "Identifier 'THEBE_JS_URL' has already been
declared" on every page) and would fetch thebe from a CDN; the book runs no code live (thebe off).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from docutils import nodes

LINKS_FILE = "_chapter_links.json"  # written by book/build.py from book/colab_cell.py


@functools.cache
def _links(srcdir: str) -> dict:
    """{"marker": first line of the Colab cell, "chapters": {docname: {"colab": url, "binder": url}}}."""
    return json.loads((Path(srcdir) / LINKS_FILE).read_text(encoding="utf-8"))


def _is_colab_cell(node: nodes.Node, marker: str) -> bool:
    if not (isinstance(node, nodes.container) and node.get("nb_element") == "cell_code"):
        return False
    blocks = list(node.findall(nodes.literal_block))
    return bool(blocks) and blocks[0].astext().startswith(marker)


def on_doctree_read(app, doctree: nodes.document) -> None:
    docname = app.env.docname
    if Path(app.env.doc2path(docname)).suffix != ".ipynb":
        return
    links = _links(str(app.srcdir))
    for cell in [n for n in doctree.findall(nodes.container) if _is_colab_cell(n, links["marker"])]:
        cell.parent.remove(cell)
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None or not isinstance(section[0], nodes.title):
        return
    colab, binder = links["chapters"][docname]["colab"], links["chapters"][docname]["binder"]
    line = nodes.paragraph(classes=["chapter-links"])
    items = [(f"_sources/{docname}.ipynb", "Download the notebook (.ipynb)"),
             (colab, "Open in Colab"), (binder, "Open in Binder")]
    for i, (uri, text) in enumerate(items):
        if i:
            line += nodes.Text(" · ")
        line += nodes.reference("", text, refuri=uri, internal=False, classes=["chapter-link"])
    section.insert(1, line)


def _is_thebe(asset) -> bool:
    return "thebe" in str(asset.filename or "") or "THEBE" in asset.attributes.get("body", "")


def drop_thebe(app, pagename, templatename, context, doctree) -> None:
    for key in ("script_files", "css_files"):
        if key in context:
            context[key][:] = [asset for asset in context[key] if not _is_thebe(asset)]


def setup(app):
    app.connect("doctree-read", on_doctree_read)
    app.connect("html-page-context", drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
