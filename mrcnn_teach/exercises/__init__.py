"""Check functions for the notebooks' exercises: one module per notebook (nb01.py for 01_backbone, ...).

Each check takes the student's answer (a function, a number, a tensor), compares it with the
library on inputs the student did not choose, prints one line that says what is right or wrong,
and returns True or False. It never raises: an exercise not yet attempted (its body still raises
NotImplementedError) prints a reminder, so a notebook with open exercises still runs top to
bottom. The worked solutions live in notebooks/solutions/, and tests/test_exercises.py checks
that every one of them passes its check.
"""

from __future__ import annotations

from typing import Any, Callable


def run_check(name: str, compare: Callable[[], Any]) -> bool:
    """Run `compare()` (asserts on the student's answer); print and return the verdict."""
    try:
        compare()
    except NotImplementedError:
        print(f"[ ] {name}: not attempted yet (write your answer in the cell above, then run this cell again)")
        return False
    except AssertionError as err:
        print(f"[x] {name}: not yet right: {err}")
        return False
    except Exception as err:  # the student's code crashed: say how, do not stop the notebook
        print(f"[x] {name}: your code raised {type(err).__name__}: {err}")
        return False
    print(f"[v] {name}: correct")
    return True


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
