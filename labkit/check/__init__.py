"""Check functions for the labs: specific feedback on a learner's answer.

Each lab has its own module here with one function per task:

=================  ======  ==================================
module             lab     topic
=================  ======  ==================================
``inference``      Lab 1   small-model inference
``quant``          Lab 2   quantization
``storage``        Lab 3   storage throughput
``serving``        Lab 4   serving
``distributed``    Lab 5   distributed work with Ray
``capacity``       Lab 6   capacity planning
``routing``        Lab 7   routing LLM traffic
=================  ======  ==================================

A check prints what is right and returns it (:func:`passed`, a string a notebook does not echo
twice), or raises :class:`LabCheckError` (an AssertionError, so nbval and ``make test`` fail on
a wrong instructor solution) with a message that says what is off and what to look at, never
just "wrong". This module is the one shared base: the checks' number parsing, closeness,
"off by a factor" diagnostics and the predictions table (:func:`prediction_rows`).

May import every other package of ``labkit`` (it is the top layer with the CLI).
"""

from __future__ import annotations

import math


class LabCheckError(AssertionError):
    """A lab answer is off; the message says how and what to try."""


def expect(condition: bool, hint: str) -> None:
    """Raise :class:`LabCheckError` with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise LabCheckError(hint)


def as_number(name: str, value, *, unfilled: str | None = None,
              nan_is_unfilled: bool = False) -> float:
    """``value`` as a finite float, or :class:`LabCheckError` saying that ``name`` must be one.

    An unfilled answer (``...`` or ``None``; NaN too with ``nan_is_unfilled``, for labs whose
    placeholders are ``float("nan")``) gets the hint to replace it: the lab's own wording
    ``unfilled`` (formatted with ``name``) when given.
    """
    is_nan = isinstance(value, float) and math.isnan(value)
    if value is Ellipsis or value is None or (nan_is_unfilled and is_nan):
        if unfilled:
            raise LabCheckError(unfilled.format(name=name))
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


def expect_close(name: str, value: float, expected: float, rel: float = 0.05, hint: str = "") -> float:
    """Check that ``value`` is within ``rel`` (relative) of ``expected``; explain the gap if not.
    Returns the value as a number."""
    number = as_number(name, value)
    if not math.isclose(number, expected, rel_tol=rel):
        ratio = f" ({number / expected:.2f}× the expected value)" if expected else ""
        raise LabCheckError(f"{name} = {number:.4g}, expected about {expected:.4g}{ratio}. {hint}".strip())
    return number


def is_close(got: float, want: float, rel: float = 0.01) -> bool:
    """Whether ``got`` is within ``rel`` (relative) of ``want``."""
    return math.isclose(got, want, rel_tol=rel)


def off_by(got: float, want: float) -> str:
    """`` (2.00x the expected value)`` when that helps, else empty."""
    return f" ({got / want:.2f}x the expected value)" if want else ""


def closest_hint(value: float, expected: float, hints: dict[float, str]) -> str:
    """The hint of ``hints`` (``{value / expected ratio: hint}``, e.g. ``{1e9: "that is in
    bytes"}``) whose ratio is within 3 % of the observed ratio, or ``""`` if none is."""
    ratio = value / expected if expected else math.inf
    best = min(hints, key=lambda r: abs(math.log(ratio / r)) if ratio > 0 else math.inf)
    return hints[best] if ratio > 0 and abs(ratio / best - 1) < 0.03 else ""


def expect_near(name: str, value, expected: float, rel: float, hints: dict[float, str],
                fallback: str, **unfilled) -> float:
    """``value`` as a number within ``rel`` of ``expected``; otherwise raise the hint of the
    closest typical mistake (:func:`closest_hint`) or ``fallback``. ``unfilled`` options go to
    :func:`as_number`."""
    number = as_number(name, value, **unfilled)
    if not math.isclose(number, expected, rel_tol=rel):
        hint = closest_hint(number, expected, hints) or fallback
        raise LabCheckError(f"{name} = {number:.4g}, expected about {expected:.4g}. {hint}")
    return number


def raise_if_slip(name: str, value: float, candidates, rel: float = 0.01,
                  want: float | None = None) -> None:
    """Raise the hint of the first typical wrong answer (``(wrong value, hint)`` pairs) that
    ``value`` matches. A value within ``rel`` of the right answer ``want`` is never diagnosed,
    even where a wrong answer happens to lie close to it on this run."""
    if want is not None and math.isclose(value, want, rel_tol=rel, abs_tol=1e-12):
        return
    for wrong, hint in candidates:
        if math.isclose(value, wrong, rel_tol=rel, abs_tol=1e-12):
            raise LabCheckError(f"{name} = {value:.4g}: {hint}")


def rate_is_right(got: float, count: float, seconds: float, inverted_hint: str) -> bool:
    """Whether ``got`` is the rate ``count / seconds``; raises :class:`LabCheckError` on its two
    usual slips, the inverse (with ``inverted_hint``) and a time taken in milliseconds."""
    if is_close(got, count / seconds):
        return True
    if is_close(got, seconds / count):
        raise LabCheckError(inverted_hint)
    if is_close(got, count / (seconds * 1e3)):
        raise LabCheckError("the time looks like it was taken in milliseconds; use seconds.")
    return False


def ratio_or_upside_down(got: float, want: float, success: str,
                         upside_down: str) -> "Passed | None":
    """:func:`passed` with ``success`` when ``got`` is the ratio ``want``; raise
    :class:`LabCheckError` with ``upside_down`` when it is ``1 / want`` (numerator and
    denominator swapped); None otherwise, for the check to diagnose further."""
    if is_close(got, want):
        return passed(success)
    if is_close(got, 1 / want):
        raise LabCheckError(upside_down)
    return None


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


def prediction_rows(predictions, measured) -> list[list]:
    """Rows ``[quantity, your prediction, measured, measured / predicted]`` for the closing
    table; predictions left as ``None`` show as ``-``, measurements that could not be taken
    (``None``, e.g. fio missing) as ``n/a``."""
    rows = []
    for key, value in measured.items():
        guess = predictions.get(key)
        if value is None:
            rows.append([key, "-" if guess is None else guess, "n/a", "-"])
            continue
        ratio = f"{value / guess:.2g}x" if guess else "-"
        rows.append([key, "-" if guess is None else guess, round(float(value), 3), ratio])
    return rows
