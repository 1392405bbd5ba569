"""The notebooks' Colab cell (book/colab_cell.py holds its one text): in place, and doing the right thing.

On Colab without mrcnn_teach it pip-installs the package from the repository and pins torch and
torchvision to the versions already installed, so Colab's own builds stay; anywhere else it does
nothing and prints nothing. The cell is exec'd here with `google.colab` faked in sys.modules and
with mrcnn_teach made unimportable, and subprocess.run replaced by a recorder.
"""

import importlib.util
import json
import subprocess
import sys
import types
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("colab_cell", ROOT / "book" / "colab_cell.py")
colab_cell = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab_cell)

PATHS = colab_cell.numbered_notebooks()
SOURCE = colab_cell.cell_source()
URL = colab_cell.repository_url()


def test_repository_url_is_one_github_address():
    assert URL.startswith("https://github.com/") and URL.count("/") == 4, URL
    assert f"mrcnn_teach @ git+{URL}" in SOURCE


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_first_code_cell_is_the_colab_cell(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# "), \
        f"{path.name}: the title must stay the first cell"
    cell = cells[1]
    assert cell["cell_type"] == "code", f"{path.name}: the cell after the title must be the Colab cell"
    assert "".join(cell["source"]) == SOURCE, f"{path.name}: Colab cell differs from book/colab_cell.py; " \
                                              "run `make repo-url`"
    assert cell["outputs"] == [], f"{path.name}: the Colab cell was saved with output (it must print nothing here)"
    assert cell["execution_count"] == 1, f"{path.name}: the Colab cell is not the first cell run (saved unexecuted?)"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_twin_has_the_colab_cell(path):
    import jupytext

    twin = jupytext.read(path.with_suffix(".py"))
    assert twin.cells[1].cell_type == "code" and twin.cells[1].source.strip() == SOURCE.strip(), \
        f"{path.with_suffix('.py').name}: Colab cell missing or stale; run `make repo-url`"


def test_readme_and_notebooks_up_to_date(capsys):
    # --check rewrites nothing; it reports every notebook, twin or README link that disagrees.
    assert colab_cell.main(["--check"]) == 0, capsys.readouterr().out


def test_readme_links_name_the_repository():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    slug = colab_cell.github_slug()
    for path in PATHS:
        assert colab_cell.colab_url(path.name) in text, \
            f"README has no Colab link for {path.name}: give it a row in the notebook table, then `make repo-url`"
    assert f"https://mybinder.org/v2/gh/{slug}/" in text, "README has no Binder badge"


@pytest.fixture
def run_cell(monkeypatch):
    """Exec the cell with Colab present or not and mrcnn_teach importable or not; return pip calls."""
    def run(on_colab: bool, installed: bool):
        calls = []
        monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append((a, k)))
        if on_colab:
            monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
        else:
            monkeypatch.delitem(sys.modules, "google.colab", raising=False)
        real = importlib.util.find_spec
        if not installed:
            monkeypatch.setattr(importlib.util, "find_spec",
                                lambda name, *a: None if name == "mrcnn_teach" else real(name, *a))
        exec(compile(SOURCE, "<colab cell>", "exec"), {"__name__": "__main__"})
        return calls
    return run


@pytest.mark.parametrize("on_colab, installed", [(False, False), (False, True), (True, True)])
def test_cell_does_nothing_off_colab_or_when_installed(run_cell, capsys, on_colab, installed):
    assert run_cell(on_colab, installed) == []
    assert capsys.readouterr() == ("", "")


def test_cell_installs_on_colab_keeping_its_torch(run_cell, capsys):
    calls = run_cell(on_colab=True, installed=False)
    assert len(calls) == 1
    (command,), kwargs = calls[0]
    assert command[:5] == [sys.executable, "-m", "pip", "install", "-q"]
    assert command[5:] == [f"mrcnn_teach @ git+{URL}",
                           f"torch=={version('torch')}", f"torchvision=={version('torchvision')}"]
    assert kwargs == {"check": True}  # a failed install stops the notebook here, not three cells later
    assert capsys.readouterr() == ("", "")


def test_pinned_torch_is_inside_the_declared_range():
    # The cell pins Colab's torch; pip keeps it only if the package's declared range allows it.
    # Checked with this environment's torch (Colab's is checked by the same resolver there).
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {r.name: r for r in map(Requirement, project["dependencies"])}
    for name in ("torch", "torchvision"):
        installed = Version(version(name))
        assert declared[name].specifier.contains(installed, prereleases=True), (name, str(installed))
        assert "==" not in str(declared[name].specifier), f"{name} is pinned exactly: Colab's would be replaced"


def _pins(path):
    """name -> '==version' lines of a requirements/constraints file (options and comments skipped)."""
    from packaging.requirements import Requirement

    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return {r.name: str(r.specifier) for r in map(Requirement, (l for l in lines if l and not l.startswith("-")))}


def test_binder_installs_this_repositorys_torch_pair():
    # repo2docker installs .binder/requirements.txt before the source is there, so it cannot read
    # constraints.txt: the two must say the same, and postBuild must install the package with them.
    constraints = _pins(ROOT / "constraints.txt")
    assert set(constraints) == {"torch", "torchvision"} and all(v.startswith("==") for v in constraints.values())
    assert _pins(ROOT / ".binder" / "requirements.txt") == constraints
    post = (ROOT / ".binder" / "postBuild").read_text(encoding="utf-8")
    assert post.startswith("#!/bin/bash") and "set -euo pipefail" in post
    assert "-c constraints.txt" in post and "pip install" in post
    assert (ROOT / ".binder" / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    runtime = (ROOT / ".binder" / "runtime.txt").read_text(encoding="utf-8").strip()
    assert runtime == "python-3.11", runtime  # the Python this repository's pins are made for
    assert "-c constraints.txt" in (ROOT / "environment.yml").read_text(encoding="utf-8")
