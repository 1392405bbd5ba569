"""Every exercise's worked solution (notebooks/solutions/) passes the check the notebook gives the student.

A solutions file NN_name.py belongs to notebooks/NN_name.ipynb and lists CHECKS, pairs of
(check function, answer). Also: every check a notebook calls has a solution here, so no exercise
goes untested, and a wrong answer is told it is wrong (a check that cannot fail is no check).
"""

import importlib.util
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOLUTIONS = sorted((NOTEBOOKS / "solutions").glob("[0-9][0-9]_*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"solutions_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solutions_pass_their_checks(path, capsys):
    module = load(path)
    assert module.CHECKS, f"{path.name} lists no CHECKS"
    for check, answer in module.CHECKS:
        assert check(answer) is True, f"{path.name}: {check.__name__} rejects the solution:\n{capsys.readouterr().out}"
    # and each check rejects an answer that is not implemented, without raising
    for check, answer in module.CHECKS:
        def not_done(*args, **kwargs):
            raise NotImplementedError

        assert check(not_done if callable(answer) else None) is False


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_wrong_answers_are_rejected(path):
    module = load(path)
    wrong = getattr(module, "WRONG", [])
    assert wrong, f"{path.name} lists no WRONG answers: show that each check can fail"
    for check, answer in wrong:
        assert check(answer) is False, f"{path.name}: {check.__name__} accepts a wrong answer"


def notebook_checks(nb_path: Path) -> set[str]:
    source = "\n".join("".join(c["source"]) for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code")
    return set(re.findall(r"\b(check_\w+)\(", source))


@pytest.mark.parametrize("nb_path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_exercise_of_a_notebook_has_a_tested_solution(nb_path):
    solution_file = NOTEBOOKS / "solutions" / f"{nb_path.stem}.py"
    assert solution_file.exists(), f"{nb_path.name} has no solutions file {solution_file.name}"
    used = notebook_checks(nb_path)
    assert used, f"{nb_path.name} has no exercise check cells"
    solved = {check.__name__ for check, _ in load(solution_file).CHECKS}
    assert used <= solved, f"{nb_path.name}: checks without a tested solution: {sorted(used - solved)}"
