"""``python -m labkit doctor``: the workshop set-up self-test.

Checks what the course needs (Python, PyTorch, cores, memory, free disk, a working notebook
kernel) and what some labs compare against (fio, Chromium). Prints one line per check and,
for each problem, the fix in one line. Exits 0 when the course can run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit.machine.facts import usable_cores
from labkit.machine.scratch import scratch_root
from labkit.machine.tools import MIN_PYTHON, find_chromium, python_ok, tool_path

#: Minimums for running every notebook (each needs < 4 GiB of memory and < 2 GiB of scratch).
MIN_CORES = 2
MIN_MEMORY_GIB = 4.0
MIN_DISK_GIB = 2.0


@dataclass
class Check:
    """One check: ``status`` is ``ok``, ``warn`` (optional, the course still runs) or ``fail``."""

    name: str
    status: str
    detail: str
    fix: str = ""


def check_python() -> Check:
    """Python version."""
    version = ".".join(map(str, sys.version_info[:3]))
    if python_ok(MIN_PYTHON):
        return Check("python", "ok", f"Python {version} at {sys.executable}")
    return Check("python", "fail", f"Python {version} is too old",
                 f"install Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ and run `make distclean setup`")


def check_torch() -> Check:
    """PyTorch imports; which device it will use."""
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - any import failure is the same problem for learners
        return Check("torch", "fail", f"cannot import torch: {err}", "run `make setup` and use the .venv kernel")
    device = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return Check("torch", "ok", f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads")


def check_cores() -> Check:
    """Usable CPU cores."""
    n = usable_cores()
    if n >= MIN_CORES:
        return Check("cores", "ok", f"{n} usable CPU cores")
    return Check("cores", "warn", f"{n} usable CPU core; notebooks will take about twice as long",
                 f"give the machine or container {MIN_CORES}+ cores")


def check_memory() -> Check:
    """Available memory."""
    import psutil

    mem = psutil.virtual_memory()
    avail = mem.available / 2**30
    detail = f"{avail:.1f} GiB available of {mem.total / 2**30:.1f} GiB"
    if avail >= MIN_MEMORY_GIB:
        return Check("memory", "ok", detail)
    return Check("memory", "fail", detail,
                 f"close other programs or give the machine {MIN_MEMORY_GIB:.0f}+ GiB free memory")


def check_disk(path: str | os.PathLike | None = None) -> Check:
    """Free disk space where the labs write scratch files (:func:`~labkit.machine.scratch.scratch_root`, or ``path``).

    The folder need not exist yet (the labs create it): the disk is read at its nearest
    existing parent, as :func:`labkit.machine.scratch.check_free_space` does.
    """
    import shutil

    where = Path(path) if path else scratch_root()
    probe = where.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    detail = f"{free:.1f} GiB free at {where}" + ("" if probe == where.absolute() else
                                                    f" (not created yet; disk of {probe})")
    if free >= MIN_DISK_GIB:
        return Check("disk", "ok", detail)
    return Check("disk", "fail", detail,
                 f"free {MIN_DISK_GIB:.0f}+ GiB there, or set LABKIT_SCRATCH to a folder on a larger disk")


def check_tool(name: str, why: str, install: str, path: str | None = None) -> Check:
    """An optional command-line tool (found with :func:`labkit.machine.tools.tool_path` unless
    ``path`` says where it is)."""
    path = path or tool_path(name)
    if path:
        return Check(name, "ok", f"{name} at {path}")
    return Check(name, "warn", f"{name} not found ({why})", install)


def check_kernel(timeout_s: float = 60.0) -> Check:
    """Start the notebooks' kernel (python3) and import torch and labkit inside it."""
    try:
        from jupyter_client.manager import start_new_kernel
    except Exception as err:  # noqa: BLE001
        return Check("kernel", "fail", f"jupyter_client missing: {err}", "run `make setup`")
    code = "import sys, torch, labkit; print(sys.executable, torch.__version__)"
    km = kc = None
    try:
        km, kc = start_new_kernel(kernel_name="python3", startup_timeout=timeout_s,
                                 stderr=subprocess.DEVNULL)  # hides its "TCP without encryption" notice
        out: list[str] = []
        reply = kc.execute_interactive(code, timeout=timeout_s,
                                       output_hook=lambda msg: out.append(msg["content"].get("text", "")))
        if reply["content"]["status"] != "ok":
            err = reply["content"].get("ename", "error")
            return Check("kernel", "fail", f"kernel started but `import torch, labkit` failed ({err})",
                         "run `make setup`, then choose the python3 kernel of .venv")
        return Check("kernel", "ok", "python3 kernel runs: " + "".join(out).strip())
    except Exception as err:  # noqa: BLE001
        return Check("kernel", "fail", f"the python3 kernel did not start: {err}",
                     "run `make setup`; then `.venv/bin/python -m ipykernel install --sys-prefix`")
    finally:
        if kc is not None:
            kc.stop_channels()
        if km is not None:
            km.shutdown_kernel(now=True)


def run_checks(check_kernel_too: bool = True) -> list[Check]:
    """Run every check and return them in order."""
    checks = [check_python(), check_torch(), check_cores(), check_memory(), check_disk(),
              check_tool("fio", "the storage lab compares against it", "install it: `sudo apt-get install fio` "
                         "(macOS: `brew install fio`)"),
              check_tool("chromium", "the browser test of the book uses it",
                         "install it: `sudo apt-get install chromium` (or set $CHROMIUM)",
                         path=find_chromium())]
    if check_kernel_too:
        checks.append(check_kernel())
    return checks


def main(json_output: bool = False, check_kernel: bool = True) -> int:
    """Print the checks; return 0 when nothing failed, 1 otherwise."""
    checks = run_checks(check_kernel_too=check_kernel)
    ready = all(c.status != "fail" for c in checks)
    if json_output:
        print(json.dumps({"ready": ready, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"[{c.status:>4}] {c.name:<8} {c.detail}")
            if c.fix and c.status != "ok":
                print(f"       fix: {c.fix}")
        print("Ready: this machine can run the course." if ready
              else "Not ready: fix the [fail] lines above, then run `python -m labkit doctor` again.")
    return 0 if ready else 1
