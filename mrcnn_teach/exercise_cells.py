"""Find a notebook's exercises by the convention of notebooks/solutions/README.md.

One parser for everything that needs the exercises: the nbgrader course (`mrcnn_teach.classroom`)
and the grader without nbgrader (`mrcnn_teach.grade`). An exercise is

    a heading   markdown, `### Exercise N — Kind · about M min: what` (or the older bold
                `**Exercise N ...**` / `**N. ...**` paragraph)
    a stub cell code, only functions whose body is `raise NotImplementedError  # your code here`
    a check cell the next cell: `from mrcnn_teach.exercises.nbNN import check_x` (optional) and
                one call `check_x(my_answer);`

    exercises = find_exercises(nbformat.read(path, 4), path.name)           # a notebook as shipped
    exercises = find_exercises(nb, path.name, submitted=True)                # a student's copy

A notebook that breaks the convention raises ConventionError, naming the notebook, the cell and
what is wrong. In a submitted notebook the stubs hold the student's code, so only the check cells
(and the headings, where present) are required.

What a grader runs of an exercise is here too, so that nbgrader and mrcnn_teach.grade run the same:
`test_source` (the check cell plus its hidden test, where the check takes `hidden`) and `points_of`
(the check's @worth points, else 1).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from dataclasses import dataclass, field

STUB_LINE = "raise NotImplementedError  # your code here"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
KINDS = ("Predict", "Derive", "Design", "Debug")
CHECK_MODULE = re.compile(r"^mrcnn_teach\.exercises(\.nb\d\d)?$")

_HEADING = re.compile(r"^###\s+Exercise\s+(\d+)\b(.*)$")
_HEADING_FULL = re.compile(r"^###\s+Exercise\s+(\d+)\s+—\s+(\w+)\s+·\s+about\s+(\d+)\s+min:\s*(\S.*)$")
_LEGACY = re.compile(r"^\*\*(?:Exercise\s+)?(\d+)(?:\s*[.:—-])?\s*(.*?)\*\*")


class ConventionError(ValueError):
    """A notebook, or one of its cells, breaks the exercise convention."""

    def __init__(self, notebook: str, cell: int | None, problem: str):
        self.notebook, self.cell, self.problem = notebook, cell, problem
        where = f"{notebook}, cell {cell}" if cell is not None else notebook
        super().__init__(f"{where}: {problem}")


@dataclass
class Exercise:
    """One exercise of a notebook; cell indices count every cell (markdown too) from 0."""

    number: int  # 1, 2, ... in notebook order
    title: str
    check: str  # the check function's name, e.g. "check_snap"
    module: str  # where the notebook imports it from, e.g. "mrcnn_teach.exercises.nb05"
    answer: str  # the name the check cell passes, e.g. "my_snap"
    check_cell: int
    stub_cell: int | None  # the cell above the check cell (the student's answer)
    heading_cell: int | None = None
    kind: str | None = None  # Predict / Derive / Design / Debug (the new heading only)
    minutes: int | None = None
    stubs: list[str] = field(default_factory=list)  # the stub functions of the stub cell (shipped notebooks)
    call: str = ""  # the check call as the cell writes it, e.g. "check_snap(my_snap);"
    notebook: str = ""  # the notebook's name, for messages

    @property
    def grade_id(self) -> str:
        return f"exercise{self.number}"


def source_of(cell) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _imports(notebook: str, cells) -> dict[str, str]:
    """check name -> module, from every `from mrcnn_teach.exercises[.nbNN] import check_...` of the notebook."""
    found: dict[str, str] = {}
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        tree = _parse(notebook, i, source_of(cell), required=False)
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.ImportFrom) and node.module and CHECK_MODULE.match(node.module):
                for alias in node.names:
                    if alias.name.startswith("check_"):
                        if alias.asname and alias.asname != alias.name:
                            raise ConventionError(notebook, i, f"import {alias.name} under its own name, not as {alias.asname}")
                        found[alias.name] = node.module
    return found


def _parse(notebook: str, index: int, source: str, required: bool = True) -> ast.Module | None:
    """The cell's Python (IPython magics and shell lines blanked out); None if it does not parse and not required."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n")]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError as err:
        if required:
            raise ConventionError(notebook, index, f"does not parse as Python: {err.msg} (line {err.lineno})") from None
        return None


def _calls_of(tree: ast.Module, checks: set[str]) -> list[ast.Call]:
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in checks]


