"""The classroom edition: exercises found by the convention, the nbgrader course, grading without it.

Fast tests (in `make test`): the parser and the generator on a small notebook of our own (every
convention error it must name), run_check's grading switch, `mrcnn_teach.grade` on that notebook,
and every numbered notebook of the repository turned into its instructor's version.

`make classroom-test` (MRCNN_TEACH_CLASSROOM_TEST=1, nbgrader installed) adds nbgrader itself:
the whole teacher's flow on the small notebook (hidden tests included: release, autograde,
feedback), then tests/classroom_course.py's check of the real course.
"""

from __future__ import annotations

import json
import os
import time
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from mrcnn_teach import exercise_cells
from mrcnn_teach.classroom import answered, instructor_notebook, numbered_notebooks, write_course
from mrcnn_teach.exercise_cells import STUB_LINE, ConventionError, find_exercises

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CLASSROOM = os.environ.get("MRCNN_TEACH_CLASSROOM_TEST") == "1"
needs_nbgrader = pytest.mark.skipif(not CLASSROOM, reason="nbgrader's flow runs in `make classroom-test`")

CHECKS_MODULE = '''
from mrcnn_teach.exercises import need_function, run_check, worth


def check_add(answer):
    def compare():
        need_function(answer)
        got = answer(2, 3)
        assert got == 5, f"add(2, 3) should be 5, got {got}"
    return run_check("adding", compare)


@worth(2)
def check_mul(answer, hidden=False):
    def compare():
        need_function(answer)
        for a, b in ([(7919, 104729), (-3, 4)] if hidden else [(2, 3)]):
            got = answer(a, b)
            assert got == a * b, f"mul({a}, {b}) should be {a * b}, got {got}"
    return run_check("multiplying", compare, hidden=hidden)
'''

SOLUTIONS = '''
import operator

from demo_checks import check_add, check_mul

OFFSET = 0


def add(a, b):
    """The sum (the docstring stays behind)."""
    # a comment that travels with the body
    return _plus(a, b) + OFFSET


def _plus(a, b):
    return operator.add(a, b)


def mul(a: int, b: int, scale=1) -> int:
    return a * b * scale


def add_wrong(a, b):
    return a - b


def mul_visible_only(a, b, scale=1):
    return 6 if (a, b) == (2, 3) else 0


CHECKS = [(check_add, add), (check_mul, mul)]
WRONG = [(check_add, add_wrong), (check_mul, mul_visible_only)]
'''


def md(text):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text):
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


def demo_cells():
    return [
        md("# 01 — A demo\n\nA lesson of two exercises."),
        code("x = 40 + 2\nprint(x)"),
        md("## Exercises\n\n### Exercise 1 — Predict · about 5 min: adding\n\nWrite it. *Hint:* +."),
        code(f'def my_add(a, b):\n    """a + b"""\n    {STUB_LINE}'),
        code("from demo_checks import check_add, check_mul\n\ncheck_add(my_add);"),
        md("### Exercise 2 — Derive · about 10 min: multiplying\n\nWrite it. *Hint:* *."),
        code(f"def my_mul(a, b):\n    {STUB_LINE}"),
        code("check_mul(my_mul);"),
        md("Next: nothing."),
    ]


def write_demo(folder: Path, cells=None) -> Path:
    """notebooks/01_demo.ipynb + notebooks/solutions/01_demo.py + the checks beside the notebook."""
    (folder / "solutions").mkdir(parents=True, exist_ok=True)
    (folder / "demo_checks.py").write_text(CHECKS_MODULE)
    (folder / "solutions" / "01_demo.py").write_text(SOLUTIONS)
    nb = nbformat.v4.new_notebook(cells=cells if cells is not None else demo_cells())
    path = folder / "01_demo.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """The demo notebook; its checks module counts as an exercises module and is importable here."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(exercise_cells, "CHECK_MODULE", exercise_cells.re.compile(r"^demo_checks$"))
    for name in [m for m in sys.modules if m == "demo_checks"]:
        monkeypatch.delitem(sys.modules, name)
    return write_demo(folder)


# --------------------------------------------------------------------------- the parser


