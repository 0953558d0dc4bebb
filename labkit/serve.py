"""The course's inference server: FastAPI + uvicorn in front of a
:class:`labkit.models.LanguageModel`.

What a server adds over a backend, in one module you can read:

- an OpenAI-compatible subset, ``POST /v1/completions`` (``prompt``, ``max_tokens``,
  ``temperature``, ``seed``, ``stream`` with server-sent events, and
  ``stream_options.include_usage``, which adds a last event with the token counts);
- ``GET /healthz`` (liveness: the process answers), ``GET /readyz`` (readiness: the model is
  loaded), ``GET /metrics`` (Prometheus text: requests, latency, time to first token, queue
  depth, batch size, tokens);
- **dynamic batching** with Triton's two knobs: requests wait at most ``max_queue_delay_ms``
  (counted from the oldest waiting request) for others, and at most ``max_batch_size`` run
  together through one :meth:`~labkit.models.LanguageModel.generate` call (:class:`Batcher`);
- or **continuous batching** (``batching="continuous"``, :class:`ContinuousBatcher`), the
  iteration-level scheduling of Orca and vLLM: ``max_batch_size`` slots decode together, a
  waiting request joins at the next decode step as soon as a slot is free, and a finished one
  leaves at once, so short answers no longer wait for the longest one of their batch;
- a **bounded queue**: when ``max_queue_size`` requests already wait, the next gets 429 with
  ``Retry-After``, so overload turns into fast refusals instead of growing latency;
- validation with messages (422), a body-size limit (413), a prompt-length limit, a
  per-request timeout (504), and a graceful shutdown that finishes the requests in flight.

Run it with ``python -m labkit serve`` (see ``--help``); it binds to 127.0.0.1 unless told
otherwise. It has no authentication: ``--host 0.0.0.0`` exposes it, ``/metrics`` included,
to every machine that can reach this one (inside a Pod that is what a Service needs; put a
NetworkPolicy in front of it). From Python or a notebook, :func:`start_server` runs it as a
subprocess that is always stopped (context manager, ``stop()``, and an exit-with-parent
watchdog); its log lives in a scratch folder under ``.scratch/`` (:mod:`labkit.scratch`),
removed when it stops, and swept at the next start if its owner died.

The load generator lives in :mod:`labkit.loadgen`; ``python -m labkit bench serve`` is
:func:`bench_serve_cli`.
"""

import argparse
import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ServerConfig", "create_app", "serve", "serve_cli", "ServerProcess", "start_server",
           "free_port", "bench_serve", "bench_serve_cli", "MODELS", "BATCHING", "Batcher",
           "ContinuousBatcher", "switch_interval_s", "option_flags", "sweep_logs"]

#: model names the server accepts (``--model``)
MODELS = ("tiny-gpt", "smollm2")

#: batching modes the server accepts (``--batching``)
BATCHING = ("dynamic", "continuous")


