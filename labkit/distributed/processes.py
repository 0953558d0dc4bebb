"""Finding, marking and ending the processes of the course's local Ray sessions.

Every local session marks its processes (:data:`SESSION_ENV`, :data:`OWNER_ENV`) and its
folders (:data:`OWNER_FILE`) with its owner, so that :func:`cleanup_dead_sessions` can end the
processes and remove the folders of a session whose owner died without shutting down (a killed
kernel), and :func:`ray_processes` can prove that nothing is left. Imports psutil (on use) and
:mod:`labkit.machine.scratch`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from labkit.machine.scratch import scratch_root


#: Environment variable carried by every process of a local session, set to the session id;
#: it is how the process table is searched for leftovers.
SESSION_ENV = "LABKIT_RAY_SESSION"
#: Environment variable carried by every process of a local session, set to
#: ``<pid>:<start time>`` of the process that started the session (its owner), so leftovers of
#: a dead owner can be found.
OWNER_ENV = "LABKIT_RAY_OWNER"
#: File written into every folder a session creates (its Ray temp folder, the retry markers),
#: holding the owner's pid and start time, and the session id.
OWNER_FILE = "labkit-owner.json"
#: Names of Ray's native executables (Python processes of Ray run a script inside Ray's package,
#: worker processes rename themselves ``ray::<what they run>``).
_RAY_EXECUTABLES = ("raylet", "gcs_server", "plasma_store")


def _psutil():
    import psutil

    return psutil


def marked_processes(session_id: str | None = None) -> list:
    """Processes of this user whose environment carries :data:`SESSION_ENV` (any value, or
    ``session_id``)."""
    psutil = _psutil()
    uid = os.getuid() if hasattr(os, "getuid") else None
    found = []
    for proc in psutil.process_iter(["pid", "uids"]):
        try:
            if proc.pid == os.getpid():
                continue
            if uid is not None and proc.info["uids"] is not None and proc.info["uids"].real != uid:
                continue
            value = proc.environ().get(SESSION_ENV)
        except (psutil.Error, OSError):
            continue
        if value is not None and (session_id is None or value == session_id):
            found.append(proc)
    return found


def _ray_package_dir() -> str | None:
    """The folder of the installed ``ray`` package (without importing it), or None."""
    try:
        spec = importlib.util.find_spec("ray")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.realpath(list(spec.submodule_search_locations)[0])


def _is_ray_process(name: str, cmdline: Sequence[str], ray_dir: str | None) -> bool:
    """Whether a process is one of Ray's, by its executable only: a Ray binary
    (:data:`_RAY_EXECUTABLES`), a worker (``ray::...``), or a Python running a script inside
    Ray's package (the dashboard, the log monitor, the autoscaler monitor). A command line that
    merely mentions a folder called ``ray`` is not enough."""
    if name in _RAY_EXECUTABLES or name.startswith("ray::"):
        return True
    if not cmdline:
        return False
    if cmdline[0].startswith("ray::"):
        return True
    if not ray_dir or not os.path.basename(cmdline[0]).startswith("python"):
        return False
    for arg in cmdline[1:]:
        if arg.startswith("-"):
            continue            # interpreter options such as -u
        return os.path.realpath(arg).startswith(ray_dir + os.sep)
    return False


def _session_of(proc) -> str | None:
    """The :data:`SESSION_ENV` mark of ``proc`` or of its nearest marked ancestor below this
    process (Ray's workers and agents rename themselves, which blanks the environment that
    ``/proc`` shows, so their raylet's mark counts)."""
    psutil = _psutil()
    me = os.getpid()
    while proc is not None and proc.pid not in (me, 0, 1):
        with contextlib.suppress(psutil.Error, OSError):
            mark = proc.environ().get(SESSION_ENV)
            if mark is not None:
                return mark
        try:
            proc = proc.parent()
        except psutil.Error:
            return None
    return None


def ray_descendants(session_id: str | None = None) -> list:
    """Child processes (recursive) of this process that are Ray's (``_is_ray_process``);
    with ``session_id``, only those not marked as another session's."""
    psutil = _psutil()
    ray_dir = _ray_package_dir()
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if not _is_ray_process(proc.name(), proc.cmdline(), ray_dir):
                continue
            if session_id is not None and _session_of(proc) not in (None, session_id):
                continue
        except (psutil.Error, OSError):
            continue
        found.append(proc)
    return found


def owner_tag(pid: int | None = None) -> str:
    """``<pid>:<start time>`` of a process (default: this one): a pid alone can be reused."""
    psutil = _psutil()
    proc = psutil.Process(pid or os.getpid())
    return f"{proc.pid}:{proc.create_time():.3f}"


def _owner_alive(tag: str) -> bool:
    """Whether the process named by an :func:`owner_tag` still runs (same pid, same start)."""
    psutil = _psutil()
    try:
        pid_text, started = tag.split(":", 1)
        proc = psutil.Process(int(pid_text))
        return abs(proc.create_time() - float(started)) < 0.01 and \
            proc.status() != psutil.STATUS_ZOMBIE
    except (ValueError, psutil.NoSuchProcess):
        return False
    except psutil.Error:            # exists, but we may not look at it: treat as alive
        return True


def write_owner_file(folder: Path, session_id: str | None = None) -> None:
    """Mark a folder as made by this process (see :func:`cleanup_dead_sessions`)."""
    (folder / OWNER_FILE).write_text(json.dumps({"owner": owner_tag(),
                                                 "session_id": session_id}))


def _sweep_roots() -> list[Path]:
    roots = [scratch_root(), Path(tempfile.gettempdir())]
    return [r for i, r in enumerate(roots) if r.is_dir() and r not in roots[:i]]


def _dead_session_folders() -> list[Path]:
    """``ray-*`` folders (scratch area, system temp folder) whose :data:`OWNER_FILE` names
    an owner that no longer runs."""
    found = []
    for root in _sweep_roots():
        for folder in root.glob("ray-*"):
            try:
                owner = json.loads((folder / OWNER_FILE).read_text()).get("owner", "")
            except (OSError, ValueError, AttributeError):
                continue        # not a folder of the course's sessions (or not ours to read)
            if owner and not _owner_alive(owner):
                found.append(folder)
    return found


def _uses_folder(proc, folders: Sequence[str]) -> bool:
    """Whether ``proc`` has a file open in, or its command line names, one of ``folders``
    (Ray's processes write their logs into their session's temp folder)."""
    paths = [f.path for f in proc.open_files()] + list(proc.cmdline())
    return any(folder in path for path in paths for folder in folders)


def cleanup_dead_sessions(grace_s: float = 5.0) -> dict:
    """End the processes and remove the folders of local Ray sessions whose owner has died.

    A kernel killed while its Ray session ran (a time limit, "Restart kernel" after a hang)
    never runs its shutdown; some of Ray's processes (its agents) can then live on, adopted by
    PID 1, and its temp folders stay. Only what carries the course's own marks is touched:

    - ``ray-*`` folders in the scratch area or the system temp folder holding an
      :data:`OWNER_FILE` that names a process no longer running;
    - processes of this user whose environment holds :data:`SESSION_ENV` and an
      :data:`OWNER_ENV` naming such a process, or that have a file open in (or name in their
      command line) one of those folders. The second test is needed because Ray's worker and
      agent processes rename themselves (``ray::DashboardAgent``), which overwrites the
      environment that ``/proc`` shows.

    Sessions of live owners (another notebook, a test running beside this one) are left
    alone. :class:`~labkit.distributed.session.RaySession` calls this before it starts Ray. Returns
    ``{"pids": [...], "folders": [...]}`` of what was ended and removed.
    """
    psutil = _psutil()
    folders = _dead_session_folders()
    names = [str(f) for f in folders]
    uid = os.getuid() if hasattr(os, "getuid") else None
    dead_procs = []
    for proc in psutil.process_iter(["pid", "uids"]):
        try:
            if proc.pid == os.getpid() or (uid is not None and proc.info["uids"] is not None
                                           and proc.info["uids"].real != uid):
                continue
            env = proc.environ()
            owner = env.get(OWNER_ENV) if SESSION_ENV in env else None
            if (owner and not _owner_alive(owner)) or (names and _uses_folder(proc, names)):
                dead_procs.append(proc)
        except (psutil.Error, OSError):
            continue
    for proc in dead_procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    gone, alive = psutil.wait_procs(dead_procs, timeout=grace_s) if dead_procs else ([], [])
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if alive:
        psutil.wait_procs(alive, timeout=grace_s)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return {"pids": sorted(p.pid for p in dead_procs), "folders": names}


def ray_processes(session_id: str | None = None) -> list[dict]:
    """Ray processes in the process table: those of the course's local sessions (marked with
    :data:`SESSION_ENV`, or only ``session_id``'s) and Ray's child processes of this process
    (with ``session_id``: those not marked as another session's).

    Returns ``[{"pid", "name", "cmdline"}]`` (the command line cut to 120 characters); an
    empty list means nothing is left.
    """
    psutil = _psutil()
    procs = {p.pid: p for p in [*marked_processes(session_id), *ray_descendants(session_id)]}
    rows = []
    for pid, proc in sorted(procs.items()):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            rows.append({"pid": pid, "name": proc.name(),
                         "cmdline": " ".join(proc.cmdline())[:120]})
        except (psutil.Error, OSError):
            continue
    return rows