def _check_call(notebook: str, index: int, source: str, tree: ast.Module, checks: dict[str, str]):
    """(check name, answer name, call text) of a check cell, or ConventionError saying what is wrong."""
    calls = _calls_of(tree, set(checks))
    if len(calls) != 1:
        names = ", ".join(c.func.id for c in calls)
        raise ConventionError(notebook, index, f"a check cell calls one check; this one calls {len(calls)} ({names}): "
                                               "give each exercise its own stub cell and check cell")
    call = calls[0]
    name = call.func.id
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module and CHECK_MODULE.match(stmt.module):
            continue
        if isinstance(stmt, ast.Expr) and stmt.value is call:
            continue
        if (isinstance(stmt, ast.Assign) and stmt.value is call and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == "_"):
            continue
        what = ast.get_source_segment(source, stmt) or type(stmt).__name__
        first = what.split("\n")[0]
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) or STUB_LINE in what:
            raise ConventionError(notebook, index, f"the check {name}(...) shares its cell with `{first}`: the stub "
                                                   "goes in a cell of its own, the check cell right after it")
        raise ConventionError(notebook, index, f"a check cell holds only the check's import and the call {name}(...); "
                                               f"it also holds `{first}`")
    if len(call.args) != 1 or call.keywords or not isinstance(call.args[0], ast.Name):
        raise ConventionError(notebook, index, f"call the check with the answer's name only, "
                                               f"`{name}(my_answer);`, not `{ast.get_source_segment(source, call)}`")
    text = source.split("\n")[call.end_lineno - 1]
    bare = any(isinstance(stmt, ast.Expr) and stmt.value is call for stmt in tree.body)
    if bare and not text[call.end_col_offset:].lstrip().startswith(";"):
        raise ConventionError(notebook, index, f"end the call with ';' ({name}(...);): a grader reads a cell's "
                                               "printed value True/False as a score")
    segment = "\n".join(source.split("\n")[call.lineno - 1: call.end_lineno]).strip()
    return name, call.args[0].id, segment


def _stub_functions(notebook: str, index: int, source: str, tree: ast.Module) -> list[str]:
    """The names of a stub cell's functions, or ConventionError if the cell holds anything else."""
    names = []
    lines = source.split("\n")
    for stmt in tree.body:
        if not isinstance(stmt, ast.FunctionDef):
            what = (ast.get_source_segment(source, stmt) or "").split("\n")[0]
            raise ConventionError(notebook, index, f"a stub cell holds only functions whose body is `{STUB_LINE}`; "
                                                   f"it also holds `{what}` (a value to predict is asked for as a "
                                                   "function that returns it)")
        body = stmt.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]  # the docstring
        ok = (len(body) == 1 and isinstance(body[0], ast.Raise) and body[0].lineno == body[0].end_lineno
              and lines[body[0].lineno - 1].strip() == STUB_LINE)
        if not ok:
            raise ConventionError(notebook, index, f"the stub {stmt.name}() must have the single line `{STUB_LINE}` "
                                                   "as its body (after an optional docstring)")
        names.append(stmt.name)
    if not names:
        raise ConventionError(notebook, index, "the cell above a check cell must be the stub cell (functions whose "
                                               f"body is `{STUB_LINE}`); this one is empty")
    return names


def _heading(notebook: str, cells, first: int, last: int, number: int, strict: bool):
    """(cell, title, kind, minutes) of exercise `number`'s heading in cells first..last, or None."""
    for i in range(last, first - 1, -1):
        cell = cells[i]
        if cell["cell_type"] != "markdown":
            continue
        for line in source_of(cell).split("\n"):
            line = line.strip()
            m = _HEADING.match(line)
            if m:
                full = _HEADING_FULL.match(line)
                if strict and (not full or full.group(2) not in KINDS):
                    raise ConventionError(notebook, i, f"the heading `{line}` does not read `### Exercise N — Kind · "
                                                       f"about M min: what it is about` with Kind one of {', '.join(KINDS)}")
                found = int(m.group(1))
                if strict and found != number:
                    raise ConventionError(notebook, i, f"exercise {number}'s heading says Exercise {found}")
                if full:
                    return i, full.group(4).strip(), full.group(2), int(full.group(3))
                return i, m.group(2).strip(" —-:·") or f"exercise {number}", None, None
            m = _LEGACY.match(line)
            if m:
                if strict and int(m.group(1)) != number:
                    raise ConventionError(notebook, i, f"exercise {number}'s heading says {m.group(1)}")
                return i, m.group(2).strip().rstrip(".") or f"exercise {number}", None, None
    return None