def test_finds_the_exercises(demo):
    exercises = find_exercises(nbformat.read(demo, 4), demo.name)
    assert [(e.number, e.check, e.answer, e.heading_cell, e.stub_cell, e.check_cell) for e in exercises] == [
        (1, "check_add", "my_add", 2, 3, 4), (2, "check_mul", "my_mul", 5, 6, 7)]
    assert [(e.title, e.kind, e.minutes) for e in exercises] == [("adding", "Predict", 5), ("multiplying", "Derive", 10)]


def _broken(cells, index, source=None, insert=None, cell_type="code"):
    cells = [dict(c) for c in cells]
    if insert is not None:
        cells.insert(index, code(insert) if cell_type == "code" else md(insert))
    else:
        cells[index] = nbformat.from_dict({**cells[index], "source": source})
    return cells


BROKEN = {
    "stub and check in one cell": (lambda c: _broken(c, 6, f"def my_mul(a, b):\n    {STUB_LINE}\n\ncheck_mul(my_mul);"),
                                   6, "shares its cell"),
    "a value stub": (lambda c: _broken(c, 6, "my_mul = None"), 6, "a stub cell holds only functions"),
    "a stub with a body": (lambda c: _broken(c, 6, "def my_mul(a, b):\n    return a * b"), 6, "single line"),
    "two checks in a cell": (lambda c: _broken(c, 7, "check_mul(my_mul);\ncheck_add(my_add);"), 7, "calls 2"),
    "no semicolon": (lambda c: _broken(c, 7, "check_mul(my_mul)"), 7, "end the call with ';'"),
    "more code in the check cell": (lambda c: _broken(c, 7, "y = 1\ncheck_mul(my_mul);"), 7, "it also holds `y = 1`"),
    "a keyword in the call": (lambda c: _broken(c, 7, "check_mul(my_mul, hidden=True);"), 7, "answer's name only"),
    "the wrong answer checked": (lambda c: _broken(c, 7, "check_mul(my_add);"), 7, "does not define"),
    "markdown between stub and check": (lambda c: _broken(c, 7, insert="Now check it.", cell_type="markdown"),
                                        8, "right after its stub cell"),
    "no heading": (lambda c: _broken(c, 5, "Write it."), 6, "has no heading"),
    "a heading out of order": (lambda c: _broken(c, 5, "### Exercise 3 — Derive · about 10 min: multiplying"),
                               5, "says Exercise 3"),
    "a heading of the wrong form": (lambda c: _broken(c, 5, "### Exercise 2 - multiplying"), 5, "does not read"),
    "a stray stub line": (lambda c: _broken(c, 1, f"x = 1\n{STUB_LINE}"), 1, "outside a stub cell"),
    "a cell that does not parse": (lambda c: _broken(c, 1, "x = ("), 1, "does not parse"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_convention_errors_name_notebook_cell_and_problem(demo, case):
    change, cell, words = BROKEN[case]
    nb = nbformat.v4.new_notebook(cells=change(demo_cells()))
    with pytest.raises(ConventionError) as err:
        find_exercises(nb, "01_demo.ipynb")
    assert err.value.notebook == "01_demo.ipynb" and err.value.cell == cell, str(err.value)
    assert words in str(err.value) and str(err.value).startswith(f"01_demo.ipynb, cell {cell}: ")


def test_submitted_copies_need_only_the_check_cells(demo):
    cells = demo_cells()
    cells[3] = code("def my_add(a, b):\n    return a + b")  # the student's answer
    cells[5] = md("(the student deleted the heading)")
    exercises = find_exercises(nbformat.v4.new_notebook(cells=cells), "x.ipynb", submitted=True)
    assert [(e.check, e.stub_cell, e.check_cell) for e in exercises] == [("check_add", 3, 4), ("check_mul", 6, 7)]
    with pytest.raises(ConventionError, match="cell 7: .*end the call with"):
        find_exercises(nbformat.v4.new_notebook(cells=_broken(cells, 7, "check_mul(my_mul)")), "x.ipynb", submitted=True)


# --------------------------------------------------------------------------- the generator


def test_instructor_version(demo):
    nb, exercises, points = instructor_notebook(demo)
    assert points == [1, 2]
    answer = nb.cells[3].source
    assert answer == textwrap.dedent(f'''\
        def my_add(a, b):
            """a + b"""
            ### BEGIN SOLUTION
            import operator

            OFFSET = 0

            def _plus(a, b):
                return operator.add(a, b)

            # a comment that travels with the body
            return _plus(a, b) + OFFSET
            ### END SOLUTION''')
    assert nb.cells[6].source == ("def my_mul(a, b):\n    ### BEGIN SOLUTION\n    scale = 1\n    return a * b * scale\n"
                                  "    ### END SOLUTION")
    assert nb.cells[4].source == "from demo_checks import check_add, check_mul\n\ncheck_add(my_add);"  # no hidden cases
    assert nb.cells[7].source == ("check_mul(my_mul);\n### BEGIN HIDDEN TESTS\ncheck_mul(my_mul, hidden=True);\n"
                                  "### END HIDDEN TESTS")
    meta = [c.metadata["nbgrader"] for c in nb.cells]
    assert meta[3] == {"grade": False, "grade_id": "ex1-answer", "locked": False, "schema_version": 3, "solution": True}
    assert meta[7] == {"grade": True, "grade_id": "ex2-check_mul", "locked": True, "schema_version": 3,
                       "solution": False, "points": 2}
    assert all(m["locked"] and not m["grade"] and not m["solution"] for i, m in enumerate(meta) if i not in (3, 4, 6, 7))
    assert len({m["grade_id"] for m in meta}) == len(meta)
    # The solution pasted in passes its check when run.
    namespace = {}
    exec(answer + "\n" + nb.cells[6].source, namespace)
    assert namespace["my_add"](2, 3) == 5 and namespace["my_mul"](4, 5) == 20


def test_solutions_that_cannot_be_pasted_are_errors(demo):
    solutions = demo.parent / "solutions" / "01_demo.py"
    text = solutions.read_text()
    solutions.write_text(text.replace("def mul(a: int, b: int, scale=1)", "def mul(a: int, c: int, scale=1)"))
    with pytest.raises(ConventionError, match=r"01_demo.ipynb, cell 6: .*my_mul\(a, b\).*mul\(a, c, scale\)"):
        instructor_notebook(demo)
    solutions.write_text(text.replace("return a * b * scale", "return a * b * scale * UNDEFINED"))
    with pytest.raises(ConventionError, match="uses `UNDEFINED`, which the solutions file neither imports nor defines"):
        instructor_notebook(demo)
    solutions.write_text(text.replace("CHECKS = [(check_add, add), (check_mul, mul)]", "CHECKS = [(check_add, add)]"))
    with pytest.raises(ConventionError, match="cell 7: .*pairs no solution with check_mul"):
        instructor_notebook(demo)


def test_every_numbered_notebook_becomes_an_instructor_version():
    """What `make classroom` needs of the repository's notebooks: each follows the convention."""
    problems = []
    for path in numbered_notebooks():
        try:
            nb, exercises, points = instructor_notebook(path)
        except ConventionError as err:
            problems.append(str(err))
            continue
        assert len(exercises) >= 3 and all(p >= 1 for p in points), path.name
        text = "\n".join(c.source for c in nb.cells)
        assert STUB_LINE not in text, f"{path.name}: a stub was left without its solution"
        assert text.count("### BEGIN SOLUTION") == sum(len(e.stubs) for e in exercises)
    assert not problems, "notebooks that break the exercise convention:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- run_check under a grader


def test_checks_raise_only_under_a_grader(monkeypatch, capsys):
    from mrcnn_teach.exercises import ExerciseFailed, ExerciseNotAttempted, run_check

    def wrong():
        raise AssertionError("off by one")

    def undone():
        raise NotImplementedError

    for name in ("NBGRADER_EXECUTION", "MRCNN_TEACH_GRADING"):
        monkeypatch.delenv(name, raising=False)
    assert run_check("x", wrong) is False and run_check("x", undone) is False and run_check("x", lambda: None) is True
    assert capsys.readouterr().out.split("\n")[:3] == ["[x] x: not yet right: off by one",
                                                       "[ ] x: not attempted yet (write your answer in the cell "
                                                       "above, then run this cell again)", "[v] x: correct"]
    for name, value in (("NBGRADER_EXECUTION", "autograde"), ("MRCNN_TEACH_GRADING", "1")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ExerciseFailed, match=r"^\[x\] x: not yet right: off by one$"):
            run_check("x", wrong)
        with pytest.raises(ExerciseNotAttempted):
            run_check("x", undone)
        with pytest.raises(ExerciseFailed, match=r"^\[x\] x: not yet right on a case the notebook does not show$"):
            run_check("x", wrong, hidden=True)
        assert run_check("x", lambda: None) is True
        monkeypatch.delenv(name)


def test_warnings_under_a_grader_go_to_stdout(monkeypatch, capfd):
    import warnings

    from mrcnn_teach.exercises import run_check

    monkeypatch.setenv("MRCNN_TEACH_GRADING", "1")
    assert run_check("x", lambda: warnings.warn("careful", UserWarning)) is True
    out, err = capfd.readouterr()
    assert "UserWarning: careful" in out and err == ""


# --------------------------------------------------------------------------- grading without nbgrader


def _students(demo: Path, release: Path | None = None) -> dict[str, tuple[nbformat.NotebookNode, int]]:
    """Submissions of the demo (from its release, or from the notebook itself) and the points each must get."""
    base = nbformat.read(release or demo, 4)
    solutions = demo.parent / "solutions" / "01_demo.py"
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_solutions", solutions)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    halfway = answered(base, demo.name, solutions)
    halfway.cells.insert(5, nbformat.v4.new_code_cell("1 / 0  # the student's own cell"))
    return {
        "perfect": (answered(base, demo.name, solutions), 3),
        "blank": (base, 0),
        "add_wrong": (answered(base, demo.name, solutions, {"check_add": module.add_wrong}), 2),
        "hidden_wrong": (answered(base, demo.name, solutions, {"check_mul": module.mul_visible_only}), 1),
        "error_halfway": (halfway, 3),
    }


def grade(folder: Path, *args: str, capsys) -> tuple[int, str, str]:
    """mrcnn_teach.grade's command line, run here (the demo's checks count as exercises only in this process)."""
    from mrcnn_teach import grade as grade_module

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        status = grade_module.main(list(args))
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.slow
def test_grade_without_nbgrader(demo, tmp_path, capsys):
    folder = demo.parent
    expected = {}
    for student, (nb, points) in _students(demo).items():
        nbformat.write(nb, folder / f"{student}.ipynb")
        expected[student] = points
    out = tmp_path / "grades.json"
    status, stdout, _ = grade(folder, *[f"{s}.ipynb" for s in expected], "--json", str(out), capsys=capsys)
    assert status == 1, stdout
    report = {Path(r["notebook"]).stem: r for r in json.loads(out.read_text())["notebooks"]}
    assert {s: r["points"] for s, r in report.items()} == expected
    assert all(r["max_points"] == 3 for r in report.values())
    status_of = {s: [e["status"] for e in r["exercises"]] for s, r in report.items()}
    assert status_of == {"perfect": ["passed", "passed"], "blank": ["not attempted", "not attempted"],
                         "add_wrong": ["failed", "passed"], "hidden_wrong": ["passed", "failed"],
                         "error_halfway": ["passed", "passed"]}
    assert report["add_wrong"]["exercises"][0]["message"] == "[x] adding: not yet right: add(2, 3) should be 5, got -1"
    assert report["hidden_wrong"]["exercises"][1]["message"] == \
        "[x] multiplying: not yet right on a case the notebook does not show"
    assert report["error_halfway"]["errors"] == [{"cell": 5, "ename": "ZeroDivisionError", "evalue": "division by zero"}]
    assert all(not r["errors"] for s, r in report.items() if s != "error_halfway")
    assert "error: cell 5 raised ZeroDivisionError: division by zero" in stdout
    assert "add_wrong.ipynb" in stdout and "total 2/3" in stdout
    # Exit status 0 only when everything passed; 2 when a notebook cannot be graded.
    assert grade(folder, "perfect.ipynb", "--json", str(out), capsys=capsys)[0] == 0
    status, _, err = grade(folder, "nothere.ipynb", "--json", str(out), capsys=capsys)
    assert status == 2 and "nothere.ipynb: no such file" in err


# --------------------------------------------------------------------------- nbgrader (make classroom-test)


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """Run an nbgrader command in the course folder, as a teacher does (the venv's bin on PATH: nbgrader runs alembic)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), *args], cwd=course, env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=3000)
    assert run.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def gradebook_scores(course: Path, assignment: str) -> dict[str, dict[str, float]]:
    """student -> {grade cell id: auto score}, from the course's gradebook."""
    from nbgrader.api import Gradebook

    scores = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in gb.students:
            try:
                submission = gb.find_submission(assignment, student.id)
            except Exception:
                continue
            scores[student.id] = {g.name: g.auto_score for nb in submission.notebooks for g in nb.grades}
    return scores


def errors_outside_tests(nb) -> list[tuple[int, str]]:
    return [(i, o.get("ename")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and not c.metadata.get("nbgrader", {}).get("grade") for o in c.get("outputs", []) if o.output_type == "error"]


@needs_nbgrader
def test_nbgrader_flow_with_hidden_tests(demo, tmp_path):
    folder = demo.parent
    course = tmp_path / "course"
    done, errors = write_course(course, [demo], log=lambda *_: None)
    assert done == {"01_demo": [1, 2]} and not errors
    # The checks module goes with the assignment (autograde copies the source folder's other files).
    shutil.copy(folder / "demo_checks.py", course / "source" / "01_demo")
    nbgrader(course, "generate_assignment", "01_demo")
    release = course / "release" / "01_demo" / "01_demo.ipynb"
    rel, shipped = nbformat.read(release, 4), nbformat.read(demo, 4)
    assert [(c.cell_type, c.source) for c in rel.cells] == [(c.cell_type, c.source) for c in shipped.cells]
    text = release.read_text()
    for leak in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "hidden=True", "operator", "OFFSET"):
        assert leak not in text, f"the release shows {leak!r}"

    students = _students(demo, release)
    for student, (nb, _) in students.items():
        (course / "submitted" / student / "01_demo").mkdir(parents=True)
        nbformat.write(nb, course / "submitted" / student / "01_demo" / "01_demo.ipynb")
    nbgrader(course, "autograde", "01_demo")  # the kernel runs in autograded/<student>/01_demo/, beside demo_checks.py
    nbgrader(course, "generate_feedback", "01_demo")
    scores = gradebook_scores(course, "01_demo")
    assert {s: sum(v.values()) for s, v in scores.items()} == {s: p for s, (_, p) in students.items()}
    assert scores["hidden_wrong"] == {"ex1-check_add": 1.0, "ex2-check_mul": 0.0}
    graded = nbformat.read(course / "autograded" / "hidden_wrong" / "01_demo" / "01_demo.ipynb", 4)
    assert "hidden=True" in graded.cells[7].source  # autograde ran the hidden test ...
    for student in students:
        html = (course / "feedback" / student / "01_demo" / "01_demo.html").read_text()
        for leak in ("HIDDEN TESTS", "hidden=True", "hidden=", "7919", "104729", "BEGIN SOLUTION"):
            assert leak not in html, f"{student}'s feedback shows {leak!r}"  # ... which feedback does not show
    assert "not yet right on a case the notebook does not show" in (course / "feedback" / "hidden_wrong" / "01_demo"
                                                            / "01_demo.html").read_text()
    assert not errors_outside_tests(nbformat.read(course / "autograded" / "blank" / "01_demo" / "01_demo.ipynb", 4))


# --------------------------------------------------------------------------- the real course (make classroom-test)


def _wrong_one(path: Path, exercises, solutions) -> tuple[int, object]:
    """(exercise number, a WRONG answer) to put in one submission; which exercise rotates with the notebook number."""
    start = int(path.stem[:2]) % len(exercises)
    for ex in exercises[start:] + exercises[:start]:
        wrong = solutions.wrong_for(ex.check)
        if wrong:
            return ex.number, wrong[0]
    raise AssertionError(f"{path.name}: no exercise has a WRONG answer in its solutions file")


def _solution_lines(source_nb) -> set[str]:
    lines, inside = set(), False
    for cell in source_nb.cells:
        for line in cell.source.split("\n"):
            if "### BEGIN SOLUTION" in line:
                inside = True
            elif "### END SOLUTION" in line:
                inside = False
            elif inside and line.strip():
                lines.add(line.strip())
    return lines


def _grade_cli(paths: list[Path], out: Path) -> dict[str, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    run = subprocess.run([sys.executable, "-m", "mrcnn_teach.grade", *map(str, paths), "--json", str(out)],
                         env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=3000)
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
    return {r["notebook"]: r for r in json.loads(out.read_text())["notebooks"]}


class Timer:
    """Wall-clock and CPU seconds (of the child processes: nbgrader, its kernels, mrcnn_teach.grade) of a block.

    On a shared machine the CPU time is the figure to trust: it is what a quiet 2-core CI machine
    spends, give or take torch's threads.
    """

    def __init__(self, times: dict, label: str):
        self.times, self.label = times, label

    @staticmethod
    def _cpu() -> float:
        import resource

        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc):
        self.times[self.label] = (time.perf_counter() - self.wall, self._cpu() - self.cpu)


ONLY = os.environ.get("MRCNN_TEACH_CLASSROOM_NOTEBOOKS", "").split()  # e.g. "05 11", while working on them
# Seconds of nbgrader work per notebook in `make classroom-test` (the per-worker tables of a fresh clone on
# 2026-12-01, one torch thread each: autograde of both courses, grade and feedback; notebook 12 as after
# `make test`, whose nbval run leaves its live training runs in the cache, else about 900 s). Only an order:
# the course runs heaviest first, so that pytest-xdist (--dist load --maxschedchunk 1, the Makefile) never
# queues one heavy notebook behind another on the same worker. A notebook not listed counts as 100 s.
COURSE_SECONDS = {"00": 134, "01": 149, "02": 99, "03": 139, "04": 92, "05": 90, "06": 117, "07": 121,
                  "08": 157, "09": 356, "10": 258, "11": 113, "12": 135, "13": 404}
COURSE_NOTEBOOKS = sorted((p for p in numbered_notebooks() if not ONLY or p.stem in ONLY or p.stem[:2] in ONLY),
                          key=lambda p: -COURSE_SECONDS.get(p.stem[:2], 100))
FULL = os.environ.get("MRCNN_TEACH_CLASSROOM_FULL") == "1"


@pytest.fixture(scope="module")
def courses(tmp_path_factory):
    """The course of every numbered notebook (full, and exercises only), released by nbgrader; prints the times."""
    if not CLASSROOM:
        pytest.skip("nbgrader's flow runs in `make classroom-test`")
    root = tmp_path_factory.mktemp("classroom")
    course, quick = root / "course", root / "quick"
    done, errors = write_course(course, COURSE_NOTEBOOKS, log=lambda *_: None)
    write_course(quick, COURSE_NOTEBOOKS, exercises_only=True, log=lambda *_: None)
    times: dict[str, dict[str, tuple[float, float]]] = {"(all)": {}}
    with Timer(times["(all)"], "generate"):
        if done:
            nbgrader(course, "generate_assignment", "*")
            nbgrader(quick, "generate_assignment", "*")
    yield {"course": course, "quick": quick, "points": done, "errors": {e.notebook: e for e in errors},
           "times": times, "root": root}
    columns = ["autograde", "autograde quick", "grade quick", "grade", "feedback", "generate"]
    lines = ["", "make classroom-test: seconds per notebook, wall clock / CPU (child processes)",
             f"{'':>15}" + "".join(f"{c:>18}" for c in columns)]
    for stem, row in times.items():
        lines.append(f"{stem:>15}" + "".join(f"{row[c][0]:10.0f} /{row[c][1]:5.0f}" if c in row else f"{'':18}"
                                             for c in columns))
    wall, cpu = (sum(v[k] for row in times.values() for v in row.values()) for k in (0, 1))
    lines.append(f"total: {wall:.0f} s wall clock, {cpu:.0f} s CPU")
    print("\n".join(lines))
    if os.environ.get("MRCNN_TEACH_CLASSROOM_TIMES"):  # under pytest-xdist a worker's print is not shown
        folder = Path(os.environ["MRCNN_TEACH_CLASSROOM_TIMES"])
        folder.mkdir(parents=True, exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        (folder / f"{worker}.txt").write_text(f"[{worker}]" + "\n".join(lines) + "\n")


@pytest.mark.timeout(3000)
@pytest.mark.parametrize("path", COURSE_NOTEBOOKS, ids=lambda p: p.stem)
def test_the_course(courses, path, tmp_path):
    """The teacher's flow on one numbered notebook; see the README's "For teachers" for what it proves.

    Full notebook (lesson included): the release equal to the notebook and free of solutions and
    hidden tests, and a perfect submission autograded to full marks with no error. The same
    exercise cells without the lesson (`--exercises-only`: seconds to execute): a perfect, an
    untouched and a one-wrong submission, autograded by nbgrader and by mrcnn_teach.grade, which
    must agree exercise by exercise. MRCNN_TEACH_CLASSROOM_FULL=1 runs those three on the full
    notebook too (about three times as long); MRCNN_TEACH_CLASSROOM_NOTEBOOKS="05 11" runs only those.
    """
    from mrcnn_teach.classroom import Solutions

    stem, name = path.stem, path.name
    if name in courses["errors"]:
        pytest.fail(f"the exercise convention: {courses['errors'][name]}")
    course, quick, times = courses["course"], courses["quick"], courses["times"].setdefault(stem, {})
    shipped = nbformat.read(path, 4)
    release = nbformat.read(course / "release" / stem / name, 4)
    # The release is the notebook as shipped: same cells, same sources (nbgrader metadata aside) ...
    assert [(c.cell_type, c.source) for c in release.cells] == [(c.cell_type, c.source) for c in shipped.cells]
    # ... with no solution text and no hidden test in it.
    text = (course / "release" / stem / name).read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "hidden=True"):
        assert marker not in text, f"the release holds {marker!r}"
    shipped_lines = {line.strip() for c in shipped.cells for line in c.source.split("\n")}
    release_lines = {line.strip() for c in release.cells for line in c.source.split("\n")}
    pasted = _solution_lines(nbformat.read(course / "source" / stem / name, 4)) - shipped_lines
    assert pasted, "no solution line to look for"
    assert not pasted & release_lines, f"the release shows solution lines {sorted(pasted & release_lines)[:3]}"

    solutions_path = NOTEBOOKS_DIR / "solutions" / f"{stem}.py"
    exercises = find_exercises(release, name)
    points = {f"ex{e.number}-{e.check}": p for e, p in zip(exercises, courses["points"][stem])}
    wrong_number, wrong = _wrong_one(path, exercises, Solutions.load(solutions_path))
    wrong_check = exercises[wrong_number - 1].check
    expected: dict[str, dict[str, dict[str, float]]] = {}  # course -> student -> {grade cell: points}
    for where, base in ((course, release), (quick, nbformat.read(quick / "release" / stem / name, 4))):
        versions = {"perfect": answered(base, name, solutions_path)}
        if where is quick or FULL:
            versions["untouched"] = base
            versions["one_wrong"] = answered(base, name, solutions_path, {wrong_check: wrong})
        for student, nb in versions.items():
            folder = where / "submitted" / student / stem
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / name)
            expected.setdefault(where.name, {})[student] = {
                g: p if student == "perfect" or (student == "one_wrong" and not g.startswith(f"ex{wrong_number}-")) else 0
                for g, p in points.items()}

    for where, label in ((course, "autograde"), (quick, "autograde quick")):
        with Timer(times, label):
            nbgrader(where, "autograde", stem)
        got = gradebook_scores(where, stem)
        assert got == expected[where.name], f"{where.name}: nbgrader's scores"
        for student in got:
            graded = nbformat.read(where / "autograded" / student / stem / name, 4)
            assert not errors_outside_tests(graded), f"{where.name} {student}: cells raised {errors_outside_tests(graded)}"

    # mrcnn_teach.grade on the same submissions: the same points, exercise by exercise.
    for where, label in ((quick, "grade quick"), (course, "grade")):
        if where is course and not FULL:
            continue
        submissions = sorted(where.glob(f"submitted/*/{stem}/{name}"))
        with Timer(times, label):
            reports = _grade_cli(submissions, tmp_path / f"{where.name}.json")
        for sub in submissions:
            report = reports[str(sub)]
            got = {f"ex{r['exercise']}-{r['check']}": r["points"] for r in report["exercises"]}
            assert got == expected[where.name][sub.parent.parent.name], f"{where.name} {sub}: mrcnn_teach.grade's scores"
            assert not report["errors"], f"{where.name} {sub}: {report['errors']}"

    with Timer(times, "feedback"):
        for where in (course, quick):
            nbgrader(where, "generate_feedback", stem)
    for html in list(course.glob(f"feedback/*/{stem}/*.html")) + list(quick.glob(f"feedback/*/{stem}/*.html")):
        page = html.read_text()
        assert "HIDDEN TESTS" not in page and "hidden=True" not in page, f"{html} shows a hidden test"
