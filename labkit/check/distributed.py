"""Checks for Lab 5 (distributed Python with Ray): each gives specific feedback on one task.

Follows :mod:`labkit.check`: a check prints a success line when the answer is right (and
returns it as :class:`labkit.check.Passed`, which a notebook does not echo twice), and
raises :class:`labkit.check.LabCheckError` saying what to look at when it is not. Answers
computed from a noisy measurement are compared with the same formula applied to the same
measurement, so they are checked exactly; nothing here depends on how fast the machine was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from labkit.check import (LabCheckError, as_number, expect_close, passed, prediction_rows,
                          raise_if_slip)
from labkit.distributed.parallelism import amdahl_parallel_fraction, make_shards

__all__ = ["check_min_task_ms", "check_make_shards", "check_parallel_fraction",
           "check_permanent_failure", "check_actor_options", "check_actor_survived",
           "prediction_rows"]


def check_min_task_ms(min_task_ms: float, overhead_ms: float, budget: float = 0.10) -> str:
    """Task 1: the shortest task whose Ray overhead (``overhead_ms`` per task) is at most
    ``budget`` of its own run time: ``overhead / budget``."""
    want = overhead_ms / budget
    value = as_number("min_task_ms", min_task_ms)
    raise_if_slip("min_task_ms", value, want=want, candidates=[
        (want / 1000, "that is in seconds; store milliseconds (x 1000)."),
        (want * 1000, "that is in microseconds; store milliseconds (/ 1000)."),
        (overhead_ms * budget, f"you multiplied the overhead by {budget}; the overhead must be "
                               f"at most {budget:.0%} of the task's time, so divide by it."),
        (overhead_ms, "that is the overhead itself: a task that short spends half its time "
                      "in Ray's bookkeeping."),
    ])
    expect_close("min_task_ms", value, want, rel=0.01,
                 hint=f"The overhead ({overhead_ms:.3g} ms) must be at most "
                      f"{budget:.0%} of the task's own time t: overhead <= {budget} x t, so "
                      f"t >= overhead / {budget}.")
    return passed(f"tasks shorter than about {want:.3g} ms spend more than {budget:.0%} of their "
               "time in Ray's bookkeeping: batch small work into bigger tasks.")


def check_make_shards(fn: Callable[[Sequence, int], list]) -> str:
    """Task 2: ``fn(items, n_shards)`` must return ``n_shards`` contiguous, in-order shards
    covering every item once, whose sizes differ by at most one."""
    for n_items, n_shards in [(16, 4), (17, 4), (7, 3), (5, 5), (64, 8), (10, 1)]:
        items = list(range(n_items))
        got = fn(items, n_shards)
        try:
            if isinstance(got, (str, bytes)) or got is None:
                raise TypeError
            shards = [list(s) for s in got]
        except TypeError:
            raise LabCheckError(f"make_shards({n_items} items, {n_shards}) returned {got!r}; "
                                "return a list of lists") from None
        if len(shards) != n_shards:
            raise LabCheckError(f"make_shards({n_items} items, {n_shards}) returned "
                                f"{len(shards)} shards; it must return exactly {n_shards}.")
        flat = [x for s in shards for x in s]
        if sorted(flat) == items and flat != items and n_shards > 1:
            raise LabCheckError(f"make_shards({n_items} items, {n_shards}): every item is there "
                                "once, but the shards are not contiguous slices in order "
                                f"(the first shard is {shards[0][:4]}...). Slice items[start:"
                                "start + size] instead of taking every n-th item.")
        if flat != items:
            missing = sorted(set(items) - set(flat))
            raise LabCheckError(f"make_shards({n_items} items, {n_shards}): joined back "
                                "together, the shards must give every item once, in order"
                                + (f"; missing {missing[:5]}" if missing else
                                   "; some item is repeated or out of order") + ".")
        sizes = [len(s) for s in shards]
        if max(sizes) - min(sizes) > 1:
            raise LabCheckError(f"make_shards({n_items} items, {n_shards}) made shards of "
                                f"sizes {sizes}; they may differ by at most one item, or the "
                                "biggest shard decides when the whole job ends. Use "
                                "divmod(len(items), n_shards).")
        if shards != make_shards(items, n_shards):
            raise LabCheckError(f"make_shards({n_items} items, {n_shards}) gave sizes {sizes}; "
                                "give the extra items to the first shards, as the reference "
                                "does (the first len(items) % n_shards shards get one more).")
    return passed("every item lands in exactly one shard, in order, and the shards are balanced.")


def check_parallel_fraction(parallel_fraction: float, speedup: float, workers: int) -> str:
    """Task 3: Amdahl's parallel fraction that explains the measured ``speedup``."""
    want = amdahl_parallel_fraction(speedup, workers)
    value = as_number("parallel_fraction", parallel_fraction)
    raise_if_slip("parallel_fraction", value, want=want, candidates=[
        (want * 100, "that is a percentage; give p as a fraction between 0 and 1."),
        (speedup / workers, f"that is the efficiency S / N; Amdahl's p is the share of the "
                            "work that runs in parallel. Solve S = 1 / ((1 - p) + p / N) "
                            "for p."),
        (1 - 1 / speedup, "you forgot to divide by (1 - 1/N): p = (1 - 1/S) / (1 - 1/N)."),
        (1 / speedup, "that is 1 / S, the time of the parallel run relative to one worker, "
                      "not the parallel fraction."),
    ])
    expect_close("parallel_fraction", value, want, rel=0.01,
                 hint=f"Solve S = 1 / ((1 - p) + p / N) for p with S = {speedup:.3f} and "
                      f"N = {workers}: p = (1 - 1/S) / (1 - 1/N).")
    note = ("" if 0 <= want <= 1 else
            " (outside 0..1: the measurement is noisier than the model; compare the CPU "
            "share the workers got)")
    return passed(f"p = {want:.2f}: Amdahl says {want:.0%} of this run behaved as parallel "
               f"work on {workers} workers{note}.")


