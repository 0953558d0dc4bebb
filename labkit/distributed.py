"""Distributed computing for the course: Ray (locally and on KubeRay) and torch.distributed.

Three parts, each usable from a notebook, a test or the command line:

**Ray.** :class:`RaySession` starts Ray the course's way and always stops it. Locally it
starts a private cluster with :func:`default_num_cpus` CPUs (2 to 4: the usable cores), no
dashboard web UI, usage statistics off, an object store
capped at :data:`RAY_OBJECT_STORE_BYTES`, token authentication with a token that lives only
in the environment (nothing is written to ``~/.ray``) and its temp folder inside the course's
scratch area (:mod:`labkit.scratch`). When ``RAY_ADDRESS`` is set (a RayJob on KubeRay sets it
for its entrypoint) the same code connects to that cluster instead, so one script runs on a
laptop and on EKS unchanged. Leaving the session (``with``, :meth:`RaySession.shutdown`, a
failing notebook cell after :meth:`RaySession.close_on_cell_error`, or interpreter exit)
shuts Ray down, waits for every process the session started, ends stragglers by their pid,
removes the temp folder and raises if any Ray process is left. Every local session marks its
processes (:data:`SESSION_ENV`, :data:`OWNER_ENV`) and its folders (:data:`OWNER_FILE`) with
its owner, so the next start ends the processes and removes the folders of a session whose
owner died without shutting down (a killed kernel): :func:`cleanup_dead_sessions`. On top of it:
:func:`ray_overheads` and :func:`object_store_rates` (what a task, an actor call and a
``ray.put`` cost), :class:`ShardWorker` and :func:`batch_inference` (the course's tiny model
run over shards of prompts by Ray actors), :func:`run_actor_kill` and :func:`run_flaky_tasks`
(fault tolerance: actor restarts and task retries).

**torch.distributed.** :func:`run_ranks` starts ``world_size`` processes on 127.0.0.1 with
the gloo backend on a free port, runs a function in each and returns what each rank returned.
The rank functions here: :func:`collectives_demo` (all-reduce, all-gather, a tensor-parallel
linear layer), :func:`allreduce_benchmark` (bandwidth against message size) and
:func:`ddp_train` (DistributedDataParallel training of the tiny model, with the step split
into compute and communication), which :func:`train_single` reproduces in one process with
the same global batch.

**Memory and network arithmetic.** :func:`sharded_training_bytes` (data, tensor and pipeline
parallelism and ZeRO stages 1-3 / FSDP on top of :func:`labkit.memory.training_breakdown`),
:func:`parallelism_plan` for an instance type of :mod:`labkit.catalog`,
:func:`ring_allreduce_seconds` with the EFA bandwidth of the catalog, and
:func:`pipeline_bubble`.

Command line (what the course's RayJob, PyTorchJob and JobSet run)::

    python -m labkit.distributed batch-inference --workers 2    # Ray; RAY_ADDRESS respected
    python -m labkit.distributed batch-inference --workers 4 --gpus-per-worker 1   # the RayJob
    python -m labkit.distributed ddp --steps 8                   # 2 local gloo ranks, or
    torchrun --nproc-per-node=2 -m labkit.distributed ddp        # ranks from torchrun's env

Nothing here touches the network beyond 127.0.0.1 unless ``RAY_ADDRESS`` or torchrun say so;
importing the module imports neither Ray nor torch.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit import bench, catalog, memory
from labkit.scratch import scratch_dir, scratch_root

# --------------------------------------------------------------------------------------------
# Ray: a session that always ends
# --------------------------------------------------------------------------------------------
#: CPUs of the local Ray cluster on the course machine (2 cores); see :func:`default_num_cpus`.
RAY_NUM_CPUS = 2
#: Most CPUs a local session takes by default: 4 workers of the lab stay under 2 GiB of memory.
RAY_MAX_CPUS = 4
#: Cap of the local object store (Ray's default is 30 % of RAM, 7 GB here).
RAY_OBJECT_STORE_BYTES = 256 * 2**20
#: Environment variable carried by every process of a local session (value: the session id);
#: it is how the process table is searched for leftovers.
SESSION_ENV = "LABKIT_RAY_SESSION"
#: Environment variable carried by every process of a local session: ``<pid>:<start time>`` of
#: the process that started the session (its owner), so leftovers of a dead owner can be found.
OWNER_ENV = "LABKIT_RAY_OWNER"
#: File written into every folder a session creates (its Ray temp folder, the retry markers):
#: the owner's pid and start time, and the session id.
OWNER_FILE = "labkit-owner.json"
#: Unix socket paths are limited to 107 bytes; Ray puts its sockets at
#: ``<temp>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store`` (up to 64 bytes after
#: ``<temp>``), so the temp folder's path must stay this short.
_MAX_TEMP_PATH = 107 - 64
#: Names of Ray's native executables (Python processes of Ray run a script inside Ray's package,
#: worker processes rename themselves ``ray::<what they run>``).
_RAY_EXECUTABLES = ("raylet", "gcs_server", "plasma_store")
_ACTIVE: list["RaySession"] = []


@dataclass(frozen=True)
class ShutdownReport:
    """What :meth:`RaySession.shutdown` found and did.

    Attributes:
        seconds: time from the start of the shutdown until every process was gone.
        processes: processes of the session alive just before the shutdown.
        exited: how many of them exited by themselves.
        killed: pids that had to be ended with SIGKILL (should be empty).
        leftover: ``(pid, name)`` of processes still alive afterwards (always empty, or
            :meth:`RaySession.shutdown` raises).
        temp_removed: whether the session's temp folder is gone.
    """

    seconds: float
    processes: int
    exited: int
    killed: tuple[int, ...] = ()
    leftover: tuple[tuple[int, str], ...] = ()
    temp_removed: bool = True

    def __str__(self) -> str:
        return (f"Ray shut down in {self.seconds:.1f} s: {self.exited} of {self.processes} "
                f"processes exited by themselves, {len(self.killed)} ended by pid, "
                f"{len(self.leftover)} left; temp folder removed: {self.temp_removed}")


def _psutil():
    import psutil

    return psutil


def _marked_processes(session_id: str | None = None) -> list:
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


def default_num_cpus() -> int:
    """CPUs of a local Ray session: the usable cores, at least 2 (the lab compares 1 and 2
    workers) and at most :data:`RAY_MAX_CPUS`."""
    from labkit.hardware import usable_cores

    return max(RAY_NUM_CPUS, min(usable_cores(), RAY_MAX_CPUS))


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


def _ray_descendants(session_id: str | None = None) -> list:
    """Child processes (recursive) of this process that are Ray's (:func:`_is_ray_process`);
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


def _owner_tag(pid: int | None = None) -> str:
    """``<pid>:<start time>`` of a process (default: this one): a pid alone can be reused."""
    psutil = _psutil()
    proc = psutil.Process(pid or os.getpid())
    return f"{proc.pid}:{proc.create_time():.3f}"


def _owner_alive(tag: str) -> bool:
    """Whether the process named by an :func:`_owner_tag` still runs (same pid, same start)."""
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