@dataclass(frozen=True)
class ServerConfig:
    """Settings of the server (each is a ``--flag`` of ``python -m labkit serve``).

    Attributes:
        model: ``"tiny-gpt"`` (default; the course's 0.9 M-parameter model) or ``"smollm2"``.
        max_batch_size: most requests decoded together; 1 turns batching off (Triton's
            ``max_batch_size``). With continuous batching: the number of slots, i.e. of
            sequences decoding together (vLLM's ``max_num_seqs``).
        max_queue_delay_ms: dynamic batching only: longest a request waits for others before
            its batch starts, counted from the oldest waiting request (Triton's
            ``max_queue_delay_microseconds``, in ms). Continuous batching does not wait: a
            request joins at the next decode step when a slot is free.
        max_queue_size: requests allowed to wait; one more gets 429.
        max_tokens_default: ``max_tokens`` when the request gives none.
        max_tokens_limit: largest ``max_tokens`` accepted.
        max_prompt_chars: longest prompt accepted, in characters (then the model's context
            limits it in tokens).
        max_body_bytes: largest request body accepted (413 above it).
        request_timeout_s: a request not finished after this many seconds gets 504.
        threads: PyTorch threads of the inference worker.
        shutdown_timeout_s: how long a graceful shutdown waits for requests in flight.
        batching: ``"dynamic"`` (default: whole batches through ``generate``, see
            :class:`Batcher`) or ``"continuous"`` (token-level, see :class:`ContinuousBatcher`).
    """

    model: str = "tiny-gpt"
    max_batch_size: int = 16
    max_queue_delay_ms: float = 5.0
    max_queue_size: int = 64
    max_tokens_default: int = 16
    max_tokens_limit: int = 128
    max_prompt_chars: int = 4096
    max_body_bytes: int = 64 * 1024
    request_timeout_s: float = 30.0
    threads: int = 1
    shutdown_timeout_s: float = 30.0
    batching: str = "dynamic"

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {self.batching!r}")
        for name in ("max_batch_size", "max_queue_size", "max_tokens_default",
                     "max_tokens_limit", "max_prompt_chars", "max_body_bytes", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("max_queue_delay_ms", "request_timeout_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.max_tokens_default > self.max_tokens_limit:
            raise ValueError("max_tokens_default must not exceed max_tokens_limit")


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message that says what to fix."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def parse_completion_request(body: bytes, config: ServerConfig) -> dict:
    """Check a ``/v1/completions`` body; return ``prompt``, ``max_tokens``, ``temperature``,
    ``stream``, ``seed`` and ``include_usage`` (from ``stream_options``, OpenAI's shape), or
    raise :class:`RequestError` (422) saying what is wrong.

    Fields the server does not implement (OpenAI has many) are ignored, as vLLM does.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(422, f"the body is not valid JSON ({err}); send "
                                f'{{"prompt": "...", "max_tokens": 16}}') from None
    if not isinstance(data, dict):
        raise RequestError(422, f"the body must be a JSON object, got {type(data).__name__}")
    if "prompt" not in data:
        raise RequestError(422, "missing field 'prompt' (a non-empty string)")
    prompt = data["prompt"]
    if not isinstance(prompt, str):
        raise RequestError(422, f"'prompt' must be a string, got {type(prompt).__name__} "
                                f"(lists of prompts are not supported)")
    if not prompt:
        raise RequestError(422, "'prompt' is empty; give at least one character")
    if len(prompt) > config.max_prompt_chars:
        raise RequestError(422, f"'prompt' has {len(prompt):,} characters; the limit is "
                                f"{config.max_prompt_chars:,}")
    max_tokens = data.get("max_tokens", config.max_tokens_default)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise RequestError(422, f"'max_tokens' must be an integer, got {max_tokens!r}")
    if not 1 <= max_tokens <= config.max_tokens_limit:
        raise RequestError(422, f"'max_tokens' must be between 1 and "
                                f"{config.max_tokens_limit}, got {max_tokens}")
    temperature = data.get("temperature", 0.0)
    if temperature is None:
        temperature = 0.0
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not 0 <= temperature <= 2:
        raise RequestError(422, f"'temperature' must be a number from 0 (greedy) to 2, "
                                f"got {temperature!r}")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(422, f"'stream' must be true or false, got {stream!r}")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise RequestError(422, f"'seed' must be a non-negative integer, got {seed!r}")
    options = data.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise RequestError(422, "'stream_options' is only allowed with \"stream\": true")
        if not isinstance(options, dict):
            raise RequestError(422, f"'stream_options' must be an object such as "
                                    f'{{"include_usage": true}}, got {options!r}')
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise RequestError(422, f"'stream_options.include_usage' must be true or false, "
                                    f"got {include_usage!r}")
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": float(temperature),
            "stream": stream, "seed": seed, "include_usage": include_usage}


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
class Metrics:
    """The server's Prometheus metrics, in their own registry (no global state)."""

    def __init__(self) -> None:
        from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                                       ProcessCollector)

        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter("labkit_requests", "Completion requests by HTTP status",
                                ["status"], registry=r)
        self.latency = Histogram("labkit_request_latency_seconds",
                                 "Time from arrival to the last token, successful requests",
                                 buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
                                 registry=r)
        self.ttft = Histogram("labkit_time_to_first_token_seconds",
                              "Time from arrival to the first generated token",
                              buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                              registry=r)
        self.queue_depth = Gauge("labkit_queue_depth", "Requests waiting for a batch",
                                 registry=r)
        self.in_flight = Gauge("labkit_requests_in_flight",
                               "Requests accepted and not yet answered", registry=r)
        self.batch_size = Histogram("labkit_batch_size",
                                    "Requests per batch (dynamic batching) or sequences per "
                                    "decode step (continuous batching)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.tokens = Counter("labkit_generated_tokens", "Tokens generated", registry=r)
        self.tokens_per_s = Gauge("labkit_tokens_per_second",
                                  "Generated tokens per second of the last batch (continuous "
                                  "batching: of the last half second or so)", registry=r)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# --------------------------------------------------------------------------------------------
# the batcher
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Job:
    prompt: str
    prompt_tokens: int
    max_tokens: int
    temperature: float
    seed: int | None
    arrival: float                       # loop.time()
    stream: bool = False
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    ids: list = field(default_factory=list)      # written by the worker thread only
    first_token_at: float | None = None          # loop.time() of the first token
    cancelled: bool = False
    slot: int | None = None                      # continuous batching: its slot while running
    generator: object = None                     # continuous batching: its sampler (seeded)


class Batcher:
    """Collects requests into batches (Triton's dynamic batching) and runs them on one worker
    thread, so the event loop stays free to accept, validate and refuse requests."""

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config, self.metrics = config, metrics
        self.model = None
        self.pending: collections.deque[_Job] = collections.deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="infer")
        self._task: asyncio.Task | None = None
        self.batches = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self, timeout_s: float) -> None:
        """Finish the waiting requests (at most ``timeout_s``), then stop the worker."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- submit ------------------------------------------------------------------------------
    def submit(self, job: _Job) -> None:
        """Queue a job, or raise :class:`RequestError` 429 (queue full) / 503 (stopping)."""
        if self._stopping:
            raise RequestError(503, "the server is shutting down; retry on another replica",
                               {"Retry-After": "1"})
        if len(self.pending) >= self.config.max_queue_size:
            raise RequestError(429, f"the queue is full ({self.config.max_queue_size} requests "
                                    f"waiting); retry later", {"Retry-After": "1"})
        self.pending.append(job)
        self.metrics.queue_depth.set(len(self.pending))
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------
    async def _wait_for_work(self) -> bool:
        """Wait until a request is pending; False when the batcher is stopping and idle."""
        while not self.pending:
            if self._stopping:
                return False
            self._wake.clear()
            await self._wake.wait()
        return True

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.config.max_queue_delay_ms / 1e3
        while await self._wait_for_work():
            # wait for more requests: until the batch is full or the oldest waited `delay`
            deadline = self.pending[0].arrival + delay
            while len(self.pending) < self.config.max_batch_size and not self._stopping:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take_batch()
            self.metrics.queue_depth.set(len(self.pending))
            if not batch:
                continue
            self.metrics.batch_size.observe(len(batch))
            self.batches += 1
            try:
                await loop.run_in_executor(self._executor, self._run_batch, batch, loop)
            except Exception as err:  # noqa: BLE001 - every request of the batch gets the error
                for job in batch:
                    job.events.put_nowait(("error", f"generation failed: {err}"))

    def _take_batch(self) -> list[_Job]:
        """Up to ``max_batch_size`` waiting jobs that can share one ``generate`` call: the same
        temperature and seed, and the longest prompt plus the largest ``max_tokens`` within
        the context. Cancelled jobs are dropped; the others keep their order."""
        ctx = self.model.context_length
        batch: list[_Job] = []
        keep: collections.deque[_Job] = collections.deque()
        while self.pending:
            job = self.pending.popleft()
            if job.cancelled:
                continue
            if len(batch) < self.config.max_batch_size and (not batch or (
                    job.temperature == batch[0].temperature and job.seed == batch[0].seed
                    and max(j.prompt_tokens for j in batch + [job])
                    + max(j.max_tokens for j in batch + [job]) <= ctx)):
                batch.append(job)
            else:
                keep.append(job)
        self.pending = keep
        return batch

    def _record(self, job: _Job, token: int, now: float, streamed: list) -> None:
        """Worker thread: give ``token`` to ``job`` (its first one: observe the TTFT), and
        queue it in ``streamed`` for the event loop if the request streams."""
        job.ids.append(token)
        if job.first_token_at is None:
            job.first_token_at = now
            self.metrics.ttft.observe(now - job.arrival)
        if job.stream:
            streamed.append((job, token))

    def _run_batch(self, batch: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: one ``generate`` call; each token goes to its request's queue."""
        eos = self.model.tokenizer.eos_id
        started = time.perf_counter()

        def on_token(step: int, ids: list) -> None:
            # Non-streaming requests only collect their ids here; streaming ones get one event
            # per token, handed to the event loop in one call per step (cheap for the loop).
            now = loop.time()
            streamed = []
            for job, token in zip(batch, ids, strict=True):
                if token is None or len(job.ids) >= job.max_tokens or job.cancelled:
                    continue
                self._record(job, token, now, streamed)
            if streamed:
                loop.call_soon_threadsafe(_deliver, streamed, now)

        gen = self.model.generate([j.prompt for j in batch], max(j.max_tokens for j in batch),
                                  temperature=batch[0].temperature, seed=batch[0].seed,
                                  on_token=on_token, threads=self.config.threads)
        elapsed = time.perf_counter() - started
        produced = sum(len(j.ids) for j in batch)
        self.metrics.tokens.inc(produced)
        if elapsed > 0:
            self.metrics.tokens_per_s.set(produced / elapsed)
        for job, ids in zip(batch, gen.token_ids, strict=True):
            reason = "stop" if eos is not None and eos in ids[:job.max_tokens] else "length"
            loop.call_soon_threadsafe(job.events.put_nowait, ("done", reason))


