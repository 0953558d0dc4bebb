"""labkit.check.distributed: every check accepts the right answer and rejects the typical wrong
ones (the inverse, another unit, a factor of 2 off, the wrong quantity, an unfilled ``...``)
with its own hint. Pure Python: no Ray, no torch."""

from __future__ import annotations

import pytest

from labkit.distributed import parallelism as dist
from labkit.check import LabCheckError
from labkit.check import distributed as check


# -- Task 1: the shortest task worth sending to Ray -------------------------------------------
OVERHEAD_MS = 0.8          # a pipelined task's overhead, ms
RIGHT_MS = OVERHEAD_MS / 0.10


def test_min_task_ms_accepts_the_right_answer(capsys):
    check.check_min_task_ms(RIGHT_MS, OVERHEAD_MS)
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,hint", [
    (RIGHT_MS / 1000, "seconds"),                       # seconds for milliseconds
    (RIGHT_MS * 1000, "microseconds"),
    (OVERHEAD_MS * 0.10, "multiplied"),                 # the inverse operation
    (OVERHEAD_MS, "overhead itself"),                   # the wrong quantity
    (RIGHT_MS * 2, "at most 10%"),                      # off by 2x
    (RIGHT_MS / 2, "at most 10%"),
    (..., "replace it with your answer"),                        # unfilled
    ("8 ms", "should be a number"),
])
def test_min_task_ms_rejects_typical_mistakes_with_their_hint(wrong, hint):
    with pytest.raises(LabCheckError, match=hint):
        check.check_min_task_ms(wrong, OVERHEAD_MS)


# -- Task 2: shards ---------------------------------------------------------------------------------
def _ceil_sized(items, n):
    size = -(-len(items) // n)
    return [items[i * size:(i + 1) * size] for i in range(n)]


def _floor_sized(items, n):
    size = len(items) // n
    return [items[i * size:(i + 1) * size] for i in range(n)]


def _strided(items, n):
    return [items[i::n] for i in range(n)]


def _extra_at_the_end(items, n):
    base, extra = divmod(len(items), n)
    sizes = [base] * (n - extra) + [base + 1] * extra
    starts = [sum(sizes[:i]) for i in range(n)]
    return [items[a:a + size] for a, size in zip(starts, sizes)]


def _one_too_few(items, n):
    return dist.make_shards(items, n - 1) if n > 1 else []


def test_make_shards_accepts_the_reference(capsys):
    check.check_make_shards(dist.make_shards)
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("fn,hint", [
    (_ceil_sized, "sizes"),                              # unbalanced
    (_floor_sized, "missing"),                           # items lost
    (_strided, "not contiguous"),                        # balanced but not in order
    (_extra_at_the_end, "first shards"),                 # the wrong shards get the extra item
    (_one_too_few, "exactly"),                           # off by one shard
    (lambda items, n: None, "list of lists"),            # an unfilled body returns None
    (lambda items, n: ..., "list of lists"),
])
def test_make_shards_rejects_typical_mistakes_with_their_hint(fn, hint):
    with pytest.raises(LabCheckError, match=hint):
        check.check_make_shards(fn)


# -- Task 3: Amdahl's parallel fraction -----------------------------------------------------
SPEEDUP, WORKERS = 1.6, 2
RIGHT_P = (1 - 1 / SPEEDUP) / (1 - 1 / WORKERS)          # 0.75


def test_parallel_fraction_accepts_the_right_answer(capsys):
    check.check_parallel_fraction(RIGHT_P, SPEEDUP, WORKERS)
    assert "✔" in capsys.readouterr().out
    check.check_parallel_fraction(dist.amdahl_parallel_fraction(2.3, 4), 2.3, 4)


@pytest.mark.parametrize("wrong,hint", [
    (RIGHT_P * 100, "percentage"),                       # percent for a fraction
    (SPEEDUP / WORKERS, "efficiency"),                   # the wrong quantity
    (1 - 1 / SPEEDUP, "divide by"),                      # off by 2x for N = 2
    (1 / SPEEDUP, "1 / S"),                              # the inverse
    (RIGHT_P * 1.1, "Solve"),                            # just wrong
    (..., "replace it with your answer"),
])
def test_parallel_fraction_rejects_typical_mistakes_with_their_hint(wrong, hint):
    with pytest.raises(LabCheckError, match=hint):
        check.check_parallel_fraction(wrong, SPEEDUP, WORKERS)


# -- Task 4: a task that fails for good ---------------------------------------------------------
P, RETRIES = 0.2, 3


def test_permanent_failure_accepts_the_right_answer(capsys):
    check.check_permanent_failure(P ** (1 + RETRIES), P, RETRIES)
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,hint", [
    (P ** RETRIES, "only the retries"),                  # forgot the first attempt
    (1 - P ** (1 + RETRIES), "succeeds"),                # the complement
    (P ** (1 + RETRIES) * 100, "percentage"),
    (P * (1 + RETRIES), "product"),                      # adds instead of multiplying
    (P ** (2 + RETRIES), "attempts fail"),               # one attempt too many
    (2 * P ** (1 + RETRIES), "attempts fail"),           # off by 2x
    (..., "replace it with your answer"),
])
def test_permanent_failure_rejects_typical_mistakes_with_their_hint(wrong, hint):
    with pytest.raises(LabCheckError, match=hint):
        check.check_permanent_failure(wrong, P, RETRIES)