def check_permanent_failure(probability: float, p_crash: float, max_retries: int) -> str:
    """Task 4: chance that a task fails for good when each attempt dies with ``p_crash`` and
    Ray makes ``1 + max_retries`` attempts: ``p_crash ** (1 + max_retries)``."""
    want = p_crash ** (1 + max_retries)
    value = as_number("p_fail", probability)
    if not math.isclose(value, want, rel_tol=1e-6, abs_tol=1e-12):
        if math.isclose(value, p_crash ** max_retries, rel_tol=1e-6):
            raise LabCheckError(f"{value:.3g} counts only the retries. The first attempt can "
                                f"fail too: 1 + {max_retries} attempts must all fail.")
        if math.isclose(value, 1 - want, rel_tol=1e-6):
            raise LabCheckError(f"{value:.3g} is the chance that the task succeeds in the end; "
                                "the question asks for the chance that it fails for good.")
        if math.isclose(value, want * 100, rel_tol=1e-6):
            raise LabCheckError(f"{value:.3g} is a percentage; give a probability between 0 "
                                "and 1.")
        if math.isclose(value, p_crash * (1 + max_retries), rel_tol=1e-6):
            raise LabCheckError(f"{value:.3g} adds the chances; attempts fail independently, "
                                "so the chance that all of them fail is a product.")
        raise LabCheckError(f"{value:.3g} is not it. Every attempt fails independently with "
                            f"probability {p_crash}, and the task fails for good only if all "
                            f"1 + max_retries = {1 + max_retries} attempts fail.")
    return passed(f"{want:.2g}: retries turn a {p_crash:.0%} failure rate per attempt into a "
               f"{want:.2%} failure rate per task.")


def check_actor_options(options: Mapping) -> str:
    """Task 5: actor options that survive one kill without losing a call: the actor must be
    restartable (``max_restarts``) and its calls retried (``max_task_retries``)."""
    if not isinstance(options, Mapping):
        raise LabCheckError(f"actor_options should be a dict of Ray actor options, got "
                            f"{type(options).__name__}")
    unknown = set(options) - {"max_restarts", "max_task_retries"}
    if "max_retries" in unknown:
        raise LabCheckError("max_retries is the option of a task; an actor's calls are retried "
                            "with max_task_retries (and the actor restarted with "
                            "max_restarts).")
    if unknown:
        raise LabCheckError(f"use only max_restarts and max_task_retries here, not "
                            f"{sorted(unknown)}")

    def count(name: str) -> int:
        value = options.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < -1:
            raise LabCheckError(f"{name} must be an integer >= 0, or -1 for 'unlimited'; "
                                f"got {value!r}")
        return value

    restarts, retries = count("max_restarts"), count("max_task_retries")
    if restarts == 0:
        raise LabCheckError("with max_restarts 0 (the default) a dead actor stays dead, and "
                            "every call still queued on it fails with ActorDiedError. Allow "
                            "at least one restart.")
    if retries == 0:
        raise LabCheckError("the actor will restart, but the calls that were running or "
                            "queued when it died are not retried (max_task_retries 0, the "
                            "default): they fail with ActorUnavailableError. Allow at least "
                            "one retry.")
    return passed(f"max_restarts={restarts}, max_task_retries={retries}: Ray starts a new "
               "process for the actor (its __init__ runs again) and replays the lost calls.")


def check_actor_survived(result: Mapping, n_shards: int) -> str:
    """Task 5, after the run: every shard completed although the actor's process was killed,
    and a second process served some of them."""
    if result["failed"]:
        raise LabCheckError(f"{result['failed']} shards failed ({set(result['errors'])}); "
                            f"the options used were {result['options']}.")
    if result["completed"] != n_shards:
        raise LabCheckError(f"{result['completed']} of {n_shards} shards came back")
    if len(result["pids"]) < 2:
        raise LabCheckError("all shards came from one process: the kill did not happen "
                            "while work was queued (run the cell again)")
    return passed(f"all {n_shards} shards done by processes {result['pids']}: the actor died "
               f"(pid {result['killed_pid']}) and came back in "
               f"{result['recovery_s']:.1f} s.")
