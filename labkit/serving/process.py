"""Running the server: ``python -m labkit serve``, and :class:`ServerProcess` to run it as a
subprocess from Python or a notebook.

:func:`serve` runs the front end (uvicorn + :func:`labkit.serving.frontend.create_app`) in this
process; the app starts the engine (its own process by default). SIGINT/SIGTERM stop it
gracefully: uvicorn stops accepting, the requests in flight finish, then the engine is told to
exit and is joined (killed if it does not go). An engine that dies makes the server answer 503
and exit with code 1.

:class:`ServerProcess` starts ``python -m labkit serve`` on a free port of 127.0.0.1, waits for
``/readyz``, and always stops it: context manager, :meth:`~ServerProcess.stop`, atexit, and an
exit-with-parent watchdog; it also makes sure the engine process is gone. Its log lives in a
scratch folder under ``.scratch/`` (:mod:`labkit.machine.scratch`), removed when it stops and
swept at the next start if its owner died.

Imports :mod:`labkit.serving.config` and (to run the server) :mod:`labkit.serving.frontend`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

from labkit.machine.net import free_port
from labkit.serving.config import BATCHING, ENGINES, MODELS, ServerConfig

__all__ = ["serve", "serve_cli", "ServerProcess", "start_server", "free_port", "option_flags",
           "sweep_logs", "switch_interval_s", "LOG_PREFIX", "EXPOSED_WARNING",
           "SWITCH_INTERVAL_S", "watch_parent", "NEGATABLE"]


def watch_parent(parent: int) -> None:
    """Stop this server (SIGTERM, graceful) when the process that started it is gone."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


#: default GIL switch interval of the server process (Python's own default is 0.005 s)
SWITCH_INTERVAL_S = 0.001

#: printed when the server binds to an address other than loopback
EXPOSED_WARNING = ("this server has no authentication: binding to {host} exposes "
                   "/v1/completions and /metrics (process data included) to every machine "
                   "that can reach this one. Inside a Pod that is what a Service needs; "
                   "elsewhere keep the default 127.0.0.1.")


def switch_interval_s(environ=None) -> float:
    """The GIL switch interval for the server process: ``LABKIT_SWITCH_INTERVAL_S`` if set
    (a number of seconds, 1e-6 to 0.1), else :data:`SWITCH_INTERVAL_S`; ValueError otherwise."""
    raw = (os.environ if environ is None else environ).get("LABKIT_SWITCH_INTERVAL_S")
    if raw is None or raw.strip() == "":
        return SWITCH_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"LABKIT_SWITCH_INTERVAL_S must be a number of seconds, "
                         f"got {raw!r}") from None
    if not 1e-6 <= value <= 0.1:              # also refuses nan and inf
        raise ValueError(f"LABKIT_SWITCH_INTERVAL_S must be between 1e-6 and 0.1 s, "
                         f"got {raw!r}")
    return value


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(config: ServerConfig | None = None, host: str = "127.0.0.1", port: int = 8000, *,
          exit_with_parent: bool = False, log_level: str = "warning",
          switch_interval: float | None = None) -> int:
    """Run the server in this process until SIGINT/SIGTERM (then finish requests in flight).
    Returns 0, or 1 when the engine died (the server then stops by itself).

    ``switch_interval``: set the GIL switch interval (seconds) for the time the server runs,
    then restore it. ``python -m labkit serve`` passes :func:`switch_interval_s`: with
    ``--engine thread`` the engine and the event loop share the GIL, and a shorter interval
    lets the loop answer while a batch decodes. The default, None, leaves the interval alone:
    it is process-wide, and a notebook that calls ``serve()`` keeps its own.
    """
    config = config or ServerConfig()
    if not _is_loopback(host):
        print(f"labkit serve: warning: {EXPOSED_WARNING.format(host=host)}", file=sys.stderr,
              flush=True)
    previous = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    try:
        return _run_uvicorn(config, host, port, exit_with_parent, log_level)
    finally:
        sys.setswitchinterval(previous)


def _run_uvicorn(config, host, port, exit_with_parent, log_level) -> int:
    import uvicorn

    from labkit.serving.frontend import create_app

    if exit_with_parent:
        threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    died: list[str] = []
    holder: dict = {}

    def on_engine_death(reason: str) -> None:
        print(f"labkit serve: {reason}; answering 503 and exiting", file=sys.stderr,
              flush=True)
        died.append(reason)
        holder["server"].should_exit = True

    uv = uvicorn.Config(create_app(config, on_engine_death=on_engine_death), host=host,
                        port=port, log_level=log_level,
                        timeout_graceful_shutdown=config.shutdown_timeout_s,
                        access_log=False, backlog=2048)
    holder["server"] = uvicorn.Server(uv)
    holder["server"].run()
    return 1 if died else 0


