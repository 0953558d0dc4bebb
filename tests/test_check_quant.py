"""labkit.check.quant: every check accepts the right answer and rejects the typical wrong
ones (the inverse ratio, a percentage for a ratio, a value off by 2x, the wrong row, an
unfilled ``...``) with its own hint."""

import pytest

from labkit.check import LabCheckError
from labkit.check import quant as check

ROWS = [
    {"precision": "fp32", "bytes": 400_000, "decode_tok_s": 20.0, "perplexity": 60.0,
     "top1_agreement": 1.0},
    {"precision": "bf16", "bytes": 200_000, "decode_tok_s": 15.0, "perplexity": 60.06,
     "top1_agreement": 0.98},
    {"precision": "int8", "bytes": 101_000, "decode_tok_s": 29.0, "perplexity": 60.3,
     "top1_agreement": 0.95},
    {"precision": "int4-g32", "bytes": 62_500, "decode_tok_s": 44.0, "perplexity": 63.0,
     "top1_agreement": 0.8},
    {"precision": "int4-g64", "bytes": 56_000, "decode_tok_s": 46.0, "perplexity": 70.0,
     "top1_agreement": 0.7},
]

CORE_ROWS = [
    {"precision": "fp32", "threads": 1, "decode_tok_s": 20.0},
    {"precision": "fp32", "threads": 2, "decode_tok_s": 24.0},
    {"precision": "int8", "threads": 1, "decode_tok_s": 29.0},
    {"precision": "int8", "threads": 2, "decode_tok_s": 52.2},
]

OUTLIERS = [
    {"layer": 0, "name": "wqkv", "absmax": 5.0, "ratio": 4.0, "channel": 3},
    {"layer": 3, "name": "w_down", "absmax": 300.0, "ratio": 90.0, "channel": 17},
    {"layer": 5, "name": "w_gate_up", "absmax": 9.0, "ratio": 6.0, "channel": 1},
]


def rejects(func, *args, match):
    with pytest.raises(LabCheckError, match=match):
        func(*args)


def test_row():
    assert check.row(ROWS, "int8")["bytes"] == 101_000
    rejects(check.row, ROWS, "int3", match="no row for 'int3'")


def test_check_bytes_ratio():
    assert "int8 stores" in check.check_bytes_ratio(101_000 / 400_000, ROWS)
    rejects(check.check_bytes_ratio, 400_000 / 101_000, ROWS, match="fp32 / int8")
    rejects(check.check_bytes_ratio, 0.25, ROWS, match="counts the int8 weights only")
    rejects(check.check_bytes_ratio, 0.5, ROWS, match="bf16 row's ratio")       # wrong row
    rejects(check.check_bytes_ratio, 2 * 101_000 / 400_000, ROWS, match="expected about 0.2525")
    rejects(check.check_bytes_ratio, ..., ROWS, match="still `...`")
    rejects(check.check_bytes_ratio, "a quarter", ROWS, match="should be a number")


def test_check_speedup():
    assert "1.45x as fast" in check.check_speedup(29 / 20, ROWS)
    rejects(check.check_speedup, 20 / 29, ROWS, match="fp32 / int8")
    rejects(check.check_speedup, 145.0, ROWS, match="percentage")
    rejects(check.check_speedup, 44 / 20, ROWS, match="int4-g32 row's speedup")
    rejects(check.check_speedup, 2 * 29 / 20, ROWS, match="expected about 1.45")
    rejects(check.check_speedup, ..., ROWS, match="still `...`")
    # another precision may be asked for
    assert "int4-g32 decodes" in check.check_speedup(44 / 20, ROWS, "int4-g32")


def test_core_gains():
    assert check.core_gains(CORE_ROWS) == pytest.approx({"fp32": 1.2, "int8": 1.8})
    rejects(check.core_gains, CORE_ROWS[1:], match="no 1-thread row for 'fp32'")


