"""mrcnn_teach.notebook: the source shown is the code that runs, with no machine paths; shape tables; thumbnails."""

import base64
import io

import matplotlib
import nbformat
import torch

matplotlib.use("Agg")

from mrcnn_teach import notebook, roi_ops  # noqa: E402
from mrcnn_teach.fpn import FPN  # noqa: E402


def test_show_source_is_the_live_source_with_a_relative_location():
    shown = notebook.show_source(roi_ops.roi_align)
    import inspect

    assert shown.code == inspect.getsource(roi_ops.roi_align).rstrip()
    assert shown.title == "mrcnn_teach.roi_ops.roi_align"
    assert shown.where.startswith("mrcnn_teach/roi_ops.py, lines ")
    first, last = map(int, shown.where.split("lines ")[1].split("-"))
    assert last - first + 1 == len(shown.code.splitlines())
    md = shown._repr_markdown_()
    assert "```python\ndef roi_align(" in md and "/" + "work" not in md and "site-packages" not in md


def test_show_source_of_a_method_is_dedented_and_can_drop_the_docstring():
    with_doc = notebook.show_source(FPN.forward)
    without = notebook.show_source(FPN.forward, docstring=False)
    assert with_doc.code.startswith("def forward(")
    assert FPN.forward.__doc__ is None or '"""' not in without.code
    many = notebook.show_source(FPN.forward, roi_ops.roi_pool)
    assert len(many) == 2 and "def roi_pool(" in many._repr_markdown_()


def test_print_shapes(capsys):
    notebook.print_shapes(P2=torch.zeros(1, 64, 32, 32), levels=[torch.zeros(2, 4), torch.zeros(3)], k=3)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["P2", "(1,", "64,", "32,", "32)", "float32"]
    assert out[1].split(maxsplit=1) == ["levels", "(2, 4), (3,)"]
    assert out[2].split() == ["k", "3"]


def test_setup_is_deterministic():
    notebook.setup(3)
    a = torch.rand(3)
    notebook.setup(3)
    assert torch.equal(a, torch.rand(3))


def _png(color, size=(40, 20)):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_thumbnail_prefers_the_marked_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    for source, color in [("plot_a()", "red"), ("# README thumbnail\nplot_b()", "blue")]:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": _png(color)})]
        nb.cells.append(cell)
    path = tmp_path / "07_demo.ipynb"
    nbformat.write(nb, path)
    out = notebook.save_thumbnail(path, tmp_path / "thumbs", width=100)
    from PIL import Image

    image = Image.open(out)
    assert out.name == "07_demo.png" and image.size == (100, 50)
    assert image.getpixel((50, 25)) == (0, 0, 255)


def test_show_source_of_torchvision_code_names_the_package_path():
    from torchvision.models.resnet import BasicBlock

    shown = notebook.show_source(BasicBlock)
    assert shown.where.startswith("torchvision/models/resnet.py, lines "), shown.where


def test_run_command_prints_the_command_its_output_and_a_failure_without_machine_paths(tmp_path, capsys):
    missing = tmp_path / "nothing.png"
    result = notebook.run_command("predict", "--checkpoint", tmp_path / "ckpt.pt", missing, "--out", tmp_path / "preds",
                                  hide={f"{tmp_path}/": "<tmp>/"})
    out = capsys.readouterr().out
    assert result.returncode == 2  # the CLI's exit status for bad input
    assert out.splitlines()[0] == "$ python -m mrcnn_teach predict --checkpoint <tmp>/ckpt.pt <tmp>/nothing.png --out <tmp>/preds"
    assert "[stderr] error: image not found: <tmp>/nothing.png" in out and "[exit status 2]" in out
    assert str(tmp_path) not in out


def test_largest_tensor_measures_what_was_built_not_what_a_view_shows():
    x = torch.zeros(10, 8)  # built outside: not counted

    def build():
        wide = torch.ones(4, 1, 5).expand(4, 100, 5)  # a view: 20 floats of memory, 2000 shown
        return (x @ torch.ones(8, 30)).sum() + wide.sum()  # (10, 30) is the largest built

    result, shape, nbytes = notebook.largest_tensor(build)
    assert float(result) == 2000.0
    assert shape == (10, 30) and nbytes == 10 * 30 * 4