def _parser() -> argparse.ArgumentParser:
    d = ServerConfig()
    p = argparse.ArgumentParser(prog="python -m labkit serve",
                                description="Run the course's inference server.")
    p.add_argument("--model", choices=MODELS, default=d.model)
    p.add_argument("--served-model-name", default=None,
                   help="the name clients send as `model` and the metrics' model_name label "
                        "(default: --model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only). WARNING: the "
                        "server has no authentication; 0.0.0.0 exposes it, /metrics included, "
                        "to every machine that can reach this one (in a Pod, what a Service "
                        "needs; put a NetworkPolicy in front of it)")
    p.add_argument("--port", type=int, default=8000)
    for flag, choices, help_text in (
            ("engine", ENGINES, "process: the engine runs in its own process, as in vLLM V1 "
                                "(default); thread: in a thread of the HTTP process (the "
                                "single-process design)"),
            ("batching", BATCHING, "dynamic: whole batches, Triton-style (default); "
                                   "continuous: requests join and leave the batch at every "
                                   "decode step, vLLM-style")):
        p.add_argument(f"--{flag}", choices=choices, default=getattr(d, flag), help=help_text)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction,
                   default=d.enable_prefix_caching,
                   help="reuse the KV blocks of prompt prefixes seen before (default on, as in "
                        "vLLM V1; --no-enable-prefix-caching turns it off)")
    p.add_argument("--block-size", type=int, default=d.block_size,
                   help="tokens per prefix-cache block")
    p.add_argument("--prefix-cache-blocks", type=int, default=d.prefix_cache_blocks,
                   help="most blocks the prefix cache holds (LRU eviction)")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help="most sequences decoded together; 1 turns batching off (continuous: "
                        "the number of slots)")
    p.add_argument("--max-queue-delay-ms", type=float, default=d.max_queue_delay_ms,
                   help="dynamic batching: longest wait for a batch to fill (continuous "
                        "batching does not wait and ignores it)")
    p.add_argument("--max-queue-size", type=int, default=d.max_queue_size)
    p.add_argument("--max-tokens-limit", type=int, default=d.max_tokens_limit)
    p.add_argument("--max-prompt-chars", type=int, default=d.max_prompt_chars)
    p.add_argument("--request-timeout-s", type=float, default=d.request_timeout_s)
    p.add_argument("--threads", type=int, default=d.threads, help="PyTorch threads")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started the server exits")
    p.add_argument("--log-level", default="warning")
    return p


def serve_cli(argv: list[str]) -> int:
    """``python -m labkit serve [--model …] [--port …] [--engine …] [--batching …]``
    (see ``--help``); returns the exit code (2 for invalid settings, 1 when the engine
    died)."""
    args = _parser().parse_args(argv)
    try:
        config = ServerConfig(model=args.model, served_model_name=args.served_model_name,
                              batching=args.batching, engine=args.engine,
                              max_batch_size=args.max_batch_size,
                              max_queue_delay_ms=args.max_queue_delay_ms,
                              max_queue_size=args.max_queue_size,
                              max_tokens_limit=args.max_tokens_limit,
                              max_prompt_chars=args.max_prompt_chars,
                              request_timeout_s=args.request_timeout_s, threads=args.threads,
                              max_tokens_default=min(16, args.max_tokens_limit),
                              enable_prefix_caching=args.enable_prefix_caching,
                              block_size=args.block_size,
                              prefix_cache_blocks=args.prefix_cache_blocks)
        interval = switch_interval_s()
    except ValueError as err:
        print(f"labkit serve: {err}", file=sys.stderr)
        return 2
    return serve(config, args.host, args.port, exit_with_parent=args.exit_with_parent,
                 log_level=args.log_level, switch_interval=interval)


_LIVE: weakref.WeakSet = weakref.WeakSet()

#: prefix of the scratch folders that hold a server's log (``labkit-serve-<owner pid>-…``)
LOG_PREFIX = "labkit-serve-"


#: options whose flag has a ``--no-`` form (argparse.BooleanOptionalAction), on by default
NEGATABLE = ("enable_prefix_caching",)


