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
    for bad in ("two", None, float("nan"), float("inf")):
        with pytest.raises(LabCheckError, match="x should be"):
            as_number("x", bad)
