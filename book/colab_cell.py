"""The notebooks' Colab cell, and the repository address that it, the badges and the book use.

Every numbered notebook opens with its title (markdown), then this code cell. On Google Colab, where
mrcnn_teach is not installed, it pip-installs the package from the repository and keeps Colab's own
torch and torchvision (pinned to the versions already there, so pip cannot replace them). Anywhere
else (a clone after `make install`, Binder, nbval) it does nothing and prints nothing.

The repository address lives in ONE place: `[project.urls] Repository` in pyproject.toml. A fork
edits that line and runs

    .venv/bin/python book/colab_cell.py          # (or `make repo-url`)

which rewrites the cell in every notebook (.ipynb and its py:percent twin) and the Colab/Binder
links in README.md; the book reads the address from pyproject.toml when it is built.
`python book/colab_cell.py --check` only reports what is out of date (exit status 1).
tests/test_colab_cell.py checks the cell in every notebook and runs it both ways.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CELL_ID = "colab-install"  # the inserted cell's nbformat id (unique within a notebook)
MARKER = "# On Google Colab, install mrcnn_teach"  # how an older version of the cell is recognised

TEMPLATE = '''\
# On Google Colab, install mrcnn_teach from its repository, keeping Colab's own torch and torchvision.
# Anywhere else (a clone after `make install`, Binder) this cell does nothing.
import importlib.util
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("mrcnn_teach") is None:
    import subprocess
    from importlib.metadata import version

    keep = [f"{name}=={version(name)}" for name in ("torch", "torchvision")]  # e.g. torch==2.8.0+cu126
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "mrcnn_teach @ git+{repository}", *keep], check=True)
    importlib.invalidate_caches()'''


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """`[project.urls] Repository` from pyproject.toml, without a trailing slash or '.git'."""
    text = pyproject.read_text(encoding="utf-8")
    section = re.search(r"^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", text, flags=re.M | re.S)
    if section is None:
        raise SystemExit(f"{pyproject}: no [project.urls] table; add Repository = \"https://github.com/OWNER/NAME\"")
    found = re.search(r'^Repository\s*=\s*"([^"]+)"', section.group(1), flags=re.M)
    if found is None:
        raise SystemExit(f"{pyproject}: [project.urls] has no Repository = \"...\" line")
    url = found.group(1).rstrip("/")
    url = url[:-4] if url.endswith(".git") else url
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"{pyproject}: Repository = {url!r} is not https://github.com/OWNER/NAME "
                         "(Colab and Binder open notebooks from GitHub)")
    return url


def github_slug(url: str | None = None) -> str:
    """'OWNER/NAME' of the repository."""
    return (url or repository_url()).removeprefix("https://github.com/")


def cell_source(url: str | None = None) -> str:
    return TEMPLATE.replace("{repository}", url or repository_url())


def colab_url(notebook: str, url: str | None = None, branch: str = "main") -> str:
    """Open notebooks/NOTEBOOK in Colab (from GitHub)."""
    return f"https://colab.research.google.com/github/{github_slug(url)}/blob/{branch}/notebooks/{notebook}"


def binder_url(notebook: str | None = None, url: str | None = None, branch: str = "main") -> str:
    """Open the repository (or notebooks/NOTEBOOK) in JupyterLab on mybinder.org."""
    path = f"notebooks/{notebook}" if notebook else "notebooks"
    return f"https://mybinder.org/v2/gh/{github_slug(url)}/{branch}?labpath={path}"


def numbered_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


# --- .ipynb -------------------------------------------------------------------------------------

def _lines(source: str) -> list[str]:
    return source.splitlines(keepends=True)


def new_ipynb(text: str, source: str, name: str = "notebook") -> str | None:
    """The notebook's JSON with the cell right after the title cell (later execution counts shift by
    one, so a notebook saved from one top-to-bottom run still reads as one); None if already there."""
    nb = json.loads(text)
    cells = nb["cells"]
    if not cells or cells[0]["cell_type"] != "markdown":
        raise SystemExit(f"{name}: the first cell must be the title (markdown)")
    second = cells[1] if len(cells) > 1 else None
    if second is not None and second["cell_type"] == "code" and "".join(second["source"]).startswith(MARKER):
        if "".join(second["source"]) == source:
            return None
        second["source"] = _lines(source)  # an older text of the cell: replace it, counts stay
    else:
        code = [c for c in cells if c["cell_type"] == "code"]
        executed = bool(code) and all(isinstance(c.get("execution_count"), int) for c in code)
        for c in code:
            if isinstance(c.get("execution_count"), int):
                c["execution_count"] += 1
            for out in c.get("outputs", []):
                if isinstance(out.get("execution_count"), int):
                    out["execution_count"] += 1
        cell = {"cell_type": "code", "execution_count": 1 if executed else None,
                "id": CELL_ID, "metadata": {}, "outputs": [], "source": _lines(source)}
        if (nb.get("nbformat", 4), nb.get("nbformat_minor", 0)) < (4, 5):
            del cell["id"]  # cell ids arrived in nbformat 4.5
        cells.insert(1, cell)
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"  # nbformat's own layout


# --- py:percent twin ----------------------------------------------------------------------------

_CELL_START = re.compile(r"^# %%.*$", flags=re.M)


def new_py(text: str, source: str, name: str = "twin") -> str | None:
    """The same edit in the py:percent twin: the cell goes after the first (title) cell."""
    starts = [m.start() for m in _CELL_START.finditer(text)] + [len(text)]
    if len(starts) < 2 or not text[starts[0]:].startswith("# %% [markdown]"):
        raise SystemExit(f"{name}: the first cell must be the title (# %% [markdown])")
    block = f"# %%\n{source}\n\n"
    if len(starts) >= 3 and text[starts[1]:].startswith("# %%\n" + MARKER):
        if text[starts[1]:starts[2]].strip() == block.strip():
            return None  # the same cell (jupytext may leave one or two blank lines after it)
        return text[:starts[1]] + block + text[starts[2]:]  # an older text of the cell
    if len(starts) == 2:  # the title is the only cell
        return text.rstrip("\n") + "\n\n" + block.rstrip("\n") + "\n"
    return text[:starts[1]] + block + text[starts[1]:]


# --- README links -------------------------------------------------------------------------------

_README_LINK = re.compile(
    r"https://(?:colab\.research\.google\.com/github|mybinder\.org/v2/gh)/([\w.-]+/[\w.-]+)/")
_NOTEBOOK_ROW = re.compile(r"^\|\s*\[[^\]]+\]\(notebooks/([0-9]{2}_[\w-]+\.ipynb)\)")
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def colab_badge(notebook: str, url: str | None = None) -> str:
    return f"[![Open in Colab]({COLAB_BADGE})]({colab_url(notebook, url)})"


def new_readme(text: str, url: str | None = None) -> str | None:
    """The README with every Colab and Binder link pointed at the repository, and a Colab badge in
    the last column of each row of the notebook table (a row added without one gets it); None if
    nothing changes."""
    slug = github_slug(url)
    new = _README_LINK.sub(lambda m: m.group(0).replace(m.group(1), slug), text)
    lines = new.split("\n")
    i = 0
    while i < len(lines):
        if not lines[i].startswith("|"):
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].startswith("|"):
            j += 1
        block = range(i, j)  # one table: header, separator, rows
        rows = [k for k in block if _NOTEBOOK_ROW.match(lines[k])]
        if rows and j - i >= 3:
            if "Colab" not in lines[i]:
                lines[i] = lines[i].rstrip() + " Colab |"
                lines[i + 1] = lines[i + 1].rstrip() + " :---: |"
            for k in rows:
                if "colab.research.google.com/github/" not in lines[k]:
                    notebook = _NOTEBOOK_ROW.match(lines[k]).group(1)
                    lines[k] = lines[k].rstrip() + f" {colab_badge(notebook, url)} |"
        i = j
    new = "\n".join(lines)
    return None if new == text else new


def main(argv: list[str]) -> int:
    check = "--check" in argv
    url = repository_url()
    source = cell_source(url)
    jobs = []
    for nb in numbered_notebooks():
        jobs.append((nb, lambda t, p=nb: new_ipynb(t, source, p.name)))
        twin = nb.with_suffix(".py")
        if twin.exists():
            jobs.append((twin, lambda t, p=twin: new_py(t, source, p.name)))
    jobs.append((ROOT / "README.md", lambda t: new_readme(t, url)))
    stale = 0
    for path, make in jobs:
        new = make(path.read_text(encoding="utf-8"))
        if new is None:
            continue
        stale += 1
        if check:
            print(f"out of date: {path.relative_to(ROOT)} (run: python book/colab_cell.py)")
        else:
            path.write_text(new, encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