def test_check_core_gain_accepts_and_tells_the_story_the_data_show():
    message = check.check_core_gain({"fp32": 1.2, "int8": 1.8}, CORE_ROWS)
    assert "int8 gains more than fp32, as expected" in message
    # the data contradict the explanation: say so, neutrally, without the causal story
    flipped = [dict(r) for r in CORE_ROWS]
    flipped[1]["decode_tok_s"], flipped[3]["decode_tok_s"] = 36.0, 31.9
    message = check.check_core_gain({"fp32": 1.8, "int8": 1.1}, flipped)
    assert "does not show the expected pattern" in message
    assert "as expected" not in message and "arithmetic rather than" not in message
    slower = [dict(r) for r in CORE_ROWS]
    slower[1]["decode_tok_s"], slower[3]["decode_tok_s"] = 10.0, 14.5
    message = check.check_core_gain({"fp32": 0.5, "int8": 0.5}, slower)
    assert "does not show the expected pattern" in message and "as expected" not in message
    one = [r for r in CORE_ROWS if r["threads"] == 1]
    assert "one core" in check.check_core_gain({"fp32": 1.0, "int8": 1.0}, one)


def test_check_core_gain_rejects_typical_mistakes():
    rejects(check.check_core_gain, {"fp32": 1 / 1.2, "int8": 1 / 1.8}, CORE_ROWS,
            match="1 thread / 2 threads")
    rejects(check.check_core_gain, {"fp32": 1.8, "int8": 1.2}, CORE_ROWS,
            match="is int8's gain")                                    # wrong row
    rejects(check.check_core_gain, {"fp32": 2.4, "int8": 1.8}, CORE_ROWS,
            match=r"expected 1\.2")                                     # off by 2x
    rejects(check.check_core_gain, {"fp32": 1.2}, CORE_ROWS, match="exactly the keys")
    rejects(check.check_core_gain, 1.5, CORE_ROWS, match="must be a dict")
    rejects(check.check_core_gain, {"fp32": ..., "int8": 1.8}, CORE_ROWS, match="still `...`")


def test_check_perplexity_change():
    want = 100 * (60.3 / 60 - 1)
    assert "+0.50 %" in check.check_perplexity_change(want, ROWS)
    rejects(check.check_perplexity_change, want / 100, ROWS, match="is a fraction")
    rejects(check.check_perplexity_change, 60.3 / 60, ROWS, match="ratio of the perplexities")
    rejects(check.check_perplexity_change, 100 * (60 / 60.3 - 1), ROWS,
            match="not the other way round")
    rejects(check.check_perplexity_change, 100 * (63 / 60 - 1), ROWS,
            match="int4-g32 row's change")
    rejects(check.check_perplexity_change, 2 * want, ROWS, match=r"expected \+0\.500")
    rejects(check.check_perplexity_change, ..., ROWS, match="still `...`")


def test_outlier_kind_and_check_outlier_layer():
    assert check.outlier_kind(OUTLIERS) == "w_down"
    assert "w_down: in layer 3" in check.check_outlier_layer("w_down", OUTLIERS)
    rejects(check.check_outlier_layer, "w_gate_up", OUTLIERS, match="is not the worst")
    rejects(check.check_outlier_layer, "down_proj", OUTLIERS, match="is not a projection")
    rejects(check.check_outlier_layer, 3, OUTLIERS, match="layer number")
    rejects(check.check_outlier_layer, ..., OUTLIERS, match="still `...`")


def test_recommended_and_check_recommendation():
    assert check.recommended(ROWS) == "int8"
    assert check.recommended(ROWS, max_loss_pct=10, min_agreement=0.75) == "int4-g32"
    assert "int8: 29.0 tok/s" in check.check_recommendation("int8", ROWS)
    rejects(check.check_recommendation, "int4-g64", ROWS, match="over the 3 % budget")
    rejects(check.check_recommendation, "int4-g32", ROWS, match="over the 3 % budget")
    low_agreement = [dict(r) for r in ROWS]
    low_agreement[3]["perplexity"] = 60.5
    rejects(check.check_recommendation, "int4-g32", low_agreement, match="only 80 %")
    rejects(check.check_recommendation, "bf16", ROWS, match="int8 is faster")
    rejects(check.check_recommendation, "fp8", ROWS, match="was not measured")
    rejects(check.check_recommendation, ..., ROWS, match="still `...`")