def option_flags(options: dict) -> list[str]:
    """Command-line flags for ``python -m labkit serve`` from keyword options:
    ``max_batch_size=4`` → ``--max-batch-size 4``; ``True`` → the bare flag; ``False`` or
    ``None`` → nothing (argparse's ``store_true`` flags take no value), except for the
    options of :data:`NEGATABLE`: ``enable_prefix_caching=False`` →
    ``--no-enable-prefix-caching``; a list → the flag once per item."""
    flags = []
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            flags.append(flag)
        elif value is False and key in NEGATABLE:
            flags.append(f"--no-{key.replace('_', '-')}")
        elif isinstance(value, (list, tuple)):
            for item in value:
                flags += [flag, str(item)]
        elif value is not False and value is not None:
            flags += [flag, str(value)]
    return flags


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_logs(root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the log folders of servers whose owner process is gone (it was killed before it
    could clean up); returns the folders removed. Folders of live owners are kept."""
    import shutil

    from labkit.machine.scratch import scratch_root

    base = Path(root) if root else scratch_root()
    removed = []
    if not base.is_dir():
        return removed
    for folder in base.glob(LOG_PREFIX + "*"):
        owner = folder.name[len(LOG_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class ServerProcess:
    """The server running as a subprocess on 127.0.0.1; stop it with :meth:`stop` or use it as
    a context manager. It also stops when this Python process exits (atexit) or dies (the
    server's exit-with-parent watchdog).

    Attributes: ``url`` (``http://127.0.0.1:PORT``), ``port``, ``pid``, ``options``.
    """

    #: the ``python -m labkit`` command it runs (a subclass runs ``route``)
    COMMAND = "serve"

    def __init__(self, port: int | None = None, **options) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.options = options
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._log_path: Path | None = None
        self._scratch: contextlib.ExitStack | None = None
        self.engine_pid: int | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the front end (``python -m labkit serve``); the engine's is
        ``engine_pid`` (the same with ``engine="thread"``)."""
        return self.proc.pid if self.proc else None

    def start(self, ready_timeout_s: float = 60.0) -> "ServerProcess":
        """Start it and wait until ``/readyz`` answers 200; raise RuntimeError (with the log)
        if it does not within ``ready_timeout_s``."""
        import httpx

        from labkit.machine.scratch import scratch_dir

        options = {"exit_with_parent": True, **self.options}
        cmd = [sys.executable, "-m", "labkit", self.COMMAND, "--port", str(self.port),
               *option_flags(options)]
        sweep_logs()
        self._scratch = contextlib.ExitStack()
        folder = self._scratch.enter_context(
            scratch_dir(prefix=f"{LOG_PREFIX}{os.getpid()}-{self.port}-"))
        self._log_path = folder / "server.log"
        self._log = open(self._log_path, "w+")
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        _LIVE.add(self)
        deadline = time.monotonic() + ready_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    log = self.log()
                    self.stop()
                    raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n"
                                       f"{log}")
                try:
                    ready = client.get(self.url + "/readyz")
                    if ready.status_code == 200:
                        self.engine_pid = ready.json().get("engine_pid")
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        log = self.log()
        self.stop()
        raise RuntimeError(f"the server was not ready after {ready_timeout_s} s:\n{log}")

    def log(self) -> str:
        """What the server printed so far."""
        if self._log_path is None:
            return ""
        try:
            return self._log_path.read_text()
        except OSError:
            return ""

    def metric(self, name: str, labels: dict | None = None) -> float:
        """The current value of one sample of the server's ``/metrics`` (0 if absent)."""
        import httpx

        from labkit.serving.metrics import metric_value

        return metric_value(httpx.get(self.url + "/metrics", timeout=10).text, name, labels)

    def in_flight(self) -> int:
        """Requests the server has accepted and not yet answered (its
        ``labkit_requests_in_flight`` gauge: running plus waiting)."""
        return int(self.metric("labkit_requests_in_flight"))

    def wait_in_flight(self, count: int, timeout_s: float = 30.0) -> int:
        """Poll the in-flight gauge until it reaches ``count``; return it, or raise
        TimeoutError. A readiness signal for "the requests have arrived" that does not guess
        with a sleep."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.in_flight()
            if seen >= count:
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} requests in flight after {timeout_s} s, "
                                   f"expected {count}")
            time.sleep(0.005)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self, engine: bool = False) -> int:
        """Resident memory of the front-end process (``engine=True``: of the engine), from
        /proc (Linux)."""
        pid = self.engine_pid if engine else self.pid
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (graceful: requests in flight finish), then SIGKILL after ``timeout_s``;
        then the engine process, if it outlived the front end, is killed too. Returns the
        front end's exit code; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        engine = self.engine_pid
        if engine and self.proc is not None and engine != self.proc.pid:
            deadline = time.monotonic() + 5.0
            while _alive(engine) and time.monotonic() < deadline:
                time.sleep(0.02)               # it exits when its parent has (PDEATHSIG)
            if _alive(engine):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(engine, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._scratch is not None:             # removes the log's scratch folder
            self._scratch.close()
            self._scratch = None
        _LIVE.discard(self)
        return self.proc.returncode if self.proc else None

    def __enter__(self) -> "ServerProcess":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"{type(self).__name__}({self.url}, pid {self.pid}, {state}, {self.options})"


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(5.0)


def start_server(**options) -> "ServerProcess":
    """Start ``python -m labkit serve`` with ``options`` (``max_batch_size=1`` …) as a
    subprocess on a free port and wait until it is ready. Use ``with start_server() as s:`` or
    call ``s.stop()`` in a ``finally``."""
    return ServerProcess(**options).start()