def _deliver(items: list, now: float) -> None:
    for job, token in items:
        job.events.put_nowait(("token", token, now))


class ContinuousBatcher(Batcher):
    """Continuous batching at the token level (iteration-level scheduling, as in Orca and
    vLLM), on the same single worker thread as :class:`Batcher`.

    The batch is ``max_batch_size`` *slots* of one :class:`~labkit.decoder.SlotCache`; each
    slot holds one request at its own position. The worker repeats an **iteration**:

    1. release the slots of requests that were cancelled (client gone, timed out);
    2. **admit** waiting requests into free slots (lowest first, oldest request first): each
       prompt is prefilled into its slot (:meth:`~labkit.decoder.Decoder.prefill_slot`, one
       forward pass over the prompt), which gives its first token;
    3. run **one decode step** for every occupied slot, each at its own position
       (:meth:`~labkit.decoder.Decoder.decode_slots`), and hand every request its next token.

    A request that has its last token (``max_tokens``, or end-of-sequence) is answered and
    its slot freed in the same iteration, so a new request waits for *a* slot, never for the
    longest answer of a batch, and there is nothing to wait for between steps:
    ``max_queue_delay_ms`` is not used. Requests with different temperatures and seeds share
    a step: each row is sampled with its own temperature and its own seeded generator, so a
    greedy or seeded request gets the tokens it would get alone.

    The trade-off it makes: a prefill runs while the other slots wait, so a long prompt
    delays everyone's next token by its prefill time. vLLM's chunked prefill splits long
    prompts across steps to bound that delay; this server keeps the simple version.

    Metrics: ``labkit_batch_size`` is observed once per decode step (sequences in the step),
    ``labkit_queue_depth`` counts requests waiting for a slot.
    """

    #: positions per slot allocated at first; the cache grows when a request needs more
    INITIAL_CAPACITY = 256

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        super().__init__(config, metrics)
        self.running: dict[int, _Job] = {}       # slot -> job (worker thread only)
        self.cache = None                        # the SlotCache, made by the worker
        self.steps = 0                           # decode steps run
        self.slot_uses = [0] * config.max_batch_size   # requests admitted per slot
        self._abort = False

    async def stop(self, timeout_s: float) -> None:
        """Finish the running and waiting requests (at most ``timeout_s``), then stop."""
        try:
            await super().stop(timeout_s)
        finally:
            self._abort = True                   # the worker leaves at its next iteration

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while await self._wait_for_work():
            try:
                # returns when no request is running or waiting (or on shutdown timeout)
                await loop.run_in_executor(self._executor, self._work, loop)
            except Exception as err:  # noqa: BLE001 - every running request gets the error
                for job in self.running.values():
                    job.events.put_nowait(("error", f"generation failed: {err}"))
                self.running.clear()
                self.cache = None                # start from a clean cache

    # -- the worker thread -------------------------------------------------------------------
    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: iterations until no request is running or waiting."""
        import torch

        from labkit.models import num_threads

        lm = self.model
        with torch.inference_mode(), num_threads(self.config.threads):
            if self.cache is None:
                self.cache = lm.net.new_slot_cache(
                    self.config.max_batch_size, min(lm.context_length, self.INITIAL_CAPACITY))
            window_start, window_tokens = time.perf_counter(), 0
            while not self._abort:
                for slot in [s for s, job in self.running.items() if job.cancelled]:
                    self._release(slot)
                produced = self._admit(loop)
                if self.running:
                    produced += self._decode_step(loop)
                self.metrics.tokens.inc(produced)
                window_tokens += produced
                elapsed = time.perf_counter() - window_start
                idle = not self.running and not self.pending
                if elapsed >= 0.5 or (idle and elapsed > 0):
                    self.metrics.tokens_per_s.set(window_tokens / elapsed)
                    window_start, window_tokens = time.perf_counter(), 0
                if idle:
                    return

    def _admit(self, loop: asyncio.AbstractEventLoop) -> int:
        """Prefill waiting requests into free slots; returns the first tokens produced."""
        import torch

        free = [s for s in range(self.config.max_batch_size) if s not in self.running]
        jobs, logits = [], []
        while free and self.pending:
            job = self.pending.popleft()         # deque: safe against the loop's append()
            if job.cancelled:
                continue
            ids = self.model.encode(job.prompt)
            needed = len(ids) + job.max_tokens
            if needed > self.cache.capacity:     # the server checked it fits the context
                self.cache.grow(min(self.model.context_length,
                                    max(needed, 2 * self.cache.capacity)))
            slot = free.pop(0)
            job.slot, self.running[slot] = slot, job     # running: an error reaches it
            self.slot_uses[slot] += 1
            logits.append(self.model.net.prefill_slot(ids, self.cache, slot))
            if job.temperature > 0:
                job.generator = torch.Generator().manual_seed(
                    job.seed if job.seed is not None
                    else int.from_bytes(os.urandom(8), "little") >> 1)
            jobs.append(job)
        self.metrics.queue_depth.set(len(self.pending))
        if not jobs:
            return 0
        self._hand_out(jobs, torch.stack(logits), loop)
        return len(jobs)

    def _decode_step(self, loop: asyncio.AbstractEventLoop) -> int:
        """One decode step for every occupied slot; returns the tokens produced."""
        import torch

        slots = sorted(self.running)
        jobs = [self.running[s] for s in slots]
        tokens = torch.tensor([job.ids[-1] for job in jobs], dtype=torch.long)
        logits = self.model.net.decode_slots(tokens, self.cache, slots)
        self.steps += 1
        self.metrics.batch_size.observe(len(jobs))
        self._hand_out(jobs, logits, loop)
        return len(jobs)

    def _hand_out(self, jobs: list[_Job], logits, loop: asyncio.AbstractEventLoop) -> None:
        """Pick each row's next token (greedy, or sampled with the row's own temperature and
        generator), give it to its request, and answer and release the finished ones."""
        import torch

        from labkit.models import _pick

        picks = torch.argmax(logits, dim=-1).tolist()
        for i, job in enumerate(jobs):
            if job.temperature > 0:
                picks[i] = int(_pick(logits[i:i + 1], job.temperature, None, job.generator))
        eos = self.model.tokenizer.eos_id
        now = loop.time()
        streamed, done = [], []
        for job, token in zip(jobs, picks, strict=True):
            self._record(job, token, now, streamed)
            if token == eos or len(job.ids) >= job.max_tokens:
                done.append((job, "stop" if token == eos else "length"))
                self._release(job.slot)
        if streamed:
            loop.call_soon_threadsafe(_deliver, streamed, now)
        for job, reason in done:                 # after the tokens: the loop keeps the order
            loop.call_soon_threadsafe(job.events.put_nowait, ("done", reason))

    def _release(self, slot: int) -> None:
        """Free ``slot``: its request leaves the batch and a waiting one can take it."""
        self.running.pop(slot, None)
        self.cache.release(slot)


# --------------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------------
def _error(status: int, message: str, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    kind = {429: "rate_limit_error", 503: "unavailable", 504: "timeout"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}},
                        status_code=status, headers=headers)


async def _read_body(request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without reading it all."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise RequestError(400, f"bad Content-Length header {length!r}") from None
        if declared > limit:
            raise RequestError(413, f"the body is {declared:,} bytes; the limit is {limit:,} "
                                    f"bytes (shorten the prompt)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over the limit of {limit:,} bytes "
                                    f"(shorten the prompt)")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(config: ServerConfig | None = None, model=None):
    """The FastAPI application.

    Args:
        config: :class:`ServerConfig` (default settings when None).
        model: an already loaded :class:`~labkit.models.LanguageModel` (tests pass one); when
            None the model named in ``config`` is loaded in the background at start-up and
            ``/readyz`` answers 503 until it is.

    The app's ``state`` holds ``config``, ``metrics`` and ``batcher`` (a :class:`Batcher`,
    or a :class:`ContinuousBatcher` when ``config.batching == "continuous"``).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

    config = config or ServerConfig()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher = (ContinuousBatcher if config.batching == "continuous" else Batcher)(
            config, metrics)
        app.state.batcher = batcher
        loader = None
        if model is not None:
            batcher.model = model
        else:
            async def load():
                from labkit.models import load_model

                batcher.model = await asyncio.to_thread(load_model, config.model)
            loader = asyncio.create_task(load())
        batcher.start()
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
            await batcher.stop(config.shutdown_timeout_s)

    app = FastAPI(title="labkit inference server", lifespan=lifespan)
    app.state.config, app.state.metrics = config, metrics

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request):
        batcher = request.app.state.batcher
        if batcher.model is None:
            return JSONResponse({"status": "loading", "model": config.model}, status_code=503)
        return {"status": "ready", "model": batcher.model.name,
                "batching": config.batching, "max_batch_size": config.max_batch_size,
                "max_queue_delay_ms": config.max_queue_delay_ms}

    @app.get("/metrics")
    async def metrics_endpoint():
        return PlainTextResponse(metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/completions")
    async def completions(request: Request):
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        batcher: Batcher = request.app.state.batcher
        try:
            body = await _read_body(request, config.max_body_bytes)
            params = parse_completion_request(body, config)
            lm = batcher.model
            if lm is None:
                raise RequestError(503, "the model is still loading; wait for /readyz",
                                   {"Retry-After": "1"})
            prompt_tokens = len(lm.encode(params["prompt"]))
            if prompt_tokens + params["max_tokens"] > lm.context_length:
                raise RequestError(422, f"the prompt has {prompt_tokens} tokens; with max_tokens "
                                        f"{params['max_tokens']} that exceeds the context of "
                                        f"{lm.context_length} tokens")
            job = _Job(params["prompt"], prompt_tokens, params["max_tokens"],
                       params["temperature"], params["seed"], arrival, params["stream"])
            batcher.submit(job)
        except RequestError as err:
            metrics.requests.labels(str(err.status)).inc()
            return _error(err.status, err.message, err.headers)
        metrics.in_flight.inc()
        rid = f"cmpl-{uuid.uuid4().hex[:16]}"
        created = int(time.time())
        deadline = arrival + config.request_timeout_s

        async def next_event():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError
            return await asyncio.wait_for(job.events.get(), remaining)

        def finish(status: int, first_token_at: float | None) -> None:
            metrics.in_flight.dec()
            metrics.requests.labels(str(status)).inc()
            if status == 200:
                metrics.latency.observe(loop.time() - arrival)

        def chunk(text: str, reason: str | None) -> dict:
            body = {"id": rid, "object": "text_completion", "created": created,
                    "model": lm.name, "choices": [{"index": 0, "text": text,
                                                   "finish_reason": reason}]}
            if params["include_usage"]:
                body["usage"] = None          # OpenAI: null on every chunk but the last
            return body

        def usage(ids: list) -> dict:
            return {"prompt_tokens": job.prompt_tokens, "completion_tokens": len(ids),
                    "total_tokens": job.prompt_tokens + len(ids)}

        if params["stream"]:
            from labkit.models import _IncrementalDetokenizer

            async def sse():
                detok = _IncrementalDetokenizer(lm.tokenizer)
                status, first = 200, None
                try:
                    while True:
                        try:
                            event = await next_event()
                        except asyncio.TimeoutError:
                            job.cancelled, status = True, 504
                            payload = {"error": {"message": "request timed out after "
                                                 f"{config.request_timeout_s} s", "code": 504}}
                            yield f"data: {json.dumps(payload)}\n\n"
                            break
                        if event[0] == "token":
                            first = event[2] if first is None else first
                            piece = detok.push(event[1])
                            if piece:
                                yield f"data: {json.dumps(chunk(piece, None))}\n\n"
                        elif event[0] == "done":
                            yield f"data: {json.dumps(chunk('', event[1]))}\n\n"
                            if params["include_usage"]:
                                # OpenAI's shape: one more chunk, no choices, the token counts
                                last = {**chunk("", None), "choices": [],
                                        "usage": usage(list(job.ids))}
                                yield f"data: {json.dumps(last)}\n\n"
                            break
                        else:
                            status = 500
                            yield f"data: {json.dumps({'error': {'message': event[1]}})}\n\n"
                            break
                    yield "data: [DONE]\n\n"
                finally:
                    job.cancelled = job.cancelled or status != 200
                    finish(status, first)

            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

        first = None
        try:
            while True:
                event = await next_event()
                if event[0] == "done":
                    reason = event[1]
                    break
                if event[0] == "error":
                    finish(500, first)
                    return _error(500, event[1])
        except asyncio.TimeoutError:
            job.cancelled = True
            finish(504, first)
            return _error(504, f"the request did not finish within {config.request_timeout_s} s "
                               f"(server --request-timeout-s); lower max_tokens or retry")
        except asyncio.CancelledError:      # the client went away
            job.cancelled = True
            finish(499, first)
            raise
        ids = list(job.ids)
        finish(200, first)
        body = chunk(lm.decode(ids), reason)
        body["usage"] = usage(ids)
        return body

    return app


# --------------------------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------------------------
def _watch_parent(parent: int) -> None:
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
          switch_interval: float | None = None) -> None:
    """Run the server in this process until SIGINT/SIGTERM (then finish requests in flight).

    ``switch_interval``: set the GIL switch interval (seconds) for the time the server runs,
    then restore it. ``python -m labkit serve`` passes :func:`switch_interval_s`: the
    inference thread and the event loop share the GIL, and a shorter interval lets the loop
    read, validate and refuse requests while a batch decodes. The default, None, leaves the
    interval alone: it is process-wide, and a notebook that calls ``serve()`` keeps its own.
    """
    config = config or ServerConfig()
    if not _is_loopback(host):
        print(f"labkit serve: warning: {EXPOSED_WARNING.format(host=host)}", file=sys.stderr,
              flush=True)
    previous = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    try:
        _run_uvicorn(config, host, port, exit_with_parent, log_level)
    finally:
        sys.setswitchinterval(previous)


