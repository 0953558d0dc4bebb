import json
import subprocess
import sys

from labkit.machine import doctor


def test_checks_pass_on_the_course_machine():
    checks = doctor.run_checks(check_kernel_too=False)
    names = [c.name for c in checks]
    assert names == ["python", "torch", "cores", "memory", "disk", "fio", "chromium"]
    assert all(c.status in ("ok", "warn", "fail") for c in checks)
    assert not [c for c in checks if c.status == "fail"]


def test_missing_tool_is_a_warning_with_a_fix():
    check = doctor.check_tool("definitely-not-a-tool-xyz", "why", "install it")
    assert (check.status, check.fix) == ("warn", "install it")


def test_too_little_disk_fails_with_a_one_line_fix(monkeypatch, tmp_path):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10 * 2**30, 9 * 2**30, 2**29))
    check = doctor.check_disk(tmp_path)
    assert check.status == "fail" and "LABKIT_SCRATCH" in check.fix and "\n" not in check.fix


def test_scratch_folder_not_created_yet_is_read_at_its_parent(tmp_path, monkeypatch):
    # the labs create LABKIT_SCRATCH on first use, so doctor must not fail before it exists
    monkeypatch.setenv("LABKIT_SCRATCH", str(tmp_path / "not" / "yet"))
    check = doctor.check_disk()
    assert check.status == "ok" and "not created yet" in check.detail
    assert str(tmp_path / "not" / "yet") in check.detail


def test_cli_json_and_exit_code():
    out = subprocess.run([sys.executable, "-m", "labkit", "doctor", "--json"], capture_output=True,
                         text=True, timeout=120)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["ready"] is True
    assert {c["name"] for c in report["checks"]} >= {"python", "torch", "kernel"}
    assert [c for c in report["checks"] if c["name"] == "kernel"][0]["status"] == "ok"


def test_cli_exits_non_zero_when_not_ready(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "check_memory",
                        lambda: doctor.Check("memory", "fail", "0.5 GiB available", "close programs"))
    assert doctor.main(check_kernel=False) == 1
    out = capsys.readouterr().out
    assert "fix: close programs" in out and "Not ready" in out


def test_unknown_benchmark_is_a_clear_error(capsys):
    from labkit.__main__ import main

    assert main(["bench", "nope"]) == 2
    assert "choose one of" in capsys.readouterr().err
