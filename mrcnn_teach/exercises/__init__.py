"""Check functions for the notebooks' exercises: one module per notebook (nb01.py for 01_backbone, ...).

Each check takes the student's answer (a function, a number, a tensor), compares it with the
library on inputs the student did not choose, prints one line that says what is right or wrong,
and returns True or False. It never raises: an exercise not yet attempted (its body still raises
NotImplementedError) prints a reminder, so a notebook with open exercises still runs top to
bottom. The worked solutions live in notebooks/solutions/, and tests/test_exercises.py checks
that every one of them passes its check.

Graded (nbgrader's autograde and validate set NBGRADER_EXECUTION; `python -m mrcnn_teach.grade`
sets MRCNN_TEACH_GRADING), a check that is not passed raises instead (ExerciseFailed, or
ExerciseNotAttempted), because a grader scores a test cell by whether it raises. The check cell
reads the same either way.

Two optional parts of a check's API, for the classroom edition (notebooks/solutions/README.md):
`@worth(points)` sets the points its exercise is worth (1 if not set), and a `hidden=False`
keyword makes the check run extra cases when called with `hidden=True` (nbgrader's hidden tests:
the student's release never calls it so, and a failure there names no case).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

# Set in the kernel while a grader runs the notebook: nbgrader (autograde: "autograde", validate:
# "validate") and mrcnn_teach.grade ("1").
GRADING_ENV = ("NBGRADER_EXECUTION", "MRCNN_TEACH_GRADING")


class ExerciseFailed(AssertionError):
    """Raised by a check under a grader when the answer is wrong (or crashed): the test cell fails."""


class ExerciseNotAttempted(ExerciseFailed):
    """Raised by a check under a grader when the answer still raises NotImplementedError."""


def grading() -> bool:
    """True inside a notebook that a grader (nbgrader, mrcnn_teach.grade) is executing."""
    return any(os.environ.get(name) for name in GRADING_ENV)


def worth(points: int):
    """Decorator: the exercise this check grades is worth `points` (an int >= 1; 1 if not set)."""
    if not isinstance(points, int) or isinstance(points, bool) or points < 1:
        raise ValueError(f"worth(points): points must be an int >= 1, got {points!r}")

    def mark(check):
        check.points = points
        return check

    return mark


def points_of(check) -> int:
    """The points a check's exercise is worth: its @worth value, else 1."""
    return getattr(check, "points", 1)


def run_check(name: str, compare: Callable[[], Any], hidden: bool = False) -> bool:
    """Run `compare()` (asserts on the student's answer); print and return the verdict.

    Under a grader (`grading()`), a verdict other than correct is raised instead of returned.
    hidden=True: `compare` runs (only) the cases the notebook does not show, and a failure says so
    without naming the case or the error (graders' feedback shows this message).
    """
    graded = grading()
    with warnings.catch_warnings(record=graded) as caught:
        if graded:  # a warning on stderr would cost the exercise its points in nbgrader: show it on stdout
            warnings.simplefilter("always")
        verdict, message = _verdict(name, compare, hidden)
    for warning in caught or []:
        print(f"    (a warning while checking: {warning.category.__name__}: {warning.message})")
    if verdict is True:
        print(message)
        return True
    if graded:
        raise (ExerciseNotAttempted if verdict is None else ExerciseFailed)(message)
    print(message)
    return False


def _verdict(name: str, compare: Callable[[], Any], hidden: bool) -> tuple[bool | None, str]:
    """(True, message) correct, (False, message) wrong or crashed, (None, message) not attempted."""
    extra = " (and on the cases the notebook does not show)" if hidden else ""
    try:
        import torch

        with torch.enable_grad():  # a notebook may turn gradients off globally; a check may need them
            compare()
    except NotImplementedError:
        return None, f"[ ] {name}: not attempted yet (write your answer in the cell above, then run this cell again)"
    except AssertionError as err:
        if hidden:
            return False, f"[x] {name}: not yet right on a case the notebook does not show"
        return False, f"[x] {name}: not yet right: {err}"
    except Exception as err:  # the student's code crashed: say how, do not stop the notebook
        if hidden:
            return False, f"[x] {name}: your code raised {type(err).__name__} on a case the notebook does not show"
        return False, f"[x] {name}: your code raised {type(err).__name__}: {err}"
    return True, f"[v] {name}: correct{extra}"


def close(a, b, atol: float = 1e-4) -> bool:
    """Tensors (or numbers) equal in shape and value up to atol."""
    import torch

    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=atol, rtol=0))


def need_function(answer) -> None:
    """An exercise that asks for a function: None means not attempted yet; anything else must be callable."""
    if answer is None:
        raise NotImplementedError
    assert callable(answer), f"expected a function, got {type(answer).__name__}"


def names_used(answer) -> set[str]:
    """Every global and attribute name `answer`'s code reads, the functions and lambdas defined inside it
    included; an empty set for something that has no Python code (a number, a builtin, None)."""
    names, codes = set(), [getattr(answer, "__code__", None)]
    while codes:
        code = codes.pop()
        if code is not None:
            names.update(code.co_names)
            codes += [c for c in code.co_consts if hasattr(c, "co_names")]  # nested functions, lambdas
    return names


def refuse_names(answer, forbidden, why: str) -> None:
    """Fail (a check's assertion) when `answer` uses one of the `forbidden` names: the library call that would
    answer the exercise, or the one the check compares with. `why` completes "don't call X: ..."."""
    used = sorted(names_used(answer) & set(forbidden))
    assert not used, f"don't call {', '.join(used)}: {why}"


def tiny_backbone():
    """A small random ResNet-18 + FPN (8 channels), built without moving the caller's random state.

    The checks run it to get the true P2..P6 sizes of an input, whatever rounding the student assumed.
    """
    import torch

    from ..backbone import ResNetBody
    from ..fpn import FPN, BackboneWithFPN

    with torch.random.fork_rng():
        torch.manual_seed(0)
        body = ResNetBody(depth=18, norm="gn", trainable_layers=0)
        return BackboneWithFPN(body, FPN(body.out_channels, 8)).eval()
