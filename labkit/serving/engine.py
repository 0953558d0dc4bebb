"""The engine: the model and its scheduler in a loop of their own, and the front end's client.

As in vLLM V1 (its ``EngineCore``, in a process of its own since 2025), the engine runs apart
from the HTTP front end and the two exchange messages over ZeroMQ sockets (``ipc://`` files in
a private 0700 folder; pickled Python tuples, both ends are this package):

- front end → engine (PUSH → PULL): ``("add", rid, request)``, ``("abort", rid)``,
  ``("reset_prefix_cache",)``, ``("shutdown",)``;
- engine → front end (PUSH → PULL): ``(events, stats)`` after each batch of work. Events are
  ``("ready", info)``, ``("ack", rid, prompt_tokens)``, ``("err", rid, status, message)``,
  ``("tok", rid, text, finish_reason, n_tokens, first_token_at)`` (one per token when the
  request streams, one at the end when it does not); ``stats`` feeds the gauges.

:func:`run_engine` is the loop. :class:`EngineClient` is the front end's side: it starts the
engine (in its own process, or in a thread of the HTTP process for the single-process design),
routes events to the waiting requests, and notices an engine that dies: every request waiting
on it gets a 503 and ``on_death`` is called (the server then exits non-zero), never a hang.

Imports :mod:`labkit.serving.config`, :mod:`labkit.serving.protocol` and, in the engine only,
:mod:`labkit.serving.batching` (torch); the front end's side imports no torch.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid

from labkit.serving.config import ServerConfig
from labkit.serving.protocol import CHAT_TEMPLATES, RequestError, render_chat

__all__ = ["run_engine", "EngineClient", "EngineDead"]

#: longest the engine blocks on its socket before it checks its parent again (ms)
POLL_MS = 100


class EngineDead(RuntimeError):
    """The engine is gone (crashed, killed or shut down)."""


def _die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):      # not Linux: the parent check in the loop remains
        pass


def _prompt_text(model, request: dict) -> str:
    if request.get("messages") is None:
        return request["prompt"]
    template = CHAT_TEMPLATES[model.name]
    source = None
    if template == "model":
        from labkit.inference.smollm2 import smollm2_dir

        source = (smollm2_dir() / "chat_template.jinja").read_text()
    return render_chat(request["messages"], template, source)


def run_engine(config: ServerConfig, in_addr: str, out_addr: str, *, model=None,
               parent_pid: int | None = None, context=None) -> int:
    """The engine loop: load the model (unless given), announce ``ready``, then serve until
    ``("shutdown",)`` and no sequence left, or until the parent process is gone. Returns 0."""
    import zmq

    from labkit.serving.batching import Scheduler, Sequence

    ctx = context or zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.connect(in_addr)
    push.connect(out_addr)
    try:
        if model is None:
            import torch

            from labkit.inference.loading import load_model

            torch.set_num_threads(config.threads)
            model = load_model(config.model)
        sched = Scheduler(model, config)
        push.send_pyobj(([("ready", {"pid": os.getpid(), "model": model.name,
                                     "context_length": model.context_length})],
                         sched.stats()))
        stopping, last = False, sched.stats()
        while True:
            wait = sched.seconds_until_work()
            timeout = POLL_MS if wait is None else min(POLL_MS, int(wait * 1e3))
            events: list = []
            if pull.poll(timeout):
                while True:
                    try:
                        msg = pull.recv_pyobj(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if msg[0] == "add":
                        rid, req = msg[1], msg[2]
                        try:
                            text = _prompt_text(model, req)
                            seq = Sequence(rid, model.encode(text), req["max_tokens"],
                                           req["temperature"], req["top_p"], req["seed"],
                                           tuple(req["stop"]), req["arrival"],
                                           final_only=not req.get("stream", True))
                            events.append(("ack", rid, sched.add(seq)))
                        except RequestError as err:
                            events.append(("err", rid, err.status, err.message))
                        except Exception as err:  # noqa: BLE001 - a bad request, not a crash
                            events.append(("err", rid, 500, f"could not accept the request: "
                                                            f"{err}"))
                    elif msg[0] == "abort":
                        sched.abort(msg[1])
                    elif msg[0] == "reset_prefix_cache":
                        sched.reset_prefix_cache()
                    elif msg[0] == "shutdown":
                        stopping = True
            observed = {}
            if sched.seconds_until_work() == 0:
                step_events, observed = sched.step()
                events += step_events
            stats = sched.stats()
            if events or observed.get("batch_sizes") or observed.get("prefix_queries") \
                    or stats != last:
                push.send_pyobj((events, {**stats, **observed}))   # gauges never go stale
                last = stats
            if stopping and not sched.has_unfinished():
                return 0
            if parent_pid is not None and os.getppid() != parent_pid:
                return 0
    finally:
        pull.close(linger=0)
        push.close(linger=500)
        if context is None:
            ctx.term()


def _engine_process_main(config, in_addr, out_addr, parent_pid) -> None:
    """Entry point of the engine process (multiprocessing, spawn)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # the front end decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(run_engine(config, in_addr, out_addr, parent_pid=parent_pid))