def _run_uvicorn(config, host, port, exit_with_parent, log_level) -> None:
    import uvicorn

    if exit_with_parent:
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    uv = uvicorn.Config(create_app(config), host=host, port=port, log_level=log_level,
                        timeout_graceful_shutdown=config.shutdown_timeout_s,
                        access_log=False, backlog=2048)
    uvicorn.Server(uv).run()


def _parser() -> argparse.ArgumentParser:
    d = ServerConfig()
    p = argparse.ArgumentParser(prog="python -m labkit serve",
                                description="Run the course's inference server.")
    p.add_argument("--model", choices=MODELS, default=d.model)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only). WARNING: the "
                        "server has no authentication; 0.0.0.0 exposes it, /metrics included, "
                        "to every machine that can reach this one (in a Pod, what a Service "
                        "needs; put a NetworkPolicy in front of it)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--batching", choices=BATCHING, default=d.batching,
                   help="dynamic: whole batches, Triton-style (default); continuous: requests "
                        "join and leave the batch at every decode step, vLLM-style")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help="most requests decoded together; 1 turns batching off (continuous: "
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
    """``python -m labkit serve [--model …] [--port …] [--batching …] [--max-batch-size …]``
    (see ``--help``); returns the exit code (2 for invalid settings)."""
    args = _parser().parse_args(argv)
    try:
        config = ServerConfig(model=args.model, batching=args.batching,
                              max_batch_size=args.max_batch_size,
                              max_queue_delay_ms=args.max_queue_delay_ms,
                              max_queue_size=args.max_queue_size,
                              max_tokens_limit=args.max_tokens_limit,
                              max_prompt_chars=args.max_prompt_chars,
                              request_timeout_s=args.request_timeout_s, threads=args.threads,
                              max_tokens_default=min(16, args.max_tokens_limit))
        interval = switch_interval_s()
    except ValueError as err:
        print(f"labkit serve: {err}", file=sys.stderr)
        return 2
    serve(config, args.host, args.port, exit_with_parent=args.exit_with_parent,
          log_level=args.log_level, switch_interval=interval)
    return 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_LIVE: weakref.WeakSet = weakref.WeakSet()