# -- Task 5: actor options and the run that used them ----------------------------------------------
@pytest.mark.parametrize("good", [{"max_restarts": 1, "max_task_retries": 1},
                                  {"max_restarts": -1, "max_task_retries": 3}])
def test_actor_options_accepts_restart_plus_retry(good, capsys):
    check.check_actor_options(good)
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,hint", [
    ({}, "ActorDiedError"),                              # the defaults
    ({"max_task_retries": 1}, "ActorDiedError"),         # retries without a restart
    ({"max_restarts": 1}, "ActorUnavailableError"),      # a restart without retries
    ({"max_restarts": 1, "max_retries": 1}, "max_task_retries"),   # the task option
    ({"max_restarts": 1, "max_task_retries": 1, "num_cpus": 1}, "only"),
    ({"max_restarts": "1", "max_task_retries": 1}, "integer"),
    ({"max_restarts": True, "max_task_retries": 1}, "integer"),
    ({"max_restarts": -2, "max_task_retries": 1}, "integer"),
    (..., "dict"),                                       # unfilled
    ([("max_restarts", 1)], "dict"),
])
def test_actor_options_rejects_typical_mistakes_with_their_hint(wrong, hint):
    with pytest.raises(LabCheckError, match=hint):
        check.check_actor_options(wrong)


GOOD_RUN = {"failed": 0, "errors": [], "completed": 8, "pids": [11, 12], "killed_pid": 11,
            "recovery_s": 2.0, "options": {"max_restarts": 1, "max_task_retries": 1}}


def test_actor_survived_accepts_a_recovered_run(capsys):
    check.check_actor_survived(GOOD_RUN, 8)
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize("change,hint", [
    ({"failed": 6, "completed": 2, "errors": ["ActorDiedError"] * 6}, "failed"),
    ({"completed": 7}, "7 of 8"),
    ({"pids": [11]}, "one process"),
])
def test_actor_survived_rejects_runs_that_did_not_recover(change, hint):
    with pytest.raises(LabCheckError, match=hint):
        check.check_actor_survived({**GOOD_RUN, **change}, 8)


# -- the closing table ---------------------------------------------------------------------------
def test_prediction_rows_show_ratio_blank_and_missing():
    rows = check.prediction_rows({"a (s)": 2.0, "b (ms)": None, "c (x)": 1.0},
                                 {"a (s)": 5.0, "b (ms)": 3.0, "c (x)": None})
    assert rows == [["a (s)", 2.0, 5.0, "2.5x"], ["b (ms)", "-", 3.0, "-"],
                    ["c (x)", 1.0, "n/a", "-"]]


def test_every_public_check_is_tested_here():
    tested = {"check_min_task_ms", "check_make_shards", "check_parallel_fraction",
              "check_permanent_failure", "check_actor_options", "check_actor_survived",
              "prediction_rows"}
    assert set(check.__all__) == tested


def test_a_right_answer_close_to_a_typical_wrong_one_is_accepted():
    """At S = 1.805 on 2 workers, Amdahl's p (0.892) lies within 1.2 % of the efficiency S / N
    (0.9025): the right answer must pass, not get the efficiency hint."""
    speedup, workers = 1.805, 2
    p = (1 - 1 / speedup) / (1 - 1 / workers)
    check.check_parallel_fraction(p, speedup, workers)
