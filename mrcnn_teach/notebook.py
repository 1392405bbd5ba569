"""What every notebook shares: one setup call, the library's own source shown in a cell, shape tables.

    from mrcnn_teach.notebook import setup, show_source, print_shapes
    setup()                               # seeds, print options, figure style
    show_source(roi_ops.roi_align)        # the code that runs, rendered from inspect.getsource
    print_shapes(C2=c2, C3=c3)            # name, shape, dtype of each tensor

`show_source` is how the notebooks keep "the code read is the code run": they never copy library
code into a cell, they render it from the installed module, so it cannot drift.

Run as a script, this module executes notebooks in place and reports their run times (used by
`make notebooks-run`; the README's run-time table comes from it):

    python -m mrcnn_teach.notebook notebooks/03_anchors.ipynb [...]
    python -m mrcnn_teach.notebook --thumbnails notebooks/thumbnails notebooks/*.ipynb
"""

from __future__ import annotations

import inspect
import random
import textwrap
from pathlib import Path

import numpy as np
import torch

_PACKAGE_ROOT = Path(__file__).resolve().parent


def setup(seed: int = 0) -> None:
    """Seed every generator the notebooks use and set a readable print and figure style."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=120)
    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    import matplotlib

    matplotlib.rcParams.update({
        "figure.dpi": 90, "figure.figsize": (8.0, 4.0), "font.size": 10, "axes.titlesize": 11,
        "axes.titleweight": "bold", "image.interpolation": "nearest",
    })
    try:  # inside Jupyter: plain PNGs, so GitHub and every viewer show the same picture
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            shell.run_line_magic("matplotlib", "inline")
            shell.run_line_magic("config", "InlineBackend.figure_formats = ['png']")
    except ImportError:
        pass


def _relative(path: Path) -> str:
    """A source file's path as the reader would name it: 'mrcnn_teach/roi_ops.py',
    'torchvision/models/resnet.py' -- relative to the package or to its sys.path entry, never a machine path."""
    import sys

    roots = [_PACKAGE_ROOT.parent] + [Path(p).resolve() for p in sys.path if p and Path(p).is_dir()]
    best = None
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if best is None or len(rel.parts) < len(best.parts):
            best = rel  # the deepest root gives the shortest, most familiar name
    return best.as_posix() if best is not None else path.name


def _where(obj) -> str:
    """'mrcnn_teach/roi_ops.py, lines 120-161' -- relative to the package, never a machine path."""
    shown = _relative(Path(inspect.getsourcefile(obj)).resolve())
    lines, first = inspect.getsourcelines(obj)
    return f"{shown}, lines {first}-{first + len(lines) - 1}" if first else shown


def _qualname(obj) -> str:
    if inspect.ismodule(obj):
        return obj.__name__
    return f"{obj.__module__}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}"


class Source:
    """Source code that renders as a highlighted block in Jupyter (markdown) and as text elsewhere."""

    def __init__(self, title: str, where: str, code: str):
        self.title, self.where, self.code = title, where, code

    def _repr_markdown_(self) -> str:
        return f"**`{self.title}`** &nbsp; <small>({self.where})</small>\n\n```python\n{self.code}\n```"

    def __repr__(self) -> str:
        return f"# {self.title} ({self.where})\n{self.code}"


def show_source(*objects, docstring: bool = True) -> Source | list[Source]:
    """The library's own source of each object (function, class, method or module), ready to display.

    docstring=False drops a function's docstring, for when the prose above already says it.
    """
    shown = []
    for obj in objects:
        obj = inspect.unwrap(obj)
        code = textwrap.dedent(inspect.getsource(obj)).rstrip()
        if not docstring and (inspect.isfunction(obj) or inspect.ismethod(obj)) and obj.__doc__:
            code = _drop_docstring(code)
        shown.append(Source(_qualname(obj), _where(obj), code))
    return shown[0] if len(shown) == 1 else _Many(shown)


class _Many(list):
    def _repr_markdown_(self) -> str:
        return "\n\n".join(s._repr_markdown_() for s in self)

    def __repr__(self) -> str:
        return "\n\n".join(repr(s) for s in self)


def _drop_docstring(code: str) -> str:
    import ast

    tree = ast.parse(code)
    node = tree.body[0]
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
        lines = code.splitlines()
        del lines[first.lineno - 1: first.end_lineno]
        return "\n".join(lines)
    return code


def print_shapes(**tensors) -> None:
    """One line per tensor: name, shape, dtype (and for lists of tensors, each element's shape)."""
    width = max((len(k) for k in tensors), default=0)
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor):
            print(f"{name:<{width}}  {str(tuple(t.shape)):<22} {str(t.dtype).removeprefix('torch.')}")
        elif isinstance(t, (list, tuple)) and all(isinstance(x, torch.Tensor) for x in t):
            print(f"{name:<{width}}  " + ", ".join(str(tuple(x.shape)) for x in t))
        else:
            print(f"{name:<{width}}  {t!r}")