def find_exercises(nb, notebook: str, submitted: bool = False) -> list[Exercise]:
    """The exercises of a notebook (an nbformat node or its dict), in order.

    notebook: its name, for messages. submitted=False (a notebook as shipped, or an instructor's
    source): every rule of the convention is enforced. submitted=True (a student's copy): only the
    check cells are required; the stub cells hold the student's code.
    """
    cells = nb["cells"]
    checks = _imports(notebook, cells)
    exercises: list[Exercise] = []
    stub_cells: set[int] = set()
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = source_of(cell)
        tree = _parse(notebook, i, source, required=not submitted)
        if tree is None or not _calls_of(tree, set(checks)):
            continue
        name, answer, call = _check_call(notebook, i, source, tree, checks)
        if any(e.check == name for e in exercises):
            raise ConventionError(notebook, i, f"{name} is called by two check cells (the first is cell "
                                               f"{next(e.check_cell for e in exercises if e.check == name)})")
        number = len(exercises) + 1
        stub, stubs = i - 1, []
        if submitted:
            stub = stub if stub >= 0 and cells[stub]["cell_type"] == "code" else None
        else:
            if stub < 0 or cells[stub]["cell_type"] != "code":
                raise ConventionError(notebook, i, f"the check cell of {name} must come right after its stub cell "
                                                   f"(cell {stub} is {'markdown' if stub >= 0 else 'missing'})")
            stubs = _stub_functions(notebook, stub, source_of(cells[stub]), _parse(notebook, stub, source_of(cells[stub])))
            if answer not in stubs:
                raise ConventionError(notebook, i, f"{name}({answer}) checks a name the stub cell above does not "
                                                   f"define (it defines {', '.join(stubs)})")
            stub_cells.add(stub)
        first = exercises[-1].check_cell + 1 if exercises else 0
        found = _heading(notebook, cells, first, (stub if stub is not None else i) - 1, number, strict=not submitted)
        if found is None and not submitted:
            raise ConventionError(notebook, stub, f"exercise {number} ({name}) has no heading `### Exercise {number} — "
                                                  "Kind · about M min: ...` above its stub")
        heading, title, kind, minutes = found or (None, name.removeprefix("check_").replace("_", " "), None, None)
        exercises.append(Exercise(number=number, title=title, check=name, module=checks[name], answer=answer,
                                  check_cell=i, stub_cell=stub, heading_cell=heading, kind=kind, minutes=minutes,
                                  stubs=stubs, call=call, notebook=notebook))
    if not submitted:
        for i, cell in enumerate(cells):
            if i not in stub_cells and STUB_LINE in source_of(cell):
                raise ConventionError(notebook, i, f"`{STUB_LINE}` appears outside a stub cell (only stubs followed by "
                                                   "their check cell may hold it)")
        if not exercises:
            raise ConventionError(notebook, None, "no exercises found (no cell calls a check imported from "
                                                  "mrcnn_teach.exercises)")
    return exercises


# --------------------------------------------------------------------------- what a grader runs


def check_function(exercise: Exercise):
    """The check function itself, imported from where the notebook imports it."""
    try:
        check = getattr(importlib.import_module(exercise.module), exercise.check)
    except (ImportError, AttributeError) as err:
        raise ConventionError(exercise.notebook, exercise.check_cell, f"{exercise.check} cannot be imported from "
                                                                      f"{exercise.module}: {err}") from None
    if not callable(check):
        raise ConventionError(exercise.notebook, exercise.check_cell, f"{exercise.module}.{exercise.check} is not a function")
    return check


def takes_hidden(check) -> bool:
    """A check with hidden cases takes the keyword `hidden` (mrcnn_teach.exercises.run_check)."""
    return "hidden" in inspect.signature(check).parameters


def points_of(exercise: Exercise) -> int:
    """The points the exercise is worth: its check's @worth(points), else 1."""
    from .exercises import points_of as points

    return points(check_function(exercise))


def test_source(exercise: Exercise, check_cell_source: str) -> str:
    """The graded test cell: the check cell as the notebook has it, plus the hidden test if the check has one."""
    if not takes_hidden(check_function(exercise)):
        return check_cell_source
    return "\n".join([check_cell_source.rstrip("\n"), BEGIN_HIDDEN,
                      f"{exercise.check}({exercise.answer}, hidden=True);", END_HIDDEN])
