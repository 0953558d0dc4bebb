"""Checks for Lab 2 (quantization): specific feedback on each task.

Follows :mod:`labkit.check`: a check prints a success line (and returns it) when the answer is
right and raises :class:`labkit.check.LabCheckError` saying what to look at when it is not.
Every reference is recomputed from the rows the learner measured
(:func:`labkit.inference.quant_bench.measure_precisions`), so the checks hold on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from labkit.check import LabCheckError, as_number, passed

#: What an answer still left as ``...`` is told (Lab 2's wording).
UNFILLED = "{name} is still `...`: replace it with your answer."

__all__ = ["row", "check_bytes_ratio", "check_speedup", "core_gains", "check_core_gain",
           "check_perplexity_change", "outlier_kind", "check_outlier_layer", "recommended",
           "check_recommendation"]


def _other_row(value: float, rows, precision: str, ratio, rel: float = 0.01) -> str | None:
    """The precision (other than ``precision`` and fp32) whose ``ratio(row)`` matches."""
    for r in rows:
        if r["precision"] in (precision, "fp32"):
            continue
        try:
            other = ratio(r)
        except (KeyError, ZeroDivisionError):
            continue
        if math.isclose(value, other, rel_tol=rel):
            return r["precision"]
    return None


def row(rows: Sequence[Mapping], precision: str) -> Mapping:
    """The measured row of ``precision``."""
    for r in rows:
        if r["precision"] == precision:
            return r
    raise LabCheckError(f"no row for {precision!r}; measured: {[r['precision'] for r in rows]}")


def check_bytes_ratio(ratio, rows) -> str:
    """Task 1: bytes of the int8 projections / bytes of the fp32 projections."""
    value = as_number("int8_bytes_ratio", ratio, unfilled=UNFILLED)
    want = row(rows, "int8")["bytes"] / row(rows, "fp32")["bytes"]
    # bytes are exact, so the tolerance is tight enough to tell 1/4 from 1/4 + 1/K
    if math.isclose(value, want, rel_tol=0.002):
        return passed(f"int8 stores the projections in {value:.3f}x the fp32 bytes: a quarter for "
                   f"the weights, plus one 4-byte scale per output row.")
    if math.isclose(value, 1 / want, rel_tol=0.01):
        raise LabCheckError(f"{value:.3g} is fp32 / int8; divide the int8 bytes by the fp32 ones.")
    if math.isclose(value, 0.25, rel_tol=0.001):
        raise LabCheckError("0.25 counts the int8 weights only: the measured bytes include the "
                            "per-channel scales. Use the 'bytes' of the two rows.")
    fp32_bytes = row(rows, "fp32")["bytes"]
    other = _other_row(value, rows, "int8", lambda r: r["bytes"] / fp32_bytes, rel=0.002)
    if other:
        raise LabCheckError(f"{value:.3g} is the {other} row's ratio; use the 'int8' row.")
    raise LabCheckError(f"int8_bytes_ratio = {value:.4g}, expected about {want:.4g}: the "
                        f"'bytes' of the int8 row divided by the 'bytes' of the fp32 row.")


def check_speedup(speedup, rows, precision: str = "int8") -> str:
    """Task 3: decode tokens/s of ``precision`` / decode tokens/s of fp32, same run."""
    value = as_number("speedup", speedup, unfilled=UNFILLED)
    want = row(rows, precision)["decode_tok_s"] / row(rows, "fp32")["decode_tok_s"]
    if math.isclose(value, want, rel_tol=0.01):
        verdict = "faster" if want > 1 else "not faster"
        return passed(f"{precision} decodes {value:.2f}x as fast as fp32 ({verdict}); it reads "
                   f"{row(rows, precision)['bytes'] / row(rows, 'fp32')['bytes']:.2f}x the bytes.")
    if math.isclose(value, 1 / want, rel_tol=0.01):
        raise LabCheckError(f"{value:.3g} is fp32 / {precision}; "
                            f"put {precision}'s tokens/s on top.")
    fp32_tok_s = row(rows, "fp32")["decode_tok_s"]
    other = _other_row(value, rows, precision, lambda r: r["decode_tok_s"] / fp32_tok_s)
    if other:
        raise LabCheckError(f"{value:.3g} is the {other} row's speedup; use the "
                            f"'{precision}' row.")
    if math.isclose(value, 100 * want, rel_tol=0.01):
        raise LabCheckError(f"{value:.4g} is a percentage; give the ratio (x), not x 100.")
    raise LabCheckError(f"speedup = {value:.4g}, expected about {want:.4g}: the decode_tok_s of "
                        f"the {precision} row over that of the fp32 row.")


def core_gains(core_rows: Sequence[Mapping]) -> dict[str, float]:
    """Per precision: decode tokens/s with the most threads measured / with 1 thread."""
    gains = {}
    for precision in dict.fromkeys(r["precision"] for r in core_rows):
        rows = {r["threads"]: r["decode_tok_s"] for r in core_rows
                if r["precision"] == precision}
        if 1 not in rows:
            raise LabCheckError(f"no 1-thread row for {precision!r}: measure threads=1 too")
        gains[precision] = rows[max(rows)] / rows[1]
    return gains


def check_core_gain(core_gain, core_rows) -> str:
    """Task 3b: ``{precision: tok/s with every core / tok/s with 1 thread}``."""
    if not isinstance(core_gain, Mapping):
        raise LabCheckError(f"core_gain must be a dict like {{'fp32': 1.0, 'int8': 1.8}}, got "
                            f"{type(core_gain).__name__}")
    want = core_gains(core_rows)
    if set(core_gain) != set(want):
        raise LabCheckError(f"core_gain needs exactly the keys {sorted(want)}, "
                            f"got {sorted(core_gain)}")
    cores = max(r["threads"] for r in core_rows)
    for precision, expected in want.items():
        value = as_number(f"core_gain[{precision!r}]", core_gain[precision], unfilled=UNFILLED)
        if math.isclose(value, expected, rel_tol=0.01):
            continue
        if math.isclose(value, 1 / expected, rel_tol=0.01):
            raise LabCheckError(f"core_gain[{precision!r}] = {value:.3g} is 1 thread / "
                                f"{cores} threads; put the {cores}-thread tokens/s on top.")
        swapped = [p for p, g in want.items() if p != precision and math.isclose(value, g,
                                                                               rel_tol=0.01)]
        if swapped:
            raise LabCheckError(f"core_gain[{precision!r}] = {value:.3g} is {swapped[0]}'s "
                                f"gain; use the rows of {precision}.")
        raise LabCheckError(f"core_gain[{precision!r}] = {value:.4g}, expected {expected:.4g}: "
                            f"decode_tok_s with {cores} threads over decode_tok_s with 1.")
    if cores == 1:
        return passed("this machine gives the notebook one core, so every gain is 1.0: run it "
                   "where two or more cores are usable to see the difference.")
    gains = ", ".join(f"{p} {g:.2f}x" for p, g in want.items())
    if max(want.values()) < 0.9:
        return passed(f"your arithmetic is right. With {cores} threads every precision got slower "
                   f"({gains}): this run does not show the expected pattern, so it cannot tell "
                   "which kernel is bound by arithmetic. A slowdown from more threads usually "
                   "means the other core(s) were busy; rerun this task when the machine is "
                   "quiet to test the explanation.")
    if "int8" in want and "fp32" in want:
        if want["int8"] > 1.05 * want["fp32"]:
            return passed(f"with {cores} threads: {gains}. int8 gains more than fp32, as expected "
                       "if its kernel waits on arithmetic (converting each weight) more than "
                       "fp32's, which waits on memory.")
        return passed(f"your arithmetic is right. With {cores} threads: {gains}. This run does "
                   "not show the expected pattern: int8 did not gain more than fp32, so it "
                   "gives no evidence that the int8 kernel is the arithmetic-bound one. "
                   "Compare each row's % of roofline, and rerun when the machine is quiet.")
    return passed(f"with {cores} threads: {gains}.")


def check_perplexity_change(percent, rows, precision: str = "int8") -> str:
    """Task 3: perplexity change of ``precision`` against fp32, in percent."""
    value = as_number("ppl_change_pct", percent, unfilled=UNFILLED)
    want = 100.0 * (row(rows, precision)["perplexity"] / row(rows, "fp32")["perplexity"] - 1)
    if abs(value - want) <= max(0.01, 0.01 * abs(want)):
        return passed(f"{precision}: perplexity {value:+.2f} % against fp32 (lower is better).")
    if abs(value - want / 100) <= 1e-4 + 0.01 * abs(want / 100):
        raise LabCheckError(f"{value:.4g} is a fraction; multiply by 100 for percent.")
    ratio = row(rows, precision)["perplexity"] / row(rows, "fp32")["perplexity"]
    if math.isclose(value, ratio, rel_tol=1e-4) or math.isclose(value, 100 * ratio, rel_tol=1e-4):
        raise LabCheckError(f"{value:.4g} is the ratio of the perplexities; the change is "
                            f"100 x (ratio - 1).")
    inverse = 100.0 * (1 / ratio - 1)
    if abs(want) > 1e-6 and abs(value - inverse) <= max(0.01, 0.01 * abs(inverse)) \
            and abs(inverse - want) > 0.01:
        raise LabCheckError(f"{value:.4g} is measured against the {precision} row; divide "
                            f"ppl_{precision} by ppl_fp32, not the other way round.")
    fp32_ppl = row(rows, "fp32")["perplexity"]
    other = _other_row(value, rows, precision,
                       lambda r: 100.0 * (r["perplexity"] / fp32_ppl - 1), rel=0.01)
    if other and abs(value - want) > 0.01:
        raise LabCheckError(f"{value:.4g} is the {other} row's change; use the "
                            f"'{precision}' row.")
    raise LabCheckError(f"ppl_change_pct = {value:.4g}, expected {want:+.3f}: "
                        f"100 x (ppl_{precision} / ppl_fp32 - 1).")


def outlier_kind(outliers: Sequence[Mapping]) -> str:
    """The projection kind whose input has the largest outlier ratio (max / median channel)."""
    return max(outliers, key=lambda r: r["ratio"])["name"]


def check_outlier_layer(name, outliers) -> str:
    """Task 4: which projection's input holds the worst activation outlier."""
    if name is Ellipsis:
        raise LabCheckError("outlier_layer is still `...`: replace it with a projection name.")
    want = outlier_kind(outliers)
    worst = max(outliers, key=lambda r: r["ratio"])
    if isinstance(name, int) and not isinstance(name, bool):
        raise LabCheckError(f"{name} is a layer number; give the projection's 'name', one of "
                            f"{sorted({r['name'] for r in outliers})}.")
    if name == want:
        return passed(f"{want}: in layer {worst['layer']} one input channel ({worst['channel']}) "
                   f"reaches {worst['absmax']:.0f}, {worst['ratio']:.0f}x the median channel. A "
                   f"per-token int8 scale stretched to it rounds most other values to 0.")
    kinds = sorted({r["name"] for r in outliers})
    if name not in kinds:
        raise LabCheckError(f"{name!r} is not a projection; choose one of {kinds}.")
    raise LabCheckError(f"{name!r} is not the worst: sort the outlier rows by 'ratio' "
                        f"(largest |activation| / median channel) and take the top one's 'name'.")


