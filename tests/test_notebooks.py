"""The notebooks as a product: paired with their text twins, saved clean, executed in order, complete.

nbval (in `make test`) runs every notebook; these tests check what a reader of the saved files
sees on GitHub without running anything.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
# Paths of a particular machine or user, and progress-bar debris, have no place in saved outputs.
MACHINE = re.compile(r"(/work/|/root/|/home/|/tmp/|/Users/|\.venv|site-packages|C:\\\\)")
PROGRESS = re.compile(r"(\r|it/s\]|\d+%\|)")


def cells(path):
    return json.loads(path.read_text())["cells"]


def outputs(path):
    for i, cell in enumerate(cells(path)):
        for out in cell.get("outputs", []):
            yield i, out


def text_of(out) -> str:
    if out["output_type"] == "stream":
        return "".join(out["text"])
    data = out.get("data", {})
    return "".join(data.get("text/plain", "")) + "".join(data.get("text/markdown", ""))


def test_there_are_notebooks():
    assert len(PATHS) >= 1


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_py_percent_twin_agrees(path):
    import jupytext

    twin = path.with_suffix(".py")
    assert twin.exists(), f"{path.name} has no py:percent twin; run `make sync`"
    from_py = jupytext.read(twin)
    from_nb = cells(path)
    assert [c.cell_type for c in from_py.cells] == [c["cell_type"] for c in from_nb], f"{path.name}: run `make sync`"
    for a, b in zip(from_py.cells, from_nb):
        assert a.source.strip() == "".join(b["source"]).strip(), f"{path.name} and {twin.name} differ: run `make sync`"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_saved_executed_in_order_and_clean(path):
    code = [c for c in cells(path) if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not saved from one top-to-bottom run: {counts}"
    for i, out in outputs(path):
        assert out["output_type"] != "error", f"{path.name} cell {i} saved with an error"
        text = text_of(out)
        assert not MACHINE.search(text), f"{path.name} cell {i} shows a machine path: {MACHINE.search(text)[0]!r}"
        assert not PROGRESS.search(text), f"{path.name} cell {i} holds progress-bar output"
        assert "Traceback" not in text and "Warning:" not in text, f"{path.name} cell {i} saved a traceback or warning"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_structure(path):
    nb = cells(path)
    first = "".join(nb[0]["source"])
    assert nb[0]["cell_type"] == "markdown" and first.startswith("# "), f"{path.name} must open with a title"
    for needed in ("You will learn", "Builds on", "Run time"):
        assert needed in first, f"{path.name}: the opening cell lacks '{needed}'"
    markdown = "\n".join("".join(c["source"]) for c in nb if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in nb if c["cell_type"] == "code")
    assert "## Exercises" in markdown, f"{path.name} has no Exercises section"
    assert "## Summary" in markdown, f"{path.name} has no Summary"
    assert "show_source(" in code, f"{path.name} never shows the library's source"
    assert len(re.findall(r"^\s*assert ", code, flags=re.M)) >= 5, f"{path.name} asserts too few shapes"
    assert "NBVAL_CHECK_OUTPUT" in code, f"{path.name} marks no cell whose printed numbers are the lesson"
    pictures = sum("image/png" in out.get("data", {}) for _, out in outputs(path))
    assert pictures >= 3, f"{path.name} shows {pictures} pictures; at least 3"
    nxt = sorted(p.name for p in PATHS if p.name > path.name)
    if nxt:
        assert nxt[0] in markdown, f"{path.name} does not link to the next notebook {nxt[0]}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_checked_cells_do_not_depend_on_the_model_cache(path):
    # On a fresh clone the first call of trained_shapes_model() trains and prints a note to stderr;
    # nbval compares stderr too, so a checked cell must not be the one that calls it.
    for i, cell in enumerate(cells(path)):
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in source:
            assert "trained_shapes_model(" not in source, f"{path.name} cell {i}: checked cell loads the cached model"
