"""Every public function of labkit.check.inference (Lab 1): the right answer passes, and the
typical wrong answers (inverse, milliseconds for seconds, off by 2x, the wrong row, an
unfilled ``...``) are rejected, each with its own hint."""

from __future__ import annotations

import pytest

from labkit.planning import catalog
from labkit.check import LabCheckError
from labkit.check import inference as check
from labkit.inference.generation import GenerationTimings


def timings(ttft=0.2, steps=(0.03, 0.03, 0.03), prompt=10, batch=1):
    return GenerationTimings(batch_size=batch, prompt_tokens=prompt, new_tokens=len(steps) + 1,
                             kv_cache=True, threads=1, ttft_s=ttft, step_s=tuple(steps),
                             total_s=ttft + sum(steps))


def test_every_public_function_is_tested_here():
    tested = {"answer_time", "check_answer_time", "check_prefill_ratio", "kv_slope_ms",
              "check_kv_slope", "reference_batch", "check_batch_choice", "check_roofline",
              "gpu_bandwidth_GBps", "gpu_roofline_tok_s", "check_gpu_rooflines"}
    assert set(check.__all__) == tested


# -- Task 1 ----------------------------------------------------------------------------------
def test_answer_time():
    assert check.answer_time(timings(), 200) == pytest.approx(0.2 + 199 * 0.03)


def test_check_answer_time():
    t = timings()
    right = 0.2 + 199 * 0.03
    assert "200 tokens" in check.check_answer_time(right, t)
    assert "close enough" in check.check_answer_time(0.2 + 200 * 0.03, t)   # n x tpot
    for wrong, hint in [(200 * 0.03, "leaves out the time to first token"),
                        (199 * 0.03, "leaves out the time to first token"),
                        (right * 1e3, "milliseconds"),
                        (2 * right, "expected about"),
                        (..., "replace it with your answer"),
                        (None, "replace it with your answer")]:
        with pytest.raises(LabCheckError, match=hint):
            check.check_answer_time(wrong, t)


# -- Task 2 ----------------------------------------------------------------------------------
def test_check_prefill_ratio():
    t = timings(ttft=0.1, prompt=256)
    right = t.prefill_tok_s / t.decode_tok_s
    assert "more tokens per second" in check.check_prefill_ratio(right, t)
    for wrong, hint in [(1 / right, "inverse"), (2 * right, "expected"),
                        (..., "replace it with your answer")]:
        with pytest.raises(LabCheckError, match=hint):
            check.check_prefill_ratio(wrong, t)


# -- Task 3 ----------------------------------------------------------------------------------
def test_kv_slope_ms():
    off = timings(steps=(0.10, 0.12, 0.14, 0.16))
    assert check.kv_slope_ms(off) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="at least 2"):
        check.kv_slope_ms(timings(steps=(0.1,)))


def test_check_kv_slope():
    off = timings(steps=(0.10, 0.12, 0.14, 0.16), prompt=16)      # 20 ms per position
    on = timings(steps=(0.030, 0.031, 0.030, 0.031), prompt=16)   # about flat
    assert "each extra token" in check.check_kv_slope(20.0, off, on)
    intercept = 100.0 - 20.0 * 16
    for wrong, hint in [(0.020, "seconds per token"),         # forgot the x 1000
                        (check.kv_slope_ms(on), "cache-\\*on\\*"),
                        (intercept, "intercept"),
                        (40.0, "polyfit"),                      # off by 2x
                        (..., "replace it with your answer")]:
        with pytest.raises(LabCheckError, match=hint):
            check.check_kv_slope(wrong, off, on)


# -- Task 4 ----------------------------------------------------------------------------------
ROWS = [{"batch": 1, "step_ms": 30, "tok_s": 33}, {"batch": 8, "step_ms": 80, "tok_s": 100},
        {"batch": 32, "step_ms": 200, "tok_s": 160}]


def test_reference_batch():
    assert check.reference_batch(ROWS, 100) == 8
    assert check.reference_batch(ROWS, 1000) == 32
    with pytest.raises(ValueError, match="no batch size"):
        check.reference_batch(ROWS, 10)