def recommended(rows: Sequence[Mapping], max_loss_pct: float = 3.0,
                min_agreement: float = 0.9) -> str:
    """The fastest precision whose perplexity is within ``max_loss_pct`` % of fp32 and whose
    top-1 agreement with fp32 is at least ``min_agreement``."""
    ref = row(rows, "fp32")["perplexity"]
    ok = [r for r in rows if r["perplexity"] <= ref * (1 + max_loss_pct / 100)
          and r["top1_agreement"] >= min_agreement]
    return max(ok, key=lambda r: r["decode_tok_s"])["precision"]


def check_recommendation(choice, rows, max_loss_pct: float = 3.0,
                         min_agreement: float = 0.9) -> str:
    """Task 5: the fastest precision within the perplexity and agreement budget."""
    if choice is Ellipsis:
        raise LabCheckError("choice is still `...`: replace it with a precision name.")
    want = recommended(rows, max_loss_pct, min_agreement)
    names = [r["precision"] for r in rows]
    if choice not in names:
        raise LabCheckError(f"{choice!r} was not measured; choose one of {names}.")
    r = row(rows, choice)
    ref = row(rows, "fp32")["perplexity"]
    loss = 100 * (r["perplexity"] / ref - 1)
    if choice == want:
        return passed(f"{choice}: {r['decode_tok_s']:.1f} tok/s at {loss:+.2f} % perplexity and "
                   f"{100 * r['top1_agreement']:.0f} % top-1 agreement, the fastest within the "
                   f"budget in this run.")
    if loss > max_loss_pct:
        raise LabCheckError(f"{choice} loses {loss:.1f} % perplexity, over the "
                            f"{max_loss_pct:g} % budget: filter by perplexity first.")
    if r["top1_agreement"] < min_agreement:
        raise LabCheckError(f"{choice} agrees with fp32 on only {100 * r['top1_agreement']:.0f} % "
                            f"of next tokens (budget {100 * min_agreement:.0f} %): perplexity "
                            f"alone hides that drift.")
    raise LabCheckError(f"{choice} is within budget but {want} is faster in this run "
                        f"({row(rows, want)['decode_tok_s']:.1f} against "
                        f"{r['decode_tok_s']:.1f} tok/s).")
