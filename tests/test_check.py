import pytest

from labkit.check import LabCheckError, expect, expect_close, passed


def test_expect_and_close(capsys):
    expect(True, "never shown")
    expect_close("x", 10.2, 10, rel=0.05)
    passed("good")
    assert capsys.readouterr().out == "✔ good\n"


def test_failures_explain_the_gap():
    with pytest.raises(LabCheckError, match="hint here"):
        expect(False, "hint here")
    with pytest.raises(LabCheckError, match=r"x = 20, expected about 10 \(2.00× the expected value\)\. try"):
        expect_close("x", 20, 10, hint="try")
    with pytest.raises(LabCheckError, match="should be a number"):
        expect_close("x", "ten", 10)
    assert issubclass(LabCheckError, AssertionError)


def test_passed_returns_a_string_that_notebooks_do_not_echo(capsys):
    message = passed("fine")
    assert message == "fine" and isinstance(message, str)
    assert message._ipython_display_() is None
    assert capsys.readouterr().out == "✔ fine\n"


def test_as_number():
    from labkit.check import as_number

    assert as_number("x", "2.5") == 2.5
    for bad in ("two", float("nan"), float("inf"), True, [1.0]):
        with pytest.raises(LabCheckError, match="x should be"):
            as_number("x", bad)


@pytest.mark.parametrize("stub", [..., None])
def test_an_unfilled_placeholder_says_to_replace_it(stub):
    from labkit.check import as_number

    with pytest.raises(LabCheckError, match="x is still .*replace it with your answer"):
        as_number("x", stub)


@pytest.mark.parametrize("wrong, why", [
    (2.0, "off by 2x"), (0.5, "the inverse ratio"), (1000.0, "milliseconds for seconds"),
    (-1.0, "the wrong sign"), (1.2, "20 % off")])
def test_expect_close_rejects_typical_wrong_answers_and_names_the_ratio(wrong, why):
    with pytest.raises(LabCheckError, match=r"expected about 1 \(.*× the expected value\)\. look again"):
        expect_close("speedup", wrong, 1.0, rel=0.1, hint="look again")


def test_expect_close_accepts_within_tolerance_only(capsys):
    expect_close("speedup", 1.04, 1.0, rel=0.05)
    with pytest.raises(LabCheckError):
        expect_close("speedup", 1.06, 1.0, rel=0.05)


def test_every_lab_check_returns_passed_and_the_base_is_shared(capsys):
    """ARC-10/ARC-05: one base; checks return Passed; prediction_rows lives in labkit.check."""
    import ast
    from pathlib import Path

    from labkit import check
    from labkit.check import capacity, distributed, storage

    assert storage.prediction_rows is check.prediction_rows is distributed.prediction_rows
    assert isinstance(capacity.check_weights(16.06, "llama-3-8b", "bf16"), check.Passed)
    assert isinstance(distributed.check_permanent_failure(0.2**4, 0.2, 3), check.Passed)
    for path in Path(check.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        helpers = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert not helpers & {"_ok", "_number", "_fail", "_close", "_off_by"}, path.name
        if path.name != "__init__.py":
            assert "Lab " in ast.get_docstring(tree), f"{path.name}: docstring names no lab"
