"""Work on Ray: what tasks, actors and the object store cost; batch inference
over shards; fault tolerance.

:func:`ray_overheads` and :func:`object_store_rates` (what a task, an actor call and a
``ray.put`` cost); :class:`ShardWorker` and :func:`batch_inference` (the course's tiny model
run over shards of prompts by Ray actors) with :func:`serial_inference` as the in-process
baseline; :func:`run_actor_kill` and :func:`run_flaky_tasks` (actor restarts and task
retries). Every function needs a running session (:class:`labkit.distributed.session.RaySession`).
Imports Ray and torch (on use), :mod:`labkit.machine.timing`, :mod:`labkit.inference` (on
use), :mod:`labkit.machine.scratch` and :mod:`~labkit.distributed.processes`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.distributed.processes import write_owner_file
from labkit.machine.scratch import scratch_dir
from labkit.machine.timing import Samples, timeit, timing


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


def ray_overheads(n_tasks: int = 200, repeats: int = 3) -> dict[str, Samples]:
    """Per-call cost of the ways to run code, in seconds per call (a running session needed).

    Keys: ``local call`` (a Python function call), ``task, one at a time`` (submit one
    no-op task and wait for it), ``task, pipelined`` (``n_tasks`` submitted at once, then
    waited for; time divided by ``n_tasks``), ``actor call`` (one method call on a running
    actor), ``actor start`` (create an actor and wait for its first reply: a new process).
    Every value is a :class:`labkit.machine.timing.Samples` over ``repeats`` repetitions.
    """
    import ray

    noop, echo = _remote(_noop), _remote(_Echo, num_cpus=0)
    timings = {"local call": timeit(lambda: _noop(1), repeats=repeats, name="local call")}
    one = timeit(lambda: ray.get(noop.remote(1)), repeats=max(repeats, 10), warmup=2,
                 name="task, one at a time")
    timings[one.name] = one
    batch = timeit(lambda: ray.get([noop.remote(i) for i in range(n_tasks)]),
                   repeats=repeats, warmup=1)
    timings["task, pipelined"] = timing("task, pipelined",
                                        tuple(t / n_tasks for t in batch.times_s))

    def start_actor():
        actor = echo.remote()
        ray.get(actor.ping.remote())
        ray.kill(actor)

    timings["actor start"] = timeit(start_actor, repeats=repeats, warmup=0,
                                    name="actor start")
    actor = echo.remote()
    try:
        timings["actor call"] = timeit(lambda: ray.get(actor.ping.remote(1)),
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

    Returns one dict per size: ``bytes``, ``put`` and ``get`` (timing
    :class:`~labkit.machine.timing.Samples`),
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
        put = timeit(lambda: ray.put(array), repeats=repeats, name="put")
        ref = ray.put(array)
        get = timeit(lambda: ray.get(ref), repeats=repeats, name="get")
        back = get.result
        task = timeit(lambda: ray.get(summer.remote(ref)), repeats=repeats,
                      name="task read")
        rows.append({"bytes": array.nbytes, "put": put, "get": get,
                     "put_GBps": array.nbytes / put.min_s / 1e9,
                     "get_zero_copy": not back.flags.writeable,
                     "task_read": task, "sum_ok": task.result == float(array.size)})
        del ref, back, get, put, task
    return rows


def corpus_prompts(n: int, words: int = 6) -> list[str]:
    """``n`` prompts: the first ``words`` words of the lines of the tiny model's corpus
    (cycled if ``n`` is larger than the number of lines). Deterministic."""
    if n < 1 or words < 1:
        raise ValueError(f"n and words must be >= 1, got n={n}, words={words}")
    text = (Path(__file__).resolve().parent.parent / "data" / "tiny_corpus.txt").read_text(
        encoding="utf-8")
    lines = [" ".join(line.split()[:words]) for line in text.splitlines()
             if len(line.split()) >= words and not line.startswith("#")]
    return [lines[i % len(lines)] for i in range(n)]


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

        from labkit.inference.language_model import load_tiny_gpt

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
        """Throughput of the whole pass, tokens / wall time."""
        return self.tokens / self.wall_s

    @property
    def busy_s(self) -> float:
        """Compute seconds summed over shards (what the workers spent generating)."""
        return sum(r["seconds"] for r in self.results)

    @property
    def cpu_share(self) -> float:
        """CPU time the workers got ÷ (wall time × workers). 1.0 means every worker had a
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
        write_owner_file(folder)
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