class EngineClient:
    """The front end's side of the engine (runs on the front end's event loop).

    Attributes: ``ready`` (the engine announced itself), ``dead`` (a reason, or None),
    ``info`` (what ``ready`` carried: ``pid``, ``model``), ``running`` (sequences running,
    from the last stats), ``outstanding`` (sequences sent and not finished).
    """

    def __init__(self, config: ServerConfig, metrics, *, model=None, on_death=None) -> None:
        self.config, self.metrics, self.model = config, metrics, model
        self.on_death = on_death
        self.ready, self.dead, self.info = False, None, {}
        self.running = self.engine_waiting = 0
        self.requests: dict[str, asyncio.Queue] = {}      # rid -> where its events go
        self.unacked: set[str] = set()                    # sent, not yet acked by the engine
        self._stopping = False
        self._proc = self._thread = None
        self._task = None

    @property
    def outstanding(self) -> int:
        return len(self.requests)

    @property
    def waiting(self) -> int:
        """Sequences waiting for a batch slot, as the front end's admission control counts
        them: those sent and not yet acknowledged by the engine, plus those the engine last
        reported waiting. (Counting "sent and not finished minus running" instead would count
        the answers a busy front end has not read yet, and refuse work the engine has room
        for.)"""
        return len(self.unacked) + self.engine_waiting

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        import zmq
        import zmq.asyncio

        self._dir = tempfile.mkdtemp(prefix="labkit-ipc-")   # mode 0700: only this user
        in_addr, out_addr = f"ipc://{self._dir}/in", f"ipc://{self._dir}/out"
        self._ctx = zmq.asyncio.Context()
        self._push, self._pull = self._ctx.socket(zmq.PUSH), self._ctx.socket(zmq.PULL)
        self._push.bind(in_addr)
        self._pull.bind(out_addr)
        if self.config.engine == "thread" or self.model is not None:
            self._thread = threading.Thread(
                target=self._thread_main, args=(in_addr, out_addr), name="engine", daemon=True)
            self._thread.start()
        else:
            import multiprocessing

            mp = multiprocessing.get_context("spawn")
            self._proc = mp.Process(target=_engine_process_main, name="labkit-engine",
                                    args=(self.config, in_addr, out_addr, os.getpid()),
                                    daemon=True)
            self._proc.start()
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    def _thread_main(self, in_addr: str, out_addr: str) -> None:
        try:
            run_engine(self.config, in_addr, out_addr, model=self.model)
        except BaseException as err:  # noqa: BLE001 - noticed by the dispatcher
            self._thread_error = err

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.is_alive()
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else os.getpid()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the engine to finish and exit; kill it if it has not after ``timeout_s``."""
        self._stopping = True
        if self.alive():
            try:
                await self._push.send_pyobj(("shutdown",))
            except Exception:  # noqa: BLE001 - gone already
                pass
        deadline = time.monotonic() + timeout_s
        while self.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
        if self._task is not None:
            self._task.cancel()
        self._push.close(linger=0)
        self._pull.close(linger=0)
        self._ctx.term()
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- requests ----------------------------------------------------------------------------
    async def add(self, request: dict, queue: asyncio.Queue) -> str:
        """Send one sequence to the engine; its events will be put on ``queue``. Returns its
        id."""
        if self.dead:
            raise EngineDead(self.dead)
        rid = uuid.uuid4().hex
        self.requests[rid] = queue
        self.unacked.add(rid)
        await self._push.send_pyobj(("add", rid, request))
        return rid

    async def reset_prefix_cache(self) -> None:
        """Ask the engine to drop its cached prefix blocks (those no running sequence holds);
        requests sent after this call see the emptied cache (the socket keeps the order)."""
        if self.dead:
            raise EngineDead(self.dead)
        await self._push.send_pyobj(("reset_prefix_cache",))

    def abort(self, rid: str) -> None:
        """Forget ``rid`` and tell the engine to drop it (fire and forget)."""
        self.unacked.discard(rid)
        if self.requests.pop(rid, None) is not None and not self.dead:
            asyncio.get_running_loop().create_task(self._send_abort(rid))

    async def _send_abort(self, rid: str) -> None:
        try:
            await self._push.send_pyobj(("abort", rid))
        except Exception:  # noqa: BLE001 - the engine is gone; nothing to abort
            pass

    def finished(self, rid: str) -> None:
        self.requests.pop(rid, None)

    # -- events ------------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        import zmq

        # a plain socket over the same handle, to read every waiting message in one turn of
        # the event loop: under a flood a turn is long, and one message per turn would fall
        # behind the engine
        reader = zmq.Socket.shadow(self._pull.underlying)
        try:
            while True:
                if await self._pull.poll(200):
                    while True:
                        try:
                            events, stats = reader.recv_pyobj(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._route(events, stats)
                elif not self.alive():
                    break
        except asyncio.CancelledError:
            return
        except Exception as err:  # noqa: BLE001 - a broken socket: the engine is unusable
            self._die(f"the engine connection broke: {err}")
            return
        if not self._stopping:
            code = self._proc.exitcode if self._proc is not None else None
            self._die(f"the engine exited unexpectedly (exit code {code})")

    def _route(self, events: list, stats: dict) -> None:
        m = self.metrics
        for event in events:
            kind = event[0]
            if kind == "ready":
                self.ready, self.info = True, event[1]
                continue
            queue = self.requests.get(event[1])
            if kind in ("ack", "err"):
                self.unacked.discard(event[1])
            if kind == "tok":
                m.generation_tokens.inc(event[4])
            elif kind == "ack":
                m.prompt_tokens.inc(event[2])
            if queue is not None:
                queue.put_nowait(event)
        if stats:
            self.running, self.engine_waiting = stats["running"], stats["waiting"]
            m.record_stats(stats)

    def _die(self, reason: str) -> None:
        self.dead, self.ready = reason, False
        for rid, queue in list(self.requests.items()):
            queue.put_nowait(("err", rid, 503, f"{reason}; retry on another replica"))
        if self.on_death is not None:
            self.on_death(reason)
