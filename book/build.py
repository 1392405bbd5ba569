"""Build the book: the numbered notebooks as a static web site, from their saved outputs.

    .venv-book/bin/python book/build.py [--out build/book]      # what `make book` runs

1. Stages a Jupyter Book source folder, OUT/src/: the notebooks found by the glob
   notebooks/[0-9][0-9]_*.ipynb (so notebooks/solutions/ never enters the book), copied as they are
   saved (a relative link to a repository file that is not a chapter is pointed at GitHub), their
   thumbnails, a home page made from book/intro.md with the notebook table filled in, a table of
   contents in notebook order, and book/_config.yml with the repository address from pyproject.toml.
2. Runs Jupyter Book 1 (Sphinx) on it with execution off and warnings as errors. The site is
   OUT/_build/html/ (index.html is the home page); MathJax is copied into it (sphinx-mathjax-offline),
   so the site needs no network.

book/chapter_links.py (a Sphinx extension) puts the download / Colab / Binder links at the top of
each chapter and leaves the Colab install cell out of the pages.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import colab_cell  # noqa: E402  (the repository address and the Colab/Binder link formats)

NOTEBOOKS = ROOT / "notebooks"
_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
_README_ROW = re.compile(r"^\|\s*\[[^\]]+\]\(notebooks/(?P<file>[0-9]{2}_[\w-]+\.ipynb)\)\s*\|\s*(?P<learn>[^|]+?)\s*\|",
                         flags=re.M)


def notebooks() -> list[Path]:
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise SystemExit(f"no notebooks match {NOTEBOOKS}/[0-9][0-9]_*.ipynb")
    return found


def title_of(nb: dict, path: Path) -> str:
    first = "".join(nb["cells"][0]["source"]) if nb["cells"] else ""
    match = re.match(r"#\s+(.+)", first)
    if nb["cells"][0]["cell_type"] != "markdown" or match is None:
        raise SystemExit(f"{path.name}: the first cell must be a markdown title ('# NN — ...')")
    return match.group(1).strip()


def summary_of(nb: dict) -> str:
    """The opening paragraph's first sentence: the home table's text for a notebook the README
    table does not list yet."""
    text = "".join(nb["cells"][0]["source"]).split("\n", 1)[-1].strip()
    paragraph = text.split("\n\n", 1)[0].replace("\n", " ")
    sentence = re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0]
    return sentence.replace("|", "\\|")


def rewrite_links(source: str, chapters: set[str], repository: str) -> str:
    """Point a relative link to a repository file that is not a chapter at its page on GitHub."""
    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:|#", target):  # http:, mailto:, an anchor on this page
            return m.group(0)
        if target.split("#", 1)[0] in chapters:
            return m.group(0)
        path = (NOTEBOOKS / target.split("#", 1)[0]).resolve()
        try:
            rel = path.relative_to(ROOT).as_posix()
        except ValueError:
            return m.group(0)
        kind = "tree" if path.is_dir() else "blob"
        anchor = "#" + target.split("#", 1)[1] if "#" in target else ""
        return f"{m.group(1)}{repository}/{kind}/main/{rel}{anchor}{m.group(3)}"
    return _LINK.sub(fix, source)


def stage(src: Path, repository: str) -> list[Path]:
    if src.exists():
        shutil.rmtree(src)
    (src / "thumbnails").mkdir(parents=True)
    paths = notebooks()
    chapters = {p.name for p in paths}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    learn = {m["file"]: m["learn"] for m in _README_ROW.finditer(readme)}
    rows = ["| chapter | what you learn | | run it |", "| --- | --- | --- | --- |"]
    toc = ["# Table of contents, made by book/build.py from notebooks/[0-9][0-9]_*.ipynb", "format: jb-book",
           "root: intro", "chapters:"]
    for path in paths:
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
        title = title_of(nb, path)
        changed = False
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                before = "".join(cell["source"])
                after = rewrite_links(before, chapters, repository)
                if after != before:
                    cell["source"] = after.splitlines(keepends=True)
                    changed = True
        if changed:
            text = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        (src / path.name).write_text(text, encoding="utf-8")
        toc.append(f"  - file: {path.stem}")
        thumb = NOTEBOOKS / "thumbnails" / f"{path.stem}.png"
        picture = ""
        if thumb.exists():
            shutil.copy2(thumb, src / "thumbnails" / thumb.name)
            picture = f"![a picture from notebook {path.stem[:2]}](thumbnails/{thumb.name}){{w=160px .nb-thumbnail}}"
        runs = (f"[Colab]({colab_cell.colab_url(path.name, repository)}) · "
                f"[Binder]({colab_cell.binder_url(path.name, repository)})")
        rows.append(f"| [{title}]({path.name}) | {learn.get(path.name) or summary_of(nb)} | {picture} | {runs} |")
    intro = (HERE / "intro.md").read_text(encoding="utf-8")
    intro = intro.replace("@REPOSITORY@", repository).replace("@NOTEBOOK_TABLE@", "\n".join(rows))
    (src / "intro.md").write_text(intro, encoding="utf-8")
    (src / "_toc.yml").write_text("\n".join(toc) + "\n", encoding="utf-8")
    config = (HERE / "_config.yml").read_text(encoding="utf-8").replace("@REPOSITORY@", repository)
    (src / "_config.yml").write_text(config, encoding="utf-8")
    shutil.copy2(HERE / "chapter_links.py", src / "chapter_links.py")
    links = {"marker": colab_cell.MARKER,
             "chapters": {p.stem: {"colab": colab_cell.colab_url(p.name, repository),
                                   "binder": colab_cell.binder_url(p.name, repository)} for p in paths}}
    (src / "_chapter_links.json").write_text(json.dumps(links, indent=1), encoding="utf-8")
    shutil.copytree(HERE / "_static", src / "_static")
    return paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="build folder (default build/book)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    repository = colab_cell.repository_url()
    start = time.perf_counter()
    paths = stage(out / "src", repository)
    html = out / "_build" / "html"
    if html.exists():
        shutil.rmtree(html)  # a chapter removed from notebooks/ must not linger in the site
    jb = Path(sys.executable).with_name("jupyter-book")
    command = [str(jb), "build", str(out / "src"), "--path-output", str(out), "--builder", "html",
               "--warningiserror", "--keep-going", "--quiet"]
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        print(f"book: jupyter-book failed (exit {done.returncode}): {' '.join(command)}", file=sys.stderr)
        return done.returncode
    print(f"book: {len(paths)} chapters ({paths[0].stem} .. {paths[-1].stem}) in "
          f"{time.perf_counter() - start:.0f} s -> {html.relative_to(ROOT) if html.is_relative_to(ROOT) else html}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