def _write_owner_file(folder: Path, session_id: str | None = None) -> None:
    """Mark a folder as made by this process (see :func:`cleanup_dead_sessions`)."""
    (folder / OWNER_FILE).write_text(json.dumps({"owner": _owner_tag(),
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
    alone. :class:`RaySession` calls this before it starts Ray. Returns
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
    procs = {p.pid: p for p in [*_marked_processes(session_id), *_ray_descendants(session_id)]}
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


_TOKEN: list[str] = []


def _process_token() -> str:
    """The token of this process's local Ray clusters: random, made once per process (Ray
    caches the token it has read), kept only in the environment, never written to disk."""
    if not _TOKEN:
        _TOKEN.append(secrets.token_hex(16))
    return _TOKEN[0]


def _refresh_ray_auth() -> None:
    """Make an already imported Ray re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN (Ray caches both
    when it is imported; its own test utilities refresh them the same way)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # another Ray version: the environment is read at start-up anyway
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def _ray_temp_dir(need_bytes: int) -> Iterator[Path]:
    """A scratch folder for Ray's temp files, short enough for Ray's socket paths: under
    the course's scratch root when its path is short, else under the system temp folder."""
    root = scratch_root()
    if len(str(root.absolute())) + len("/ray-XXXXXXXX") > _MAX_TEMP_PATH:
        root = Path(tempfile.gettempdir())
    with scratch_dir(need_bytes, prefix="ray-", root=root) as folder:
        yield folder


class RaySession:
    """Ray, started the course's way and always shut down.

    Args:
        num_cpus: CPUs of a local cluster (default :func:`default_num_cpus`: the usable cores,
            2 to 4).
        object_store_bytes: cap of the local object store (default 256 MiB).
        address: a cluster to connect to; default ``$RAY_ADDRESS``; neither means "start a
            local cluster".
        log_to_driver: show the workers' stdout/stderr in this process (off: quiet notebooks).

    Use it as a context manager (``with RaySession() as ray_session: ...``), or call
    :meth:`start` and :meth:`shutdown` yourself in ``try``/``finally``. In a notebook, call
    :meth:`close_on_cell_error` after :meth:`start` so that a failing cell shuts Ray down.
    """

    def __init__(self, num_cpus: int | None = None,
                 object_store_bytes: int = RAY_OBJECT_STORE_BYTES,
                 address: str | None = None, log_to_driver: bool = False) -> None:
        if num_cpus is None:
            num_cpus = default_num_cpus()
        if not isinstance(num_cpus, int) or num_cpus < 1:
            raise ValueError(f"num_cpus must be a positive integer, got {num_cpus!r}")
        if object_store_bytes < 80 * 2**20:
            raise ValueError("object_store_bytes must be at least 80 MiB (Ray's minimum is 75 MiB)"
                             f", got {object_store_bytes}")
        self.num_cpus = num_cpus
        self.object_store_bytes = int(object_store_bytes)
        self.address = address
        self.log_to_driver = log_to_driver
        self.id = secrets.token_hex(6)
        self.mode: str | None = None
        self.init_s: float | None = None
        self.temp_dir: Path | None = None
        self.last_report: ShutdownReport | None = None
        self.cleaned: dict = {"pids": [], "folders": []}
        self._stack = contextlib.ExitStack()
        self._env_saved: dict[str, str | None] = {}
        self._procs: dict[int, Any] = {}
        self._hook = None
        self._active = False

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether this session has started Ray and not shut it down yet."""
        return self._active

    def start(self) -> "RaySession":
        """Start (or connect to) Ray; returns ``self``. Raises RuntimeError if Ray already
        runs in this process (shut that one down first)."""
        import ray

        if self._active:
            return self
        if ray.is_initialized():
            raise RuntimeError("Ray is already running in this process; shut it down first "
                               "(labkit.distributed.shutdown_all() for a RaySession, else "
                               "ray.shutdown())")
        address = self.address or os.environ.get("RAY_ADDRESS")
        start = time.perf_counter()
        try:
            if address:
                self.mode = "cluster"
                _refresh_ray_auth()
                ray.init(address=address, logging_level="WARNING",
                         log_to_driver=self.log_to_driver)
            else:
                self.mode = "local"
                self.cleaned = cleanup_dead_sessions()   # leftovers of killed kernels
                self.temp_dir = self._stack.enter_context(
                    _ray_temp_dir(self.object_store_bytes + 256 * 2**20))
                _write_owner_file(self.temp_dir, self.id)
                self._set_env({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                               "RAY_AUTH_TOKEN": _process_token(), SESSION_ENV: self.id,
                               OWNER_ENV: _owner_tag()})
                _refresh_ray_auth()
                # include_dashboard=False: no web UI; Ray 2.60 still starts a headless API
                # server (dashboard.py --disable-frontend) and, per node, a dashboard agent
                # and a runtime-env agent: all marked, all ended by shutdown().
                ray.init(num_cpus=self.num_cpus, include_dashboard=False,
                         _temp_dir=str(self.temp_dir),
                         object_store_memory=self.object_store_bytes,
                         logging_level="WARNING", log_to_driver=self.log_to_driver)
        except BaseException:
            with contextlib.suppress(Exception):
                ray.shutdown()
            self._end_processes(self._session_processes())
            self._restore_env()
            self._stack.close()
            raise
        self.init_s = time.perf_counter() - start
        self._active = True
        _ACTIVE.append(self)
        self._remember_processes()
        return self

    def shutdown(self) -> ShutdownReport:
        """Shut Ray down and prove it: wait for every process of the session, end stragglers
        by pid, remove the temp folder, restore the environment.

        Returns a :class:`ShutdownReport`; raises RuntimeError naming the processes if any
        is still alive afterwards. Calling it again is harmless.
        """
        import ray

        if not self._active:
            return self.last_report or ShutdownReport(0.0, 0, 0)
        self._active = False
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self._unhook()
        start = time.perf_counter()
        self._remember_processes()
        procs = list(self._procs.values())
        try:
            ray.shutdown()
        finally:
            exited, killed = self._end_processes(procs)
            self._restore_env()
            temp = self.temp_dir
            self._stack.close()
            leftover = []
            if self.mode == "local":
                for row in ray_processes(self.id):
                    leftover.append((row["pid"], row["name"]))
            report = ShutdownReport(time.perf_counter() - start, len(procs), exited,
                                    tuple(killed), tuple(leftover),
                                    temp is None or not temp.exists())
            self.last_report = report
        if report.leftover:
            raise RuntimeError(f"Ray processes still alive after shutdown: {report.leftover}; "
                               "end them by pid (kill PID) and report this")
        return report

    close = shutdown

    def __enter__(self) -> "RaySession":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- notebooks ---------------------------------------------------------------------------
    def close_on_cell_error(self, keep_running_on: tuple[type[BaseException], ...] = ()
                            ) -> bool:
        """In IPython/Jupyter: shut Ray down as soon as a later cell fails.

        A notebook cannot wrap several cells in one ``try``/``finally``; this registers a
        ``post_run_cell`` hook that calls :meth:`shutdown` when a cell raises, so a failed
        cell never leaves Ray running (the interpreter-exit hook covers a stopped kernel).
        Exceptions of the types in ``keep_running_on`` do not stop Ray (a lab passes its
        check errors and exercise stubs, so a wrong answer can be fixed and re-run).
        Returns False outside IPython.
        """
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
        if shell is None or self._hook is not None:
            return shell is not None

        def after_cell(result) -> None:
            failed = getattr(result, "error_in_exec", None) or getattr(
                result, "error_before_exec", None)
            if isinstance(failed, keep_running_on):
                return
            if failed and self._active:
                try:
                    report = self.shutdown()
                    print(f"The cell failed, so Ray was shut down ({report}). Run the cell "
                          "that starts Ray again to continue.")
                except Exception as err:  # the hook must never raise into IPython
                    print(f"The cell failed and shutting Ray down failed too: {err}")

        shell.events.register("post_run_cell", after_cell)
        self._hook = (shell, after_cell)
        return True

    def _unhook(self) -> None:
        if self._hook is not None:
            shell, callback = self._hook
            with contextlib.suppress(ValueError):
                shell.events.unregister("post_run_cell", callback)
            self._hook = None

    # -- facts -------------------------------------------------------------------------------
    def describe(self) -> dict:
        """Where Ray runs: mode (``local`` or ``cluster``), address, CPUs, GPUs, object
        store bytes, seconds ``ray.init`` took, temp folder, session id."""
        import ray

        if not self._active:
            raise RuntimeError("this RaySession is not running; call start() first")
        resources = ray.cluster_resources()
        return {"mode": self.mode, "address": ray.get_runtime_context().gcs_address,
                "cpus": resources.get("CPU", 0.0), "gpus": resources.get("GPU", 0.0),
                "object_store_bytes": resources.get("object_store_memory", 0.0),
                "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
                "init_s": self.init_s, "temp_dir": str(self.temp_dir) if self.temp_dir else None,
                "session_id": self.id}

    def processes(self) -> list[dict]:
        """The session's processes now (see :func:`ray_processes`)."""
        return ray_processes(self.id) if self.mode == "local" else []

    # -- internals ---------------------------------------------------------------------------
    def _session_processes(self) -> list:
        if self.mode != "local":
            return []
        return [*_marked_processes(self.id), *_ray_descendants(self.id)]

    def _remember_processes(self) -> None:
        for proc in self._session_processes():
            self._procs.setdefault(proc.pid, proc)

    @staticmethod
    def _end_processes(procs: list, grace_s: float = 10.0) -> tuple[int, list[int]]:
        """Wait up to ``grace_s`` for ``procs`` to exit; SIGKILL those still running (they
        were started by this session: psutil checks the pid still names the same process)."""
        psutil = _psutil()
        if not procs:
            return 0, []
        gone, alive = psutil.wait_procs(procs, timeout=grace_s)
        killed = []
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed.append(proc.pid)
        if alive:
            psutil.wait_procs(alive, timeout=5)
        return len(gone), killed

    def _set_env(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self._env_saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _restore_env(self) -> None:
        for key, value in self._env_saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env_saved.clear()


def shutdown_all() -> list[ShutdownReport]:
    """Shut down every :class:`RaySession` of this process that is still running (for
    example one started by an earlier run of a notebook cell); returns their reports."""
    return [session.shutdown() for session in list(_ACTIVE)]


@atexit.register
def _shutdown_active_sessions() -> None:
    for session in list(_ACTIVE):
        with contextlib.suppress(Exception):
            session.shutdown()


@contextlib.contextmanager
def ray_session(**kwargs) -> Iterator[RaySession]:
    """``with ray_session() as session:`` a :class:`RaySession` that is always shut down,
    whatever happens in the block (arguments as for :class:`RaySession`)."""
    session = RaySession(**kwargs)
    session.start()
    try:
        yield session
    finally:
        session.shutdown()


# --------------------------------------------------------------------------------------------
# Ray: what tasks, actors and the object store cost
# --------------------------------------------------------------------------------------------
def _noop(x: int = 0) -> int:
    """The smallest task: returns its argument."""
    return x


class _Echo:
    """The smallest actor."""

    def ping(self, x: int = 0) -> int:
        return x

    def pid(self) -> int:
        return os.getpid()


_REMOTES: dict[str, Any] = {}


def _remote(obj, **options):
    """``ray.remote(obj)`` once per object and options (Ray registers each only once)."""
    import ray

    key = f"{getattr(obj, '__qualname__', obj)}:{sorted(options.items())}"
    if key not in _REMOTES:
        _REMOTES[key] = ray.remote(**options)(obj) if options else ray.remote(obj)
    return _REMOTES[key]


def ray_overheads(n_tasks: int = 200, repeats: int = 3) -> dict[str, bench.Timing]:
    """Per-call cost of the ways to run code, in seconds per call (a running session needed).

    Keys: ``local call`` (a Python function call), ``task, one at a time`` (submit one
    no-op task and wait for it), ``task, pipelined`` (``n_tasks`` submitted at once, then
    waited for; time divided by ``n_tasks``), ``actor call`` (one method call on a running
    actor), ``actor start`` (create an actor and wait for its first reply: a new process).
    Every value is a :class:`labkit.bench.Timing` over ``repeats`` repetitions.
    """
    import ray

    noop, echo = _remote(_noop), _remote(_Echo, num_cpus=0)
    timings = {"local call": bench.timeit(lambda: _noop(1), repeats=repeats, name="local call")}
    one = bench.timeit(lambda: ray.get(noop.remote(1)), repeats=max(repeats, 10), warmup=2,
                       name="task, one at a time")
    timings[one.name] = one
    batch = bench.timeit(lambda: ray.get([noop.remote(i) for i in range(n_tasks)]),
                         repeats=repeats, warmup=1)
    timings["task, pipelined"] = bench.Timing(
        "task, pipelined", tuple(t / n_tasks for t in batch.times_s))

    def start_actor():
        actor = echo.remote()
        ray.get(actor.ping.remote())
        ray.kill(actor)

    timings["actor start"] = bench.timeit(start_actor, repeats=repeats, warmup=0,
                                          name="actor start")
    actor = echo.remote()
    try:
        timings["actor call"] = bench.timeit(lambda: ray.get(actor.ping.remote(1)),
                                             repeats=max(repeats, 10), warmup=2,
                                             name="actor call")
    finally:
        ray.kill(actor)
    return timings


def _array_sum(array) -> float:
    return float(array.sum())


def object_store_rates(sizes_bytes: Sequence[int] = (2**20, 8 * 2**20, 64 * 2**20),
                       repeats: int = 3) -> list[dict]:
    """Time ``ray.put`` and ``ray.get`` of numpy arrays of each size (a session needed).

    Returns one dict per size: ``bytes``, ``put`` and ``get`` (:class:`labkit.bench.Timing`),
    ``put_GBps`` (best), ``get_zero_copy`` (the array read back is a read-only view of the
    shared-memory object store, not a copy) and ``task_read`` (a task that sums the array in
    another process). Sizes must fit the object store (256 MiB by default).
    """
    import numpy as np
    import ray

    summer = _remote(_array_sum)
    rows = []
    for size in sizes_bytes:
        array = np.ones(int(size) // 8, dtype=np.float64)
        put = bench.timeit(lambda: ray.put(array), repeats=repeats, name="put")
        ref = ray.put(array)
        get = bench.timeit(lambda: ray.get(ref), repeats=repeats, name="get")
        back = get.result
        task = bench.timeit(lambda: ray.get(summer.remote(ref)), repeats=repeats,
                            name="task read")
        rows.append({"bytes": array.nbytes, "put": put, "get": get,
                     "put_GBps": array.nbytes / put.min_s / 1e9,
                     "get_zero_copy": not back.flags.writeable,
                     "task_read": task, "sum_ok": task.result == float(array.size)})
        del ref, back, get, put, task
    return rows


# --------------------------------------------------------------------------------------------
# Ray: batch inference with the tiny model over shards
# --------------------------------------------------------------------------------------------
def corpus_prompts(n: int, words: int = 6) -> list[str]:
    """``n`` prompts: the first ``words`` words of the lines of the tiny model's corpus
    (cycled if ``n`` is larger than the number of lines). Deterministic."""
    if n < 1 or words < 1:
        raise ValueError(f"n and words must be >= 1, got n={n}, words={words}")
    text = (Path(__file__).resolve().parent / "data" / "tiny_corpus.txt").read_text(
        encoding="utf-8")
    lines = [" ".join(line.split()[:words]) for line in text.splitlines()
             if len(line.split()) >= words and not line.startswith("#")]
    return [lines[i % len(lines)] for i in range(n)]


def make_shards(items: Sequence, n_shards: int) -> list[list]:
    """Split ``items`` into ``n_shards`` contiguous shards, in order, whose sizes differ by
    at most one (the first ``len(items) % n_shards`` shards get the extra item).

    Example:
        >>> make_shards(list(range(7)), 3)
        [[0, 1, 2], [3, 4], [5, 6]]
    """
    if not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"n_shards must be a positive integer, got {n_shards!r}")
    if n_shards > len(items):
        raise ValueError(f"cannot make {n_shards} non-empty shards of {len(items)} items")
    base, extra = divmod(len(items), n_shards)
    shards, start = [], 0
    for i in range(n_shards):
        size = base + (1 if i < extra else 0)
        shards.append(list(items[start:start + size]))
        start += size
    return shards


class ShardWorker:
    """Runs the course's tiny model over shards of prompts: one copy of the model per worker.

    As a Ray actor (``ray.remote(ShardWorker)``) each worker is one process that loads the
    model once and then serves many shards; :func:`batch_inference` drives a pool of them.
    Works without Ray too (the in-process baseline).

    Args:
        threads: PyTorch threads of this worker (1: one worker per core).
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when a GPU is visible to the worker).
    """

    def __init__(self, threads: int = 1, device: str | None = None) -> None:
        import torch

        from labkit.models import load_tiny_gpt

        torch.set_num_threads(threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_tiny_gpt("fp32", device=self.device)
        self.model.generate(["warm up"], 4, stop_at_eos=False)  # first calls pay set-up costs
        self.pid = os.getpid()
        self.calls = 0

    def info(self) -> dict:
        """``pid``, ``device``, ``calls`` served and ``restarted`` (True when Ray restarted
        this actor after its process died)."""
        return {"pid": self.pid, "device": self.device, "calls": self.calls,
                "restarted": _was_restarted()}

    def run(self, index: int, prompts: Sequence[str], new_tokens: int) -> dict:
        """Generate ``new_tokens`` greedily for every prompt of shard ``index``, as one batch.

        Returns ``shard``, ``texts``, ``tokens`` (new tokens generated), ``seconds`` (wall
        time of the work in this worker), ``cpu_s`` (CPU time this process got meanwhile:
        below ``seconds`` when it waited for a core), ``pid`` and ``restarted``.
        """
        start, cpu = time.perf_counter(), time.process_time()
        out = self.model.generate(list(prompts), new_tokens, stop_at_eos=False)
        self.calls += 1
        return {"shard": index, "texts": list(out.texts), "tokens": len(prompts) * new_tokens,
                "seconds": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                "pid": self.pid, "restarted": _was_restarted()}


def _was_restarted() -> bool:
    try:
        import ray

        if not ray.is_initialized():
            return False
        context = ray.get_runtime_context()
        if context.get_actor_id() is None:
            return False
        return bool(context.was_current_actor_reconstructed)
    except Exception:
        return False


@dataclass(frozen=True)
class InferenceRun:
    """One pass of batch inference over all shards.

    Attributes:
        workers: how many workers ran the shards (0: in this process, no Ray).
        wall_s: from the first submission until the last result arrived.
        results: one dict per shard (see :meth:`ShardWorker.run`), in shard order.
    """

    workers: int
    wall_s: float
    results: tuple[dict, ...] = field(repr=False)

    @property
    def tokens(self) -> int:
        """New tokens generated in all."""
        return sum(r["tokens"] for r in self.results)

    @property
    def tokens_per_s(self) -> float:
        """Throughput of the whole pass: tokens / wall time."""
        return self.tokens / self.wall_s

    @property
    def busy_s(self) -> float:
        """Compute seconds summed over shards (what the workers spent generating)."""
        return sum(r["seconds"] for r in self.results)

    @property
    def cpu_share(self) -> float:
        """CPU time the workers got ÷ (wall time × workers): 1.0 means every worker had a
        core of its own all the time; less means they waited (for each other, for Ray's own
        processes, for anything else running on the machine)."""
        return sum(r["cpu_s"] for r in self.results) / (self.wall_s * max(self.workers, 1))

    @property
    def texts(self) -> list[list[str]]:
        """Generated texts, shard by shard."""
        return [r["texts"] for r in self.results]

    @property
    def pids(self) -> list[int]:
        """Distinct worker processes that served shards."""
        return sorted({r["pid"] for r in self.results})


def start_shard_workers(n: int, *, threads: int = 1, num_cpus: float = 1, num_gpus: float = 0,
                        **options) -> list:
    """Start ``n`` :class:`ShardWorker` actors and wait until each has loaded the model.

    ``num_cpus``/``num_gpus`` are what each actor reserves on the cluster (1 CPU each: two
    workers fill the course machine); ``options`` go to ``.options()`` (e.g. ``max_restarts``).
    """
    import ray

    cls = _remote(ShardWorker)
    device = "cuda" if num_gpus else "cpu"
    actors = [cls.options(num_cpus=num_cpus, num_gpus=num_gpus, **options).remote(threads,
                                                                                 device)
              for _ in range(n)]
    ray.get([a.info.remote() for a in actors])
    return actors


def stop_actors(actors: Sequence) -> None:
    """End actors (``ray.kill``); their CPUs become free for other tasks."""
    import ray

    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor)


def batch_inference(shards: Sequence[Sequence[str]], actors: Sequence,
                    new_tokens: int = 64) -> InferenceRun:
    """Run every shard on a pool of :class:`ShardWorker` actors and collect the results.

    Each actor has one shard in flight; when it finishes, it gets the next one (so a slow
    worker takes fewer shards). Results come back in shard order.
    """
    import ray

    if not actors:
        raise ValueError("batch_inference needs at least one actor (start_shard_workers)")
    pending = list(enumerate(shards))
    in_flight: dict[Any, Any] = {}
    results: dict[int, dict] = {}
    start = time.perf_counter()
    for actor in actors:
        if pending:
            index, shard = pending.pop(0)
            in_flight[actor.run.remote(index, list(shard), new_tokens)] = actor
    while in_flight:
        done, _ = ray.wait(list(in_flight), num_returns=1)
        actor = in_flight.pop(done[0])
        result = ray.get(done[0])
        results[result["shard"]] = result
        if pending:
            index, shard = pending.pop(0)
            in_flight[actor.run.remote(index, list(shard), new_tokens)] = actor
    wall = time.perf_counter() - start
    return InferenceRun(len(actors), wall, tuple(results[i] for i in range(len(shards))))


_LOCAL_WORKERS: dict[tuple, ShardWorker] = {}


def serial_inference(shards: Sequence[Sequence[str]], new_tokens: int = 64,
                     threads: int = 1) -> InferenceRun:
    """The same work in this process, shard after shard, with ``threads`` PyTorch threads
    (no Ray; the model is loaded once and kept). Restores the thread setting afterwards."""
    import torch

    before = torch.get_num_threads()
    try:
        worker = _LOCAL_WORKERS.get(("cpu", threads))
        if worker is None:
            worker = _LOCAL_WORKERS[("cpu", threads)] = ShardWorker(threads, "cpu")
        torch.set_num_threads(threads)
        start = time.perf_counter()
        results = tuple(worker.run(i, list(s), new_tokens) for i, s in enumerate(shards))
        return InferenceRun(0, time.perf_counter() - start, results)
    finally:
        torch.set_num_threads(before)


def amdahl_parallel_fraction(speedup: float, workers: int) -> float:
    """The parallel fraction p that explains ``speedup`` on ``workers`` by Amdahl's law,
    ``S = 1 / ((1 - p) + p / N)``, so ``p = (1 - 1/S) / (1 - 1/N)``."""
    if workers < 2:
        raise ValueError("Amdahl's fraction needs at least 2 workers")
    if speedup <= 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    return (1 - 1 / speedup) / (1 - 1 / workers)


# --------------------------------------------------------------------------------------------
# Ray: fault tolerance
# --------------------------------------------------------------------------------------------
def run_actor_kill(shards: Sequence[Sequence[str]], new_tokens: int = 32, *,
                   kill_after: int = 2, **actor_options) -> dict:
    """Kill an actor's process in the middle of its work and see what Ray does.

    Starts one :class:`ShardWorker` actor with ``actor_options`` (``max_restarts``,
    ``max_task_retries``), queues every shard on it, waits for ``kill_after`` results and
    then sends SIGKILL to the actor's process, as the kernel's OOM killer or a lost node
    would. Returns ``completed`` and ``failed`` shard counts, the ``errors`` (exception
    names), ``pids`` that served shards, ``restarted_shards`` (served after a restart),
    ``recovery_s`` (from the kill to the first result of the new process, None if none)
    and the options used.
    """
    import ray

    if not 0 < kill_after < len(shards):
        raise ValueError(f"kill_after must be between 1 and {len(shards) - 1}")
    (actor,) = start_shard_workers(1, **actor_options)
    first_pid = ray.get(actor.info.remote())["pid"]
    refs = [actor.run.remote(i, list(s), new_tokens) for i, s in enumerate(shards)]
    ray.wait(refs[:kill_after], num_returns=kill_after)
    killed_at = time.perf_counter()
    with contextlib.suppress(ProcessLookupError):
        os.kill(first_pid, signal.SIGKILL)
    results, errors, first_new = [], [], None
    for ref in refs:
        try:
            result = ray.get(ref, timeout=120)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
            errors.append(type(err).__name__)
            continue
        if result["pid"] != first_pid and first_new is None:
            first_new = time.perf_counter() - killed_at
        results.append(result)
    stop_actors([actor])
    return {"completed": len(results), "failed": len(errors), "errors": errors,
            "pids": sorted({r["pid"] for r in results}), "killed_pid": first_pid,
            "restarted_shards": sum(1 for r in results if r["restarted"]),
            "recovery_s": first_new, "options": dict(actor_options)}


def _flaky(index: int, marker_dir: str, crash: bool, raise_error: bool) -> dict:
    """A task that dies (its worker process exits) or raises on its first attempt."""
    folder = Path(marker_dir)
    attempt = len(list(folder.glob(f"task{index}-*"))) + 1
    (folder / f"task{index}-{attempt}").touch()
    if attempt == 1 and crash:
        os._exit(1)  # the process disappears: a "system failure" for Ray
    if attempt == 1 and raise_error:
        raise ValueError(f"task {index}: a bug in the task's own code")
    return {"task": index, "attempt": attempt, "pid": os.getpid()}


def run_flaky_tasks(n_tasks: int = 4, *, crash: Sequence[int] = (1,),
                    raise_error: Sequence[int] = (), max_retries: int = 3) -> dict:
    """Run ``n_tasks`` tasks of which those in ``crash`` kill their own worker process and
    those in ``raise_error`` raise an exception on their first attempt.

    Ray retries a task whose process died (up to ``max_retries`` times, 3 by default) but not
    one that raised (unless ``retry_exceptions=True``). Returns ``attempts`` (task -> attempts
    made, counted with marker files in a scratch folder), ``results`` (task -> "ok" or the
    exception name) and ``seconds``.
    """
    import ray

    flaky = _remote(_flaky)
    with scratch_dir(prefix="ray-retries-") as folder:
        _write_owner_file(folder)
        start = time.perf_counter()
        refs = {i: flaky.options(max_retries=max_retries).remote(
            i, str(folder), i in crash, i in raise_error) for i in range(n_tasks)}
        results = {}
        for i, ref in refs.items():
            try:
                ray.get(ref, timeout=120)
                results[i] = "ok"
            except ray.exceptions.RayError as err:
                cause = getattr(err, "cause", None)
                results[i] = type(cause).__name__ if isinstance(cause, Exception) \
                    else type(err).__name__
        seconds = time.perf_counter() - start
        attempts = {i: len(list(folder.glob(f"task{i}-*"))) for i in range(n_tasks)}
    return {"attempts": attempts, "results": results, "seconds": seconds,
            "max_retries": max_retries}


# --------------------------------------------------------------------------------------------
# torch.distributed: processes, ranks and a rendezvous on 127.0.0.1
# --------------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the rendezvous port of rank 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, fn: Callable, world_size: int, port: int, args: tuple,
               out_dir: str, threads: int) -> None:
    """Body of each rank's process: join the group, run ``fn``, save what it returned."""
    import datetime

    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_RANK": str(rank)})
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        try:
            result = fn(rank, world_size, *args)
        except BaseException:
            import traceback

            (Path(out_dir) / f"rank{rank}.error").write_text(traceback.format_exc())
            raise
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


class RankError(RuntimeError):
    """A rank of :func:`run_ranks` raised; the message holds its traceback."""


def run_ranks(fn: Callable, world_size: int = 2, *, args: Sequence = (),
              timeout_s: float = 120.0, threads: int = 1,
              start_method: str | None = None) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes joined by gloo.

    Each process gets ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``, ``RANK`` and
    ``WORLD_SIZE`` (what torchrun would set), joins the process group (the rendezvous) and
    runs ``fn`` with ``threads`` PyTorch threads. Returns what each rank returned, in rank
    order; return plain data (numbers, strings, lists, dicts, tensors).

    Processes are forked on Linux (fast; ``fn`` may be defined in a notebook) and spawned
    elsewhere (``fn`` must then be importable). An exception in a rank is raised here with
    its traceback (:class:`RankError`, naming the rank that failed first); after
    ``timeout_s`` the ranks are killed and TimeoutError is raised.
    Nothing is left behind: every rank has exited when this returns.
    """
    import torch
    import torch.multiprocessing as mp

    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    method = start_method or ("fork" if sys.platform.startswith("linux") else "spawn")
    with scratch_dir(prefix="ranks-") as out:
        context = mp.start_processes(
            _rank_main, args=(fn, world_size, free_port(), tuple(args), str(out), threads),
            nprocs=world_size, join=False, start_method=method)
        deadline = time.monotonic() + timeout_s
        try:
            while not context.join(timeout=0.2):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world_size} ranks did not finish within "
                                       f"{timeout_s:.0f} s (a rank stuck in a collective?)")
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
            errors = sorted(out.glob("rank*.error"), key=lambda p: p.stat().st_mtime)
            if not errors:
                raise
            first = errors[0]       # the first rank to fail; the others usually failed after
            raise RankError(f"{first.stem} raised first:\n{first.read_text()}") from err
        finally:
            for proc in context.processes:
                if proc.is_alive():
                    proc.kill()
                proc.join(5)
        return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


def collectives_demo(rank: int, world_size: int, width: int = 64) -> dict:
    """Rank function: the collectives data, tensor and pipeline parallelism are made of.

    - ``all_reduce`` of each rank's ``rank + 1``: every rank ends with the sum;
    - ``all_gather`` of each rank's number: every rank ends with the list;
    - a **column-parallel** linear layer: each rank holds ``1/world`` of the output rows of
      ``W``, computes its slice of ``x Wᵀ``, and an all-gather rebuilds the full output;
    - a **row-parallel** linear layer: each rank holds ``1/world`` of the input columns and
      the matching slice of ``x``; an all-reduce sums the partial products.

    Returns the sums, the gathered list, the largest difference of each parallel layer from
    the unsplit one, and the bytes each rank received for them.
    """
    import torch
    import torch.distributed as dist

    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    gathered = [torch.zeros(1) for _ in range(world_size)]
    dist.all_gather(gathered, torch.tensor([float(rank)]))
    gen = torch.Generator().manual_seed(0)   # every rank builds the same full layer
    weight = torch.randn(width * world_size, width * world_size, generator=gen)
    x = torch.randn(8, width * world_size, generator=gen)
    full = x @ weight.T
    local = x @ weight.chunk(world_size, dim=0)[rank].T          # my output columns
    parts = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(parts, local)
    column = torch.cat(parts, dim=1)
    partial = x.chunk(world_size, dim=1)[rank] @ weight.chunk(world_size, dim=1)[rank].T
    dist.all_reduce(partial)
    return {"rank": rank, "world_size": world_size, "all_reduce_sum": value.item(),
            "all_gather": [g.item() for g in gathered],
            "column_parallel_max_error": (column - full).abs().max().item(),
            "row_parallel_max_error": (partial - full).abs().max().item(),
            "column_bytes_received": local.numel() * local.element_size() * (world_size - 1),
            "weight_bytes_per_rank": weight.numel() * weight.element_size() // world_size,
            "pid": os.getpid()}


def allreduce_benchmark(rank: int, world_size: int,
                        sizes_bytes: Sequence[int] = tuple(4 ** k for k in range(5, 14)),
                        repeats: int = 5) -> list[dict]:
    """Rank function: time ``all_reduce`` (sum) of float32 tensors of each size.

    Every rank enters each timed call together (a barrier first). Returns, for each size,
    ``bytes``, ``min_s`` and ``median_s`` of this rank, ``algbw_GBps`` (bytes / best time)
    and ``busbw_GBps`` (× 2(n−1)/n, the bytes each rank really sends in a ring; equal to
    algbw for 2 ranks: the convention of NVIDIA's nccl-tests).
    """
    import torch
    import torch.distributed as dist

    rows = []
    for size in sizes_bytes:
        x = torch.ones(max(1, int(size) // 4))
        for _ in range(2):
            dist.all_reduce(x)
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(x)
            times.append(time.perf_counter() - start)
        n_bytes = x.numel() * 4
        best = min(times)
        factor = 2 * (world_size - 1) / world_size if world_size > 1 else 1.0
        rows.append({"bytes": n_bytes, "min_s": best,
                     "median_s": sorted(times)[len(times) // 2],
                     "algbw_GBps": n_bytes / best / 1e9,
                     "busbw_GBps": n_bytes / best / 1e9 * factor})
    return rows


def tiny_config():
    """The tiny model's architecture (:class:`labkit.decoder.DecoderConfig`)."""
    from labkit.decoder import DecoderConfig
    from labkit.models import DATA_DIR, TINY_FILES

    meta = json.loads((DATA_DIR / TINY_FILES["config"]).read_text())
    return DecoderConfig.from_dict(meta["config"])


def training_batches(steps: int, global_batch: int, seq_len: int, seed: int = 0) -> list:
    """``steps`` global batches ``(x, y)`` of the tiny model's corpus, the same for every
    caller with the same seed: a data-parallel rank takes its slice of each."""
    import torch

    from labkit import training

    data = training.corpus_tokens()
    gen = torch.Generator().manual_seed(seed)
    return [training.random_batch(data, global_batch, seq_len, gen) for _ in range(steps)]


def _new_tiny_model(seed: int):
    from labkit.decoder import Decoder, init_weights

    return init_weights(Decoder(tiny_config()), seed=seed).train()


def _lm_loss(net, x, y):
    import torch.nn.functional as F

    logits = net(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def train_single(steps: int = 8, global_batch: int = 16, seq_len: int = 64, seed: int = 0,
                 lr: float = 3e-3) -> dict:
    """Train the tiny model (fresh weights, ``seed``) in this process with AdamW on the
    global batches of :func:`training_batches`: the reference for :func:`ddp_train`.

    Returns ``losses`` (per step), ``step_s`` (per step), ``params`` (all parameters
    afterwards, one flat tensor) and ``n_params``.
    """
    import torch

    net = _new_tiny_model(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    losses, times = [], []
    for x, y in training_batches(steps, global_batch, seq_len, seed):
        start = time.perf_counter()
        loss = _lm_loss(net, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    params = torch.cat([p.detach().flatten() for p in net.parameters()])
    return {"losses": losses, "step_s": times, "params": params, "n_params": params.numel()}


def _ddp_loop(rank: int, world_size: int, steps: int, global_batch: int, seq_len: int,
              seed: int, lr: float, timing_steps: int, device: str = "cpu") -> dict:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    if global_batch % world_size:
        raise ValueError(f"global_batch ({global_batch}) must be a multiple of the world "
                         f"size ({world_size})")
    net = _new_tiny_model(seed).to(device)    # same seed: every rank starts identical
    model = DDP(net, device_ids=[torch.device(device)] if device.startswith("cuda") else None)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    batches = training_batches(steps + timing_steps, global_batch, seq_len, seed)
    losses, step_s = [], []
    for x, y in batches[:steps]:
        x, y = x.chunk(world_size)[rank].to(device), y.chunk(world_size)[rank].to(device)
        start = time.perf_counter()
        loss = _lm_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()            # DDP all-reduces (averages) the gradients here
        opt.step()
        step_s.append(time.perf_counter() - start)
        mean = loss.detach().clone()
        dist.all_reduce(mean)       # the global batch's loss: mean of the ranks' means
        losses.append(mean.item() / world_size)
    params = torch.cat([p.detach().flatten().cpu() for p in net.parameters()])
    compute, synced, allreduce = [], [], []
    grads_bytes = 0
    for x, y in batches[steps:]:
        x, y = x.chunk(world_size)[rank].to(device), y.chunk(world_size)[rank].to(device)
        dist.barrier()
        start = time.perf_counter()
        with model.no_sync():      # forward + backward, no gradient exchange
            _lm_loss(model, x, y).backward()
        compute.append(time.perf_counter() - start)
        opt.zero_grad(set_to_none=True)
        dist.barrier()
        start = time.perf_counter()
        _lm_loss(model, x, y).backward()   # the same, with DDP's all-reduce
        synced.append(time.perf_counter() - start)
        flat = torch.cat([p.grad.flatten() for p in model.parameters()])
        grads_bytes = flat.numel() * flat.element_size()
        opt.zero_grad(set_to_none=True)
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)      # the exchange alone, one buffer
        allreduce.append(time.perf_counter() - start)
    return {"rank": rank, "losses": losses, "step_s": step_s,
            "params": params if rank == 0 else None, "n_params": params.numel(),
            "compute_s": compute, "synced_s": synced, "allreduce_s": allreduce,
            "grad_bytes": grads_bytes, "local_batch": global_batch // world_size}


def ddp_train(rank: int, world_size: int, steps: int = 8, global_batch: int = 16,
              seq_len: int = 64, seed: int = 0, lr: float = 3e-3,
              timing_steps: int = 4) -> dict:
    """Rank function: data-parallel training of the tiny model with DistributedDataParallel.

    Every rank builds the same fresh model (``seed``), takes its ``1/world_size`` slice of
    each global batch of :func:`training_batches`, and DDP averages the gradients, so each
    step equals one step of :func:`train_single` on the whole global batch (up to the order
    of floating-point additions). ``losses`` are the global batch's mean loss.

    Then ``timing_steps`` more batches time one step three ways: ``compute_s`` (forward and
    backward under ``no_sync``: no exchange), ``synced_s`` (the same with DDP's gradient
    all-reduce, overlapped with the backward pass) and ``allreduce_s`` (the all-reduce of
    all gradients as one buffer of ``grad_bytes``). Rank 0 also returns ``params`` (flat,
    after the training steps) for comparison.
    """
    return _ddp_loop(rank, world_size, steps, global_batch, seq_len, seed, lr, timing_steps)


def compare_losses(single: Sequence[float], ddp: Sequence[float]) -> float:
    """Largest absolute difference between two loss curves of the same length."""
    if len(single) != len(ddp) or not single:
        raise ValueError(f"loss curves differ in length ({len(single)} vs {len(ddp)})")
    return max(abs(a - b) for a, b in zip(single, ddp))


# --------------------------------------------------------------------------------------------
# arithmetic: memory of parallelism strategies, network time
# --------------------------------------------------------------------------------------------
def sharded_training_bytes(n_params: float, *, dp: int = 1, tp: int = 1, pp: int = 1,
                           zero_stage: int = 0, recipe: str = "mixed-adamw") -> dict:
    """Training state per GPU (bytes) when ``n_params`` are split across GPUs.

    - **Tensor** (``tp``) and **pipeline** (``pp``) parallelism split the model itself: each
      GPU holds ``1/(tp·pp)`` of the weights, gradients and optimizer states.
    - **Data** parallelism (``dp`` replicas) copies that slice ``dp`` times; ZeRO shards the
      copies' state across the ``dp`` replicas (Rajbhandari et al., 2020): stage 1 the
      optimizer states, stage 2 also the gradients, stage 3 (= PyTorch FSDP) also the weights.

    Built on :func:`labkit.memory.training_breakdown` (``recipe``); activations, buffers and
    the temporary full layers that ZeRO-3 gathers are not counted. Returns ``weights``,
    ``gradients``, ``optimizer_states`` and ``total`` in bytes.

    Example (7B, mixed precision, ZeRO-3 over 8 GPUs: 112 GB / 8):
        >>> sharded_training_bytes(7e9, dp=8, zero_stage=3)["total"] / 1e9
        14.0
    """
    for name, value in (("dp", dp), ("tp", tp), ("pp", pp)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    parts = memory.training_breakdown(n_params / (tp * pp), recipe)
    if zero_stage >= 1:
        parts["optimizer_states"] /= dp
    if zero_stage >= 2:
        parts["gradients"] /= dp
    if zero_stage >= 3:
        parts["weights"] /= dp
    parts["total"] = parts["weights"] + parts["gradients"] + parts["optimizer_states"]
    return parts


def parallelism_plan(n_params: float, instance: str, nodes: int, *,
                     recipe: str = "mixed-adamw", headroom: float = 0.2) -> list[dict]:
    """Training state per GPU for the common ways of using ``nodes`` × ``instance``.

    GPU count and memory are **cited** from :mod:`labkit.catalog`; bytes are **derived** by
    :func:`sharded_training_bytes`. A layout ``fits`` when the state leaves ``headroom``
    (default 20 %) of the GPU free for activations and buffers. Rows (their ``kind``): data
    parallel (``ddp``), ZeRO-1, -2, -3/FSDP over every GPU (``zero1``, ``zero2``,
    ``zero3``), tensor parallel inside each node × data parallel across nodes (``tp-dp``),
    and tensor parallel inside nodes × pipeline parallel across them (``tp-pp``).
    """
    node = catalog.instance(instance)
    per_node = int(node["accelerator_count"])
    gpu_gb = catalog.gpu_memory_gb(node["accelerator"])
    gpus = per_node * nodes
    layouts = [
        ("ddp", "data parallel (DDP)", {"dp": gpus}),
        ("zero1", "ZeRO-1", {"dp": gpus, "zero_stage": 1}),
        ("zero2", "ZeRO-2", {"dp": gpus, "zero_stage": 2}),
        ("zero3", "ZeRO-3 / FSDP", {"dp": gpus, "zero_stage": 3}),
        ("tp-dp", f"tensor {per_node} × data {nodes}", {"tp": per_node, "dp": nodes}),
        ("tp-pp", f"tensor {per_node} × pipeline {nodes}", {"tp": per_node, "pp": nodes}),
    ]
    rows = []
    for kind, name, kwargs in layouts:
        parts = sharded_training_bytes(n_params, recipe=recipe, **kwargs)
        rows.append({"kind": kind, "layout": name, "gpus": gpus,
                     "per_gpu_GB": parts["total"] / 1e9,
                     "gpu_GB": gpu_gb, "fits": parts["total"] <= (1 - headroom) * gpu_gb * 1e9,
                     **{k: kwargs.get(k, 1 if k != "zero_stage" else 0)
                        for k in ("dp", "tp", "pp", "zero_stage")}})
    return rows


LAYOUTS = ("ddp", "zero1", "zero2", "zero3", "tp-dp", "tp-pp")


def min_nodes(n_params: float, instance: str, layout: str, *, recipe: str = "mixed-adamw",
              headroom: float = 0.2, max_nodes: int = 256) -> int | None:
    """The fewest nodes of ``instance`` on which ``layout`` (a ``kind`` of
    :func:`parallelism_plan`: one of :data:`LAYOUTS`) fits; None if none up to
    ``max_nodes`` (data parallelism never fits a model whose state exceeds one GPU)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    for nodes in range(1, max_nodes + 1):
        for row in parallelism_plan(n_params, instance, nodes, recipe=recipe,
                                    headroom=headroom):
            if row["kind"] == layout and row["fits"]:
                return nodes
    return None


def efa_GBps(instance: str) -> float:
    """Inter-node network bandwidth of ``instance`` in GB/s: the catalog's **cited**
    ``network_Gbps`` / 8. Raises ValueError for an instance type without EFA."""
    node = catalog.instance(instance)
    if not node["efa"] or not node["network_Gbps"]:
        raise ValueError(f"{instance} has no EFA in the catalog; multi-node training needs "
                         "an EFA instance type such as p4d.24xlarge or p5.48xlarge")
    return float(node["network_Gbps"]) / 8


def ring_allreduce_seconds(n_bytes: float, workers: int, bandwidth_GBps: float) -> float:
    """Time of a ring all-reduce of ``n_bytes`` over ``workers`` links of
    ``bandwidth_GBps``: each worker sends and receives ``2 (n−1)/n × n_bytes`` (derived;
    latency and protocol overhead ignored, so this is a lower bound)."""
    if workers < 1 or bandwidth_GBps <= 0:
        raise ValueError("workers must be >= 1 and bandwidth_GBps > 0")
    return 2 * (workers - 1) / workers * n_bytes / (bandwidth_GBps * 1e9)


def gradient_sync_seconds(n_params: float, instance: str, nodes: int,
                          grad_dtype: str = "bf16") -> float:
    """Lower bound of one data-parallel gradient all-reduce across ``nodes`` of
    ``instance`` over EFA: gradients are first reduced inside each node (NVLink, assumed
    free here), then a ring across the nodes, each using its full EFA bandwidth."""
    return ring_allreduce_seconds(memory.weight_bytes(n_params, grad_dtype), nodes,
                                  efa_GBps(instance))


def pipeline_bubble(stages: int, microbatches: int) -> float:
    """Idle fraction of a GPipe pipeline: ``(p − 1) / (m + p − 1)`` for ``p`` stages and
    ``m`` micro-batches."""
    if stages < 1 or microbatches < 1:
        raise ValueError("stages and microbatches must be >= 1")
    return (stages - 1) / (microbatches + stages - 1)


# --------------------------------------------------------------------------------------------
# command line: the scripts the course's RayJob, PyTorchJob and JobSet run
# --------------------------------------------------------------------------------------------
def _cli_batch_inference(args) -> dict:
    prompts = corpus_prompts(args.shards * args.prompts_per_shard)
    shards = make_shards(prompts, args.shards)
    with ray_session() as session:
        info = session.describe()
        workers = args.workers or max(1, int(info["gpus"] if args.gpus_per_worker else
                                             info["cpus"]))
        actors = start_shard_workers(workers, num_gpus=args.gpus_per_worker)
        try:
            run = batch_inference(shards, actors, args.new_tokens)
        finally:
            stop_actors(actors)
    return {"mode": info["mode"], "address": info["address"], "workers": run.workers,
            "shards": len(shards), "tokens": run.tokens, "wall_s": round(run.wall_s, 3),
            "tokens_per_s": round(run.tokens_per_s, 1), "pids": run.pids,
            "first_text": run.texts[0][0]}


def _cli_ddp(args) -> dict | None:
    import torch
    import torch.distributed as dist

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:   # started by torchrun
        cuda = torch.cuda.is_available()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
        try:
            rank, world = dist.get_rank(), dist.get_world_size()
            out = _ddp_loop(rank, world, args.steps, args.global_batch, args.seq_len, 0,
                            3e-3, 2, device)
        finally:
            dist.destroy_process_group()
        if rank != 0:          # every rank has the same losses; rank 0 reports them
            return None
        return {"world_size": world, "backend": "nccl" if cuda else "gloo",
                "device": device, "losses": [round(v, 5) for v in out["losses"]]}
    ranks = run_ranks(ddp_train, 2, args=(args.steps, args.global_batch, args.seq_len))
    torch.set_num_threads(1)   # like each rank: comparable, and no oversubscribed cores
    single = train_single(args.steps, args.global_batch, args.seq_len)
    return {"world_size": 2, "backend": "gloo", "losses": ranks[0]["losses"],
            "single_process_losses": single["losses"],
            "max_loss_difference": compare_losses(single["losses"], ranks[0]["losses"])}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.distributed {batch-inference,ddp} [options]``; prints JSON."""
    parser = argparse.ArgumentParser(prog="python -m labkit.distributed",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bi = sub.add_parser("batch-inference", help="the tiny model over shards on Ray actors "
                        "(local Ray, or the cluster in RAY_ADDRESS)")
    bi.add_argument("--workers", type=int, default=0, help="actors (default: one per CPU, "
                    "or per GPU with --gpus-per-worker, of the cluster as it is now; ask for "
                    "more on an autoscaling cluster and the waiting actors make Ray add "
                    "worker nodes)")
    bi.add_argument("--shards", type=int, default=16)
    bi.add_argument("--prompts-per-shard", type=int, default=8)
    bi.add_argument("--new-tokens", type=int, default=64)
    bi.add_argument("--gpus-per-worker", type=float, default=0)
    dd = sub.add_parser("ddp", help="DDP training of the tiny model (torchrun's ranks, or 2 "
                        "local gloo ranks compared with one process)")
    dd.add_argument("--steps", type=int, default=8)
    dd.add_argument("--global-batch", type=int, default=16)
    dd.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args(argv)
    result = _cli_batch_inference(args) if args.command == "batch-inference" else _cli_ddp(args)
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
