"""Ray, started the course's way and always shut down: :class:`RaySession`.

Locally it starts a private cluster with :func:`default_num_cpus` CPUs (2 to 4: the usable
cores), no dashboard web UI, usage statistics off, an object store capped at
:data:`RAY_OBJECT_STORE_BYTES`, token authentication with a token that lives only in the
environment (nothing is written to ``~/.ray``) and its temp folder inside the course's scratch
area (:mod:`labkit.machine.scratch`). When ``RAY_ADDRESS`` is set (a RayJob on KubeRay sets
it for its entrypoint) the same code connects to that cluster instead, so one script runs on a
laptop and on EKS unchanged. Leaving the session (``with``, :meth:`RaySession.shutdown`, a failing
notebook cell after :meth:`RaySession.close_on_cell_error`, or interpreter exit) shuts Ray
down, waits for every process the session started, ends stragglers by their pid, removes the
temp folder and raises if any Ray process is left (:mod:`~labkit.distributed.processes`).
Imports Ray (on use), :mod:`labkit.machine` (``scratch``; ``facts`` on use) and
:mod:`~labkit.distributed.processes`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.distributed.processes import (OWNER_ENV, SESSION_ENV, cleanup_dead_sessions,
                                          marked_processes, owner_tag, ray_descendants,
                                          ray_processes, write_owner_file)
from labkit.machine.scratch import scratch_dir, scratch_root


#: CPUs of the local Ray cluster on the course machine (2 cores); see :func:`default_num_cpus`.
RAY_NUM_CPUS = 2
#: Most CPUs a local session takes by default (4 workers of the lab stay under 2 GiB of memory).
RAY_MAX_CPUS = 4
#: Cap of the local object store (Ray's default is 30 % of RAM, 7 GB here).
RAY_OBJECT_STORE_BYTES = 256 * 2**20
#: Unix socket paths are limited to 107 bytes; Ray puts its sockets at
#: ``<temp>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store`` (up to 64 bytes after
#: ``<temp>``), so the temp folder's path must stay this short.
_MAX_TEMP_PATH = 107 - 64
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


def default_num_cpus() -> int:
    """CPUs of a local Ray session: the usable cores, at least 2 (the lab compares 1 and 2
    workers) and at most :data:`RAY_MAX_CPUS`."""
    from labkit.machine.facts import usable_cores

    return max(RAY_NUM_CPUS, min(usable_cores(), RAY_MAX_CPUS))


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
                               "(labkit.distributed.session.shutdown_all() for a RaySession, else "
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
                write_owner_file(self.temp_dir, self.id)
                self._set_env({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                               "RAY_AUTH_TOKEN": _process_token(), SESSION_ENV: self.id,
                               OWNER_ENV: owner_tag()})
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
        """The session's processes now (see
        :func:`~labkit.distributed.processes.ray_processes`)."""
        return ray_processes(self.id) if self.mode == "local" else []

    # -- internals ---------------------------------------------------------------------------
    def _session_processes(self) -> list:
        if self.mode != "local":
            return []
        return [*marked_processes(self.id), *ray_descendants(self.id)]

    def _remember_processes(self) -> None:
        for proc in self._session_processes():
            self._procs.setdefault(proc.pid, proc)

    @staticmethod
    def _end_processes(procs: list, grace_s: float = 10.0) -> tuple[int, list[int]]:
        """Wait up to ``grace_s`` for ``procs`` to exit; SIGKILL those still running (they
        were started by this session: psutil checks the pid still names the same process)."""
        if not procs:
            return 0, []
        import psutil

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
