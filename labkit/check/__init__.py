"""Check functions for the labs: specific feedback on a learner's answer.

Each lab has its own module here (``labkit.check.<lab>``) with one function per task. A check
prints what is right and raises :class:`LabCheckError` (an AssertionError, so nbval and
``make test`` fail on a wrong instructor solution) with a message that says what is off and
what to look at, never just "wrong".
"""

from __future__ import annotations

import math


class LabCheckError(AssertionError):
    """A lab answer is off; the message says how and what to try."""


def expect(condition: bool, hint: str) -> None:
    """Raise :class:`LabCheckError` with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise LabCheckError(hint)


def as_number(name: str, value) -> float:
    """``value`` as a finite float, or :class:`LabCheckError` saying that ``name`` must be one."""
    if value is Ellipsis or value is None:
        raise LabCheckError(f"{name} is still {value!r}: replace it with your answer (a number), "
                            "then run the cell again")
    if isinstance(value, bool):
        raise LabCheckError(f"{name} should be a number, got the truth value {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LabCheckError(f"{name} should be a number, got {value!r}") from None
    if math.isnan(number) or math.isinf(number):
        raise LabCheckError(f"{name} should be a finite number, got {value!r}")
    return number


def expect_close(name: str, value: float, expected: float, rel: float = 0.05, hint: str = "") -> None:
    """Check that ``value`` is within ``rel`` (relative) of ``expected``; explain the gap if not."""
    number = as_number(name, value)
    if not math.isclose(number, expected, rel_tol=rel):
        ratio = f" ({number / expected:.2f}× the expected value)" if expected else ""
        raise LabCheckError(f"{name} = {number:.4g}, expected about {expected:.4g}{ratio}. {hint}".strip())


class Passed(str):
    """The success message a check returns: a plain string that a notebook does not echo.

    The check has already printed it; without this, a cell ending in a check call would show
    the same message twice (once printed, once as the cell's value).
    """

    def _ipython_display_(self) -> None:
        pass


def passed(message: str) -> Passed:
    """Print a success line (kept short: the learner reads it in the notebook) and return it."""
    print(f"✔ {message}")
    return Passed(message)