def test_check_batch_choice():
    assert "batch 8" in check.check_batch_choice(8, ROWS, 100)
    for wrong, hint in [(32, "over the"),                       # ignores the budget
                        (1, "gives more tokens/s"),             # within budget, not the best
                        (4, "not one of the measured"),         # a batch never run
                        (ROWS[1], "whole row"),                 # the row, not its batch
                        (100, "not one of the measured"),       # the tok_s column
                        (True, "not one of the measured"),
                        (..., "not one of the measured")]:
        with pytest.raises(LabCheckError, match=hint):
            check.check_batch_choice(wrong, ROWS, 100)


# -- Task 5 ----------------------------------------------------------------------------------
RESULT = {"batch_size": 1, "bandwidth_GBps": 20.0, "weight_bytes": 5e8, "decode_tok_s": 24.0}


def test_check_roofline():
    assert "roofline 40.0 tok/s" in check.check_roofline(40.0, RESULT)
    for wrong, hint in [(40e-9, "10\\^9"), (40e9, "10\\^9"),
                        (10.0, "4x"), (160.0, "4x"),
                        (1 / 40.0, "inverse"),
                        (5.0, "8x"), (320.0, "8x"),
                        (80.0, "expected 40"),                  # off by 2x
                        (RESULT["decode_tok_s"], "expected 40"),  # the measured speed
                        (..., "replace it with your answer")]:
        with pytest.raises(LabCheckError, match=hint):
            check.check_roofline(wrong, RESULT)


# -- Task 6 ----------------------------------------------------------------------------------
def test_gpu_bandwidth_lookup():
    """A data lookup, not a check: the catalog's cited figure, or its marked third-party one."""
    bw, source = check.gpu_bandwidth_GBps("H100")
    assert source == "cited" and bw == catalog.accelerator("H100")["memory_bandwidth_GBps"]
    assert check.gpu_bandwidth_GBps("L4") == (300.0, "cited")
    bw, source = check.gpu_bandwidth_GBps("A10G")
    assert source == "third-party"                               # no vendor figure published
    assert bw == catalog.accelerator("A10G")["unofficial"]["memory_bandwidth_GBps"]
    with pytest.raises(ValueError):
        check.gpu_bandwidth_GBps("no-such-gpu")


def test_gpu_roofline_tok_s():
    # Llama 3 8B in bf16 streams 15.0 GB per token (untied: the input embedding is not read)
    assert check.gpu_roofline_tok_s("L4", 15.0e9) == pytest.approx(20.0)
    assert check.gpu_roofline_tok_s("H100", 15.0e9) == pytest.approx(3350 / 15.0)


def test_check_gpu_rooflines():
    gpus = ["A10G", "L4", "H100"]
    answers = {g: check.gpu_roofline_tok_s(g, 15e9) for g in gpus}
    assert "L4 20" in check.check_gpu_rooflines(answers, 15e9, gpus)
    for wrong, hint in [({**answers, "L4": answers["L4"] / 1e9}, "10\\^9"),
                        ({**answers, "L4": 1 / answers["L4"]}, "inverse"),
                        ({**answers, "L4": answers["H100"]}, "H100's roofline"),  # wrong row
                        ({**answers, "L4": 1.5 * answers["L4"]}, "L4: .* expected 20"),
                        ({**answers, "L4": 300 / 16.06}, "L4: .* expected 20"),  # all params
                        ({**answers, "L4": ...}, "replace it with your answer"),
                        ({"A10G": answers["A10G"], "L4": answers["L4"]}, "missing \\['H100'\\]"),
                        ({}, "one roofline in tokens/s per GPU"),
                        ([20.0], "should be a dict")]:
        with pytest.raises(LabCheckError, match=hint):
            check.check_gpu_rooflines(wrong, 15e9, gpus)
    with pytest.raises(LabCheckError, match="unknown"):
        check.check_gpu_rooflines({"Z9": 1.0}, 15e9)
