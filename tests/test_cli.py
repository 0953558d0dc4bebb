"""The command line (`python -m labkit`): errors that say what is wrong and what to do."""

import subprocess
import sys

import pytest

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
    assert cli.BENCHES == {
        "decode": "labkit.inference.decode_bench:bench_decode_cli",
        "quant": "labkit.inference.quant_bench:bench_quant_cli",
        "storage": "labkit.storage.bench:bench_storage_cli",
        "serve": "labkit.serving.bench:bench_serve_cli",
        "route": "labkit.serving.routebench:bench_route_cli",
    }


def test_no_bench_goes_through_a_deprecated_path():
    """Each bench's module imports without a DeprecationWarning (in a fresh interpreter)."""
    code = ("import importlib\n"
            "for target in %r:\n"
            "    module, func = target.split(':')\n"
            "    getattr(importlib.import_module(module), func)\n") % list(cli.BENCHES.values())
    run = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("command, module, func", [
    ("serve", "labkit.serving.process", "serve_cli"),
    ("route", "labkit.serving.router", "route_cli"),
])
def test_serve_and_route_run_their_new_homes(monkeypatch, command, module, func):
    import importlib

    seen = []
    monkeypatch.setattr(importlib.import_module(module), func, lambda argv: seen.append(argv) or 0)
    assert cli.main([command, "--help-me"]) == 0
    assert seen == [["--help-me"]]