#: prefix of the scratch folders that hold a server's log: ``labkit-serve-<owner pid>-…``
LOG_PREFIX = "labkit-serve-"


def option_flags(options: dict) -> list[str]:
    """Command-line flags for ``python -m labkit serve`` from keyword options:
    ``max_batch_size=4`` → ``--max-batch-size 4``; ``True`` → the bare flag; ``False`` or
    ``None`` → nothing (argparse's ``store_true`` flags take no value)."""
    flags = []
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            flags.append(flag)
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

    from labkit.scratch import scratch_root

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

    def __init__(self, port: int | None = None, **options) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.options = options
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._log_path: Path | None = None
        self._scratch: contextlib.ExitStack | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, ready_timeout_s: float = 60.0) -> "ServerProcess":
        """Start it and wait until ``/readyz`` answers 200; raise RuntimeError (with the log)
        if it does not within ``ready_timeout_s``."""
        import httpx

        from labkit.scratch import scratch_dir

        options = {"exit_with_parent": True, **self.options}
        cmd = [sys.executable, "-m", "labkit", "serve", "--port", str(self.port),
               *option_flags(options)]
        sweep_logs()
        self._scratch = contextlib.ExitStack()
        folder = self._scratch.enter_context(
            scratch_dir(prefix=f"{LOG_PREFIX}{os.getpid()}-{self.port}-"))
        self._log_path = folder / "server.log"
        self._log = open(self._log_path, "w+")
        root = str(Path(__file__).resolve().parent.parent)
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
                    if client.get(self.url + "/readyz").status_code == 200:
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

        from labkit.check.serving import metric_value

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

    def rss_bytes(self) -> int:
        """Resident memory of the server process, from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (graceful: requests in flight finish), then SIGKILL after ``timeout_s``.
        Returns the exit code; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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
        return f"ServerProcess({self.url}, pid {self.pid}, {state}, {self.options})"


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(5.0)


def start_server(**options) -> "ServerProcess":
    """Start ``python -m labkit serve`` with ``options`` (``max_batch_size=1`` …) as a
    subprocess on a free port and wait until it is ready. Use ``with start_server() as s:`` or
    call ``s.stop()`` in a ``finally``."""
    return ServerProcess(**options).start()


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
def bench_serve(clients: int = 16, requests: int = 192, max_tokens: int = 32,
                max_batch_size: int = 16, threads: int = 1, stream: bool = False, *,
                continuous: bool = False, mixed_max_tokens: tuple[int, int] = (4, 64),
                seed: int = 0) -> dict:
    """Throughput of ``clients`` closed-loop clients against the server with batching off
    (``max_batch_size=1``) and on; each server is started for it and always stopped.

    With ``continuous=True`` it also compares dynamic and continuous batching under a load of
    *mixed* answer lengths (each request's ``max_tokens`` drawn from ``mixed_max_tokens``
    with ``seed``, streamed so that the time to first token is measured): the dynamic run
    uses the batched server above, the continuous one a third server with
    ``batching="continuous"`` and ``max_batch_size`` slots. That adds the ``mixed_*`` and
    ``*_continuous`` keys; the others keep their meaning (fixed ``max_tokens``, not
    streamed, ``errors`` counting those two runs only).
    """
    from labkit.loadgen import closed_loop

    mixed = tuple(mixed_max_tokens)

    def measure(server, max_tokens, stream, warm_seed=0):
        closed_loop(server.url, clients=clients, requests=2 * clients, max_tokens=max_tokens,
                    stream=stream, seed=warm_seed)                     # warm-up
        return closed_loop(server.url, clients=clients, requests=requests,
                           max_tokens=max_tokens, stream=stream, seed=seed)

    def measure_mixed(server):
        return measure(server, mixed, stream=True, warm_seed=seed + 1)

    limit = {"max_tokens_limit": mixed[1]} if continuous and mixed[1] > 128 else {}
    results, mixed_runs = {}, {}
    for label, bs in (("unbatched", 1), ("batched", max_batch_size)):
        with start_server(max_batch_size=bs, threads=threads,
                          max_queue_size=max(64, 2 * clients), **limit) as server:
            results[label] = measure(server, max_tokens, stream)
            if continuous and label == "batched":
                mixed_runs["dynamic"] = measure_mixed(server)
    if continuous:
        with start_server(batching="continuous", max_batch_size=max_batch_size,
                          threads=threads, max_queue_size=max(64, 2 * clients),
                          **limit) as server:
            mixed_runs["continuous"] = measure_mixed(server)
    un, ba = results["unbatched"], results["batched"]
    errors = {f"{k}:{s}": n for k, r in results.items() for s, n in r.errors.items()}
    out = {"clients": clients, "requests": requests, "max_tokens": max_tokens,
           "max_batch_size": max_batch_size, "threads": threads,
           "unbatched_rps": un.rps, "batched_rps": ba.rps, "ratio": ba.rps / un.rps,
           "p50_ms_unbatched": un.p50_ms, "p50_ms_batched": ba.p50_ms,
           "p95_ms_unbatched": un.p95_ms, "p95_ms_batched": ba.p95_ms,
           "errors": sum(errors.values()), "errors_by_status": errors}
    if continuous:
        dy, co = mixed_runs["dynamic"], mixed_runs["continuous"]
        out.update({
            "mixed_max_tokens": list(mixed),
            "mixed_dynamic_rps": dy.rps, "continuous_rps": co.rps,
            "continuous_ratio": co.rps / dy.rps,
            "p50_ms_mixed_dynamic": dy.p50_ms, "p50_ms_continuous": co.p50_ms,
            "p95_ms_mixed_dynamic": dy.p95_ms, "p95_ms_continuous": co.p95_ms,
            "ttft_mean_ms_mixed_dynamic": dy.ttft_mean_ms,
            "ttft_mean_ms_continuous": co.ttft_mean_ms,
            "ttft_p95_ms_mixed_dynamic": dy.ttft_p95_ms, "ttft_p95_ms_continuous": co.ttft_p95_ms,
            "errors_continuous": sum(sum(r.errors.values()) for r in (dy, co))})
    return out


def bench_serve_cli(argv: list[str]) -> int:
    """``python -m labkit bench serve [--json] [--continuous]``: batching off vs on at 16
    clients; with ``--continuous`` also dynamic vs continuous batching at mixed lengths."""
    p = argparse.ArgumentParser(prog="python -m labkit bench serve",
                                description=bench_serve.__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=192, help="measured requests per setting")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--continuous", action="store_true",
                   help="also compare dynamic and continuous batching under mixed answer "
                        "lengths (streamed; adds throughput, p95 latency and TTFT keys)")
    p.add_argument("--mixed-max-tokens", type=int, nargs=2, default=(4, 64),
                   metavar=("LOW", "HIGH"),
                   help="with --continuous: each request's max_tokens is drawn from LOW..HIGH "
                        "(default 4 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mixed lengths")
    args = p.parse_args(argv)
    low, high = args.mixed_max_tokens
    if not 1 <= low <= high:
        p.error("--mixed-max-tokens needs 1 <= LOW <= HIGH")
    result = bench_serve(args.clients, args.requests, args.max_tokens, args.max_batch_size,
                         args.threads, continuous=args.continuous, mixed_max_tokens=(low, high),
                         seed=args.seed)
    failed = result["errors"] + result.get("errors_continuous", 0)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.clients} clients, {args.max_tokens} tokens each: "
              f"unbatched {result['unbatched_rps']:.1f} req/s (p95 "
              f"{result['p95_ms_unbatched']:.0f} ms), batched {result['batched_rps']:.1f} "
              f"req/s (p95 {result['p95_ms_batched']:.0f} ms): {result['ratio']:.1f}x; "
              f"errors {result['errors']}")
        if args.continuous:
            r = result
            print(f"{args.clients} clients, {low}-{high} tokens each (streamed): dynamic "
                  f"{r['mixed_dynamic_rps']:.1f} req/s (p95 {r['p95_ms_mixed_dynamic']:.0f} ms, "
                  f"TTFT mean {r['ttft_mean_ms_mixed_dynamic']:.0f} / p95 "
                  f"{r['ttft_p95_ms_mixed_dynamic']:.0f} ms), continuous "
                  f"{r['continuous_rps']:.1f} req/s (p95 {r['p95_ms_continuous']:.0f} ms, TTFT "
                  f"mean {r['ttft_mean_ms_continuous']:.0f} / p95 "
                  f"{r['ttft_p95_ms_continuous']:.0f} ms): {r['continuous_ratio']:.1f}x; "
                  f"errors {r['errors_continuous']}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve_cli(sys.argv[1:]))
