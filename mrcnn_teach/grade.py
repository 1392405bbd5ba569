"""Grade notebooks without nbgrader: run each in a fresh kernel, score every exercise.

    python -m mrcnn_teach.grade my_copy_of_05_roi_align.ipynb [...] [--json grade.json]

For each notebook: executes it top to bottom in a fresh kernel (errors allowed, so a cell that
raises half-way does not stop the exercises after it), then prints one row per exercise: passed,
failed (with the check's message) or not attempted, its points, the total, and every cell that
raised (with its index). The same goes to a JSON file (--json, default grade.json in the current
folder). Exit status: 0 if every exercise of every notebook passed and no cell raised, 1 if not,
2 if a notebook could not be graded (not found, not a notebook, no check cells).

The exercises are found as the nbgrader course finds them (mrcnn_teach.exercise_cells), and scored
as nbgrader's autograde scores them: each check cell runs with its hidden test appended (where its
check has one) and the grading switch on (MRCNN_TEACH_GRADING=1, so a check that is not passed
raises); a check cell scores its points if it raises nothing and writes nothing to stderr, else 0.
Unlike autograde, the student's other cells run as the student left them (autograde first restores
the read-only cells from the instructor's copy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .exercise_cells import ConventionError, find_exercises, points_of, source_of, test_source

PASSED, FAILED, NOT_ATTEMPTED, NOT_RUN = "passed", "failed", "not attempted", "not run"


def _error_of(cell) -> dict | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return {"ename": out.get("ename", ""), "evalue": out.get("evalue", "")}
    return None


def _stderr_of(cell) -> str:
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stderr")


def _stdout_last_line(cell) -> str:
    text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout").strip()
    return text.split("\n")[-1] if text else ""


def grade_notebook(path: Path, timeout: int = 900, kernel_name: str = "python3") -> dict:
    """Execute one notebook and score it: a dict as written to the JSON file (see main's docstring)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    exercises = find_exercises(nb, path.name, submitted=True)
    if not exercises:
        raise ConventionError(path.name, None, "no check cells found (a cell that calls a check imported from "
                                               "mrcnn_teach.exercises): nothing to grade")
    for ex in exercises:  # as autograde runs them: with the hidden test, if the check has one
        cell = nb.cells[ex.check_cell]
        cell.source = test_source(ex, source_of(cell))
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(path.parent.resolve())}})
    died = None
    start = time.perf_counter()
    old = os.environ.get("MRCNN_TEACH_GRADING")
    os.environ["MRCNN_TEACH_GRADING"] = "1"  # the kernel inherits it: checks raise when not passed
    try:
        client.execute()
    except DeadKernelError as err:  # a crash (out of memory, say): grade what ran
        died = str(err)
    finally:
        if old is None:
            os.environ.pop("MRCNN_TEACH_GRADING", None)
        else:
            os.environ["MRCNN_TEACH_GRADING"] = old
    seconds = time.perf_counter() - start

    rows = []
    for ex in exercises:
        cell = nb.cells[ex.check_cell]
        points = points_of(ex)
        error, stderr = _error_of(cell), _stderr_of(cell)
        ran = cell.get("execution_count") is not None
        if not ran:
            status, message = NOT_RUN, "the kernel stopped before this check ran"
        elif error and error["ename"] == "ExerciseNotAttempted":
            status, message = NOT_ATTEMPTED, error["evalue"]
        elif error:
            status, message = FAILED, (error["evalue"] if error["ename"] == "ExerciseFailed"
                                       else f"the check cell raised {error['ename']}: {error['evalue']}")
        elif stderr:
            status, message = FAILED, f"the check cell wrote to stderr (a grader scores that 0): {stderr.strip()[:300]}"
        else:
            status, message = PASSED, _stdout_last_line(cell)
        rows.append({"exercise": ex.number, "title": ex.title, "check": ex.check, "cell": ex.check_cell,
                     "status": status, "points": points if status == PASSED else 0, "max_points": points,
                     "message": message})
    check_cells = {ex.check_cell for ex in exercises}
    errors = [{"cell": i, **err} for i, c in enumerate(nb.cells)
              if c.cell_type == "code" and i not in check_cells and (err := _error_of(c))]
    if died:
        errors.append({"cell": None, "ename": "DeadKernelError", "evalue": died})
    return {"notebook": str(path), "exercises": rows, "points": sum(r["points"] for r in rows),
            "max_points": sum(r["max_points"] for r in rows), "errors": errors, "seconds": round(seconds, 1)}


def _print(report: dict) -> None:
    print(f"{report['notebook']}  ({report['seconds']:.0f} s)")
    width = max(len(r["title"]) for r in report["exercises"])
    for r in report["exercises"]:
        mark = {PASSED: "v", FAILED: "x", NOT_ATTEMPTED: " ", NOT_RUN: "-"}[r["status"]]
        detail = f"  {r['message'].removeprefix('[x] ')}" if r["status"] in (FAILED, NOT_RUN) else ""
        print(f"  [{mark}] {r['exercise']:>2}  {r['title']:<{width}}  {r['points']}/{r['max_points']}  "
              f"{r['status']}{detail}")
    for e in report["errors"]:
        where = f"cell {e['cell']}" if e["cell"] is not None else "the kernel"
        print(f"  error: {where} raised {e['ename']}: {e['evalue']}")
    print(f"  total {report['points']}/{report['max_points']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mrcnn_teach.grade", description=__doc__.split("\n\n")[0],
                                     epilog="Exit status: 0 all passed, 1 not all passed, 2 could not grade.")
    parser.add_argument("notebooks", nargs="+", type=Path, help="the notebooks to grade (.ipynb)")
    parser.add_argument("--json", type=Path, default=Path("grade.json"),
                        help="where to write the scores as JSON (default: grade.json in the current folder)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a cell may run (default 900)")
    parser.add_argument("--kernel", default="python3", help="the Jupyter kernel to run them in (default python3)")
    args = parser.parse_args(argv)
    reports, status = [], 0
    for path in args.notebooks:
        try:
            if not path.is_file():
                raise ConventionError(str(path), None, "no such file")
            report = grade_notebook(path, timeout=args.timeout, kernel_name=args.kernel)
        except (ConventionError, ValueError, OSError) as err:  # nbformat raises ValueError-like errors
            print(f"error: cannot grade {err}", file=sys.stderr)
            reports.append({"notebook": str(path), "error": str(err)})
            status = 2
            continue
        _print(report)
        reports.append(report)
        if report["points"] < report["max_points"] or report["errors"]:
            status = max(status, 1)
    graded = [r for r in reports if "error" not in r]
    summary = {"points": sum(r["points"] for r in graded), "max_points": sum(r["max_points"] for r in graded),
               "all_passed": status == 0, "notebooks": reports}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{summary['points']}/{summary['max_points']} points; written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