def largest_tensor(fn, *args, **kwargs):
    """Run fn(*args, **kwargs) and measure the largest tensor any operation in it allocated.

    -> (fn's result, the shape of that tensor, its bytes). A view (indexing, expand) counts the memory
    it shares, not the elements it shows, so only what was really built counts.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Largest(TorchDispatchMode):
        shape, nbytes = (), 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() > self.nbytes:
                    self.shape, self.nbytes = tuple(t.shape), t.untyped_storage().nbytes()
            return out

    with Largest() as seen:
        result = fn(*args, **kwargs)
    return result, seen.shape, seen.nbytes


def run_command(*args, hide=None, echo: bool = True):
    """Run `python -m mrcnn_teach ARGS...` in a fresh process, as typed in a terminal; -> CompletedProcess.

    Prints the command line, then what it printed (stdout, then stderr if any) and its exit status
    when it is not 0. `hide` maps paths to the short names shown instead ({tmp_dir: "<tmp>"}), so no
    machine path is printed or saved with the notebook.
    """
    import os
    import subprocess
    import sys

    args = [str(a) for a in args]
    replace = sorted(((str(k), v) for k, v in (hide or {}).items()), key=lambda kv: -len(kv[0]))  # longest first

    def short(text: str) -> str:
        for path, name in replace:
            text = text.replace(path, name)
        return text.strip()

    # The notebook's inline plotting backend must not leak into the child process: plain Agg there.
    result = subprocess.run([sys.executable, "-m", "mrcnn_teach", *args], capture_output=True, text=True,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    if echo:
        print("$ python -m mrcnn_teach", short(" ".join(args)))
        if result.stdout.strip():
            print(short(result.stdout))
        if result.stderr.strip():
            print("[stderr]", short(result.stderr))
        if result.returncode:
            print(f"[exit status {result.returncode}]")
    return result


# --------------------------------------------------------------------------- executing notebooks

def execute_notebook(path: str | Path, timeout: int = 600) -> float:
    """Run a notebook top to bottom in a fresh kernel (cwd = its folder), save it in place; -> seconds."""
    import time

    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:  # execution timestamps would make every run a diff
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return seconds


def save_thumbnail(path: str | Path, out_dir: str | Path, width: int = 280) -> Path | None:
    """The notebook's picture for the README table, shrunk to `width` px: out_dir/<notebook>.png.

    The picture is the first image output of the cell whose source holds "# README thumbnail", or
    else the notebook's first image output.
    """
    import base64
    import io

    import nbformat
    from PIL import Image

    nb = nbformat.read(Path(path), as_version=4)
    images = [(("# README thumbnail" in cell.source), out["data"]["image/png"])
              for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    if not images:
        return None
    chosen = next((png for marked, png in images if marked), images[0][1])
    image = Image.open(io.BytesIO(base64.b64decode(chosen))).convert("RGB")
    image = image.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS)
    out = Path(out_dir) / f"{Path(path).stem}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import platform

    parser = argparse.ArgumentParser(description="Execute notebooks in place and print their run times.")
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds")
    parser.add_argument("--thumbnails", metavar="DIR", help="only write each notebook's README thumbnail into DIR")
    args = parser.parse_args(argv)
    import os

    if args.thumbnails:
        for nb in args.notebooks:
            print(save_thumbnail(nb, args.thumbnails))
        return 0

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    for nb in args.notebooks:
        seconds = execute_notebook(nb, args.timeout)
        print(f"{Path(nb).name}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
