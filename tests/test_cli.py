"""The command line (`python -m labkit`): errors that say what is wrong and what to do."""

import sys

from labkit import __main__ as cli


def test_unknown_benchmark_lists_the_choices(capsys):
    assert cli.main(["bench", "nosuch"]) == 2
    assert "choose one of: decode" in capsys.readouterr().err


def test_a_missing_dependency_is_named_not_blamed_on_the_course(tmp_path, monkeypatch, capsys):
    (tmp_path / "needs_missing.py").write_text("import surely_not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.BENCHES, "x", "needs_missing:run")
    assert cli.main(["bench", "x"]) == 2
    err = capsys.readouterr().err
    assert "'surely_not_installed_pkg'" in err and "make setup" in err
    assert "not available in this version" not in err
    sys.modules.pop("needs_missing", None)


def test_a_missing_bench_module_says_update(monkeypatch, capsys):
    monkeypatch.setitem(cli.BENCHES, "y", "labkit.no_such_module:run")
    assert cli.main(["bench", "y"]) == 2
    assert "not available in this version of the course" in capsys.readouterr().err


def test_every_bench_points_at_a_function_in_its_new_home():
    import importlib

    for name, target in cli.BENCHES.items():
        module_name, func = target.split(":")
        assert callable(getattr(importlib.import_module(module_name), func)), name
    assert cli.BENCHES["decode"].startswith("labkit.inference.")
    assert cli.BENCHES["quant"].startswith("labkit.inference.")
