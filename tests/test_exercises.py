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


# Answers as a notebook defines them: at the top level of the kernel, so the library's functions are globals.
NOTEBOOK_ANSWERS = """
import torch
from mrcnn_teach.exercises import nb06
from mrcnn_teach.poolers import assign_levels


def boxes():
    sides = torch.tensor(nb06.LEVEL_SIDES)  # (7,)
    return torch.stack([torch.zeros(7), torch.zeros(7), sides, sides], dim=1)  # (7, 4)


def cheat_inline():
    return (assign_levels(boxes(), canonical_scale=nb06.LOW_CANONICAL_SCALE) + 2).tolist()


def cheat_in_a_lambda():
    levels = lambda b: (assign_levels(b, canonical_scale=nb06.LOW_CANONICAL_SCALE) + 2).tolist()
    return levels(boxes())


def cheat_in_a_helper():
    def helper():
        return [k + 2 for k in assign_levels(boxes(), canonical_scale=32).tolist()]
    return helper()


def typed_in(levels=tuple(cheat_inline())):  # the right levels, as a student would type them
    return list(levels)
"""


def test_refuse_names_sees_into_nested_functions_and_lambdas():
    from mrcnn_teach.exercises import names_used, refuse_names

    answers: dict = {}
    exec(NOTEBOOK_ANSWERS, answers)
    for name in ("cheat_inline", "cheat_in_a_lambda", "cheat_in_a_helper"):
        assert "assign_levels" in names_used(answers[name]), name
        with pytest.raises(AssertionError, match="don't call assign_levels: work it out"):
            refuse_names(answers[name], {"assign_levels", "BalancedSampler"}, "work it out")
    for answer in (answers["typed_in"], None, 3, len):  # no call to refuse, or no Python code at all
        refuse_names(answer, {"assign_levels"}, "work it out")


def test_a_check_refuses_the_library_call_hidden_in_a_helper(capsys):
    """Notebook 06's Exercise 1 (predict the levels) answered by the library, inline, in a lambda or in a
    nested helper: the right levels, refused all the same, and told why; the same levels typed in pass."""
    from mrcnn_teach.exercises import nb06

    answers: dict = {}
    exec(NOTEBOOK_ANSWERS, answers)
    assert nb06.check_levels_at_low_scale(answers["typed_in"]) is True
    for name in ("cheat_inline", "cheat_in_a_lambda", "cheat_in_a_helper"):
        capsys.readouterr()
        assert nb06.check_levels_at_low_scale(answers[name]) is False, name
        assert "don't call assign_levels" in capsys.readouterr().out, name


def test_the_budget_check_does_not_take_a_setting_the_notebook_printed(capsys, monkeypatch):
    """Notebook 10's Exercise 2: a setting of section 9's table is refused before anything runs (whether
    it would pass depends on the training's last bits); one between the printed ones is scored."""
    from mrcnn_teach.exercises import nb10

    scored = []
    monkeypatch.setattr(nb10, "_design_score", lambda settings, size, seed: scored.append(settings) or (2.5, 0.7))
    for s, t, agnostic in [(0.5, 0.3, False), (0.7, 0.7, False), (0.05, 0.5, True)]:
        capsys.readouterr()
        assert nb10.check_inference_settings(lambda: dict(score_thresh=s, nms_thresh=t, class_agnostic=agnostic)) is False
        assert "is printed in section 9" in capsys.readouterr().out
    assert scored == []
    assert nb10.check_inference_settings(lambda: dict(score_thresh=0.55, nms_thresh=0.5, class_agnostic=False)) is True
    assert nb10.check_inference_settings(lambda: dict(score_thresh=0.5, nms_thresh=0.3, class_agnostic=True)) is True
    assert len(scored) == 2
