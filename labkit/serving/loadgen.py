"""Load generator for the course's inference server (asyncio + httpx).

Two ways to load a server, and they answer different questions:

- **closed loop** (:func:`closed_loop`): ``clients`` users, each sends a request, waits for the
  answer, sends the next. The load adapts to the server: it measures the throughput at a
  given concurrency, and can never overload it by more than ``clients`` requests.
- **open loop** (:func:`open_loop`): requests arrive at random (Poisson, ``rate`` per second)
  whether or not earlier ones have finished, like independent users on the internet. Above
  the server's capacity the queue grows: this is how you test overload and 429s.

Both are bounded (a number of requests, or a duration with a cap), send traffic only to the
URL given (the course uses 127.0.0.1), and return a :class:`LoadResult`: throughput,
p50/p95/p99 latency, time to first token (when streaming), errors by status, and the network
failures by exception type. Only network failures and timeouts (``httpx.HTTPError``,
``asyncio.TimeoutError``, ``OSError``) are counted as failed requests; any other exception is
a bug (here or in the server's protocol) and propagates.

Generated tokens are counted from the server's ``usage`` (``completion_tokens``): in the
answer when not streaming, and when streaming from the last event, which the generator asks
for with ``stream_options: {"include_usage": true}`` (OpenAI's shape; vLLM and the course
server send it). A streamed piece of text is not a token: the detokenizer merges tokens that
split a character and sends nothing for some, so pieces are counted apart (``pieces``).
``max_tokens`` is one number for every request, or a range ``(low, high)`` from which each
request draws its own (uniformly, seeded): a load of mixed answer lengths, the case where
continuous batching differs from dynamic batching.
The functions work from scripts and from notebooks (where an event loop already runs; there
the run happens on a thread of its own, and interrupting the kernel cancels it).

- **flood** (:func:`flood`): the overload test. ``connections`` kept-alive connections, each
  sending its next request the moment the last answer arrives (closed loop, no think time), or,
  with ``rate``, Poisson arrivals over that many connections (open loop). It uses a minimal
  HTTP/1.1 client on asyncio streams instead of httpx: the point is to offer many times what
  the server can serve, so the client must cost as little CPU per request as it can. It also
  times ``GET /healthz`` every 50 ms on a connection of its own.

Imports nothing from the rest of :mod:`labkit.serving` (it talks HTTP only); its
``percentile`` is :func:`labkit.machine.timing.percentile`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from labkit.machine.timing import percentile

__all__ = ["LoadResult", "FloodResult", "closed_loop", "open_loop", "flood", "percentile",
           "MAX_REQUESTS", "run_coroutine", "stream_events", "poisson_arrivals"]

#: hard cap on the requests of one run, whatever the arguments
MAX_REQUESTS = 20_000


@dataclass
class LoadResult:
    """What a load run measured.

    Attributes:
        mode: ``"closed"`` or ``"open"``.
        offered: clients (closed loop) or arrivals per second (open loop).
        duration_s: wall time from the first request sent to the last answer.
        statuses: HTTP status of every request: the status line the server sent, or 0 when
            no answer arrived (connection error or client timeout before the headers); a
            streamed answer whose last event is an error counts with that error's code.
        latencies_s: seconds from send to the full answer, successful requests.
        ttfts_s: seconds from send to the first streamed piece (streaming runs only).
        tokens: generated tokens over all successful requests, from the server's ``usage``.
        pieces: streaming runs: non-empty text events received (not tokens, see above).
        failures: network failures and timeouts by exception type (``ReadTimeout``,
            ``ConnectError`` …), whether before the headers (status 0) or after a 200.
        broken: requests answered 200 whose body then failed to arrive in full; they keep
            their 200 in ``statuses`` but are not counted in :attr:`ok`.
        missing_usage: successful streamed requests whose last event carried no ``usage``
            (a server that ignores ``stream_options``); their tokens are not counted.
        send_s: open loop: seconds from the first request sent to the last.
    """

    mode: str
    offered: float
    duration_s: float
    statuses: list[int] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    ttfts_s: list[float] = field(default_factory=list)
    tokens: int = 0
    pieces: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    broken: int = 0
    missing_usage: int = 0
    send_s: float = math.nan

    @property
    def achieved_rate(self) -> float:
        """Requests actually sent per second, open loop (below ``offered`` when this machine
        could not keep up with the schedule, which a busy 2-core laptop may not)."""
        return len(self.statuses) / self.send_s if self.send_s > 0 else math.nan

    @property
    def ok(self) -> int:
        """Successful requests, answered 200 and received in full."""
        return sum(1 for s in self.statuses if s == 200) - self.broken

    @property
    def rps(self) -> float:
        """Throughput: successful requests per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def errors(self) -> dict[int, int]:
        """Non-200 answers by status (0 for no answer)."""
        return dict(sorted(Counter(s for s in self.statuses if s != 200).items()))

    def _pct_ms(self, values, q):
        return percentile(values, q) * 1e3

    p50_ms = property(lambda self: self._pct_ms(self.latencies_s, 50), doc="median latency, ms")
    p95_ms = property(lambda self: self._pct_ms(self.latencies_s, 95), doc="p95 latency, ms")
    p99_ms = property(lambda self: self._pct_ms(self.latencies_s, 99), doc="p99 latency, ms")
    ttft_p50_ms = property(lambda self: self._pct_ms(self.ttfts_s, 50), doc="median TTFT, ms")
    ttft_p95_ms = property(lambda self: self._pct_ms(self.ttfts_s, 95), doc="p95 TTFT, ms")

    @property
    def ttft_mean_ms(self) -> float:
        """Mean time to first token, ms (nan when not streaming)."""
        return statistics.fmean(self.ttfts_s) * 1e3 if self.ttfts_s else math.nan

    def as_dict(self) -> dict:
        return {"mode": self.mode, "offered": self.offered, "requests": len(self.statuses),
                "ok": self.ok, "duration_s": self.duration_s, "rps": self.rps,
                "tokens_per_s": self.tokens_per_s, "p50_ms": self.p50_ms,
                "p95_ms": self.p95_ms, "p99_ms": self.p99_ms, "ttft_p50_ms": self.ttft_p50_ms,
                "ttft_p95_ms": self.ttft_p95_ms, "ttft_mean_ms": self.ttft_mean_ms,
                "achieved_rate": self.achieved_rate,
                "errors": self.errors, "failures": dict(self.failures), "broken": self.broken}

    def __str__(self) -> str:
        unit = "clients" if self.mode == "closed" else "req/s offered"
        ttft = f", TTFT p50 {self.ttft_p50_ms:.0f} ms" if self.ttfts_s else ""
        return (f"{self.mode} loop, {self.offered:g} {unit}: {len(self.statuses)} requests in "
                f"{self.duration_s:.1f} s, {self.rps:.1f} req/s ok, latency p50 "
                f"{self.p50_ms:.0f} / p95 {self.p95_ms:.0f} / p99 {self.p99_ms:.0f} ms{ttft}; "
                f"errors {self.errors or 'none'}"
                + (f"; network failures {self.failures}" if self.failures else ""))


def _run(coro):
    """Run ``coro`` to completion, also from inside a running event loop (Jupyter): then on a
    daemon thread with its own loop, which a KeyboardInterrupt (the kernel's stop button)
    cancels before it is re-raised, so no load keeps running in the background."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}
    started = threading.Event()

    def target():
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(coro)
            box["loop"], box["task"] = loop, task
            started.set()
            box["value"] = loop.run_until_complete(task)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err
        finally:
            started.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    thread = threading.Thread(target=target, name="loadgen", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        started.wait(5)
        if "task" in box:
            box["loop"].call_soon_threadsafe(box["task"].cancel)
        thread.join(10)
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


#: runs a coroutine to its end from a script or a notebook (for the other load generators)
run_coroutine = _run

#: what counts as a failed request rather than a bug: network errors and timeouts
NETWORK_ERRORS = (OSError, asyncio.TimeoutError)


def _network_errors() -> tuple:
    import httpx

    return (httpx.HTTPError, *NETWORK_ERRORS)


async def stream_events(resp):
    """The JSON events of a streamed (server-sent events) answer ``resp``, in order, up to
    ``data: [DONE]``; lines that carry no ``data:`` event are skipped."""
    async for line in resp.aiter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        yield json.loads(line[6:])


async def poisson_arrivals(rng: random.Random, rate: float, duration_s: float, start: float,
                           limit: int, launch) -> list:
    """Start ``launch(at)`` as a task at each arrival (scheduled ``perf_counter()`` ``at``) of
    a Poisson process of ``rate``/s from ``start`` (gaps drawn from ``rng``), for ``duration_s``
    seconds or ``limit`` tasks; returns the tasks, not awaited."""
    tasks: list = []
    t = 0.0
    while len(tasks) < limit:
        t += rng.expovariate(rate)            # Poisson arrivals: exponential gaps
        if t >= duration_s:
            break
        delay = start + t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(launch(start + t)))
    return tasks


async def _one(client, url: str, body: dict, result: LoadResult, timeout_s: float,
               start: float | None = None) -> None:
    start = time.perf_counter() if start is None else start
    status = 0
    try:
        if body.get("stream"):
            async with client.stream("POST", url, json=body, timeout=timeout_s) as resp:
                status = resp.status_code
                pieces, first, usage = 0, None, None
                async for event in stream_events(resp):
                    if "error" in event:                # the server's own failure report
                        status = event["error"].get("code", 500)
                        break
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices") or []:
                        if choice.get("text"):
                            pieces += 1
                            first = time.perf_counter() - start if first is None else first
                if status == 200:
                    if first is not None:
                        result.ttfts_s.append(first)
                    result.pieces += pieces
                    if usage is None:
                        result.missing_usage += 1
                    else:
                        result.tokens += usage["completion_tokens"]
        else:
            resp = await client.post(url, json=body, timeout=timeout_s)
            status = resp.status_code
            if status == 200:
                result.tokens += resp.json()["usage"]["completion_tokens"]
    except _network_errors() as err:
        # A network failure or a timeout: counted, by type. A 200 already received stays a
        # 200 (the server did answer), but the request is marked broken, not successful.
        name = type(err).__name__
        result.failures[name] = result.failures.get(name, 0) + 1
        result.statuses.append(status)
        if status == 200:
            result.broken += 1
        return
    result.statuses.append(status)
    if status == 200:
        result.latencies_s.append(time.perf_counter() - start)


def _bodies(prompt: str, max_tokens, stream: bool, temperature: float, seed: int):
    """A function returning the body of the next request: ``max_tokens`` is an int, or a
    ``(low, high)`` range drawn from per request (inclusive, seeded: the i-th request of a run
    gets the same value every run)."""
    if isinstance(max_tokens, (tuple, list)):
        if len(max_tokens) != 2 or not all(type(v) is int for v in max_tokens) \
                or not 1 <= max_tokens[0] <= max_tokens[1]:
            raise ValueError(f"max_tokens must be an int or a range (low, high) with "
                             f"1 <= low <= high, got {max_tokens!r}")
        rng, (low, high) = random.Random(seed), max_tokens
        return lambda: {"prompt": prompt, "max_tokens": rng.randint(low, high),
                        "temperature": temperature, **_stream_fields(stream)}
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
            **_stream_fields(stream)}
    return lambda: body


def _stream_fields(stream: bool) -> dict:
    """``stream``, and when streaming OpenAI's request for a last event with the usage."""
    return {"stream": True, "stream_options": {"include_usage": True}} if stream else \
        {"stream": False}


async def _closed(url, clients, requests, next_body, timeout_s) -> LoadResult:
    import httpx

    result = LoadResult("closed", clients, 0.0)
    remaining = [requests]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as client:
        async def user():
            while remaining[0] > 0:
                remaining[0] -= 1
                await _one(client, url, next_body(), result, timeout_s)
        start = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(clients)))
        result.duration_s = time.perf_counter() - start
    return result


def closed_loop(base_url: str, clients: int = 16, requests: int = 160, *,
                prompt: str = "The pod", max_tokens: int | tuple[int, int] = 32,
                stream: bool = False, temperature: float = 0.0, timeout_s: float = 60.0,
                seed: int = 0) -> LoadResult:
    """``clients`` concurrent users send ``requests`` requests in total, each waiting for its
    answer before sending the next. ``base_url`` is the server (``http://127.0.0.1:PORT``).
    ``max_tokens=(low, high)`` gives each request its own length, drawn with ``seed``."""
    if not 1 <= clients <= 1000 or not 1 <= requests <= MAX_REQUESTS:
        raise ValueError(f"clients must be 1..1000 and requests 1..{MAX_REQUESTS}")
    url = base_url.rstrip("/") + "/v1/completions"
    return _run(_closed(url, clients, requests,
                        _bodies(prompt, max_tokens, stream, temperature, seed), timeout_s))


async def _open(url, rate, duration_s, next_body, timeout_s, seed, max_requests,
                connections) -> LoadResult:
    import httpx

    result = LoadResult("open", rate, 0.0)
    rng = random.Random(seed)
    # A bounded pool of kept-alive connections: opening a TCP connection per request costs the
    # generator more CPU than the server spends refusing it. Requests waiting for a connection
    # count in their latency, as they would for a user behind a proxy.
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    # Requests beyond the pool wait on a semaphore (cheap, first come first served) rather than
    # inside httpx's pool; their latency counts from the scheduled arrival time, so waiting on
    # this side is not hidden ("coordinated omission").
    gate = asyncio.Semaphore(connections)
    async with httpx.AsyncClient(limits=limits) as client:
        async def send(arrival: float, body: dict) -> None:
            async with gate:
                await _one(client, url, body, result, timeout_s, start=arrival)

        start = time.perf_counter()
        tasks = await poisson_arrivals(rng, rate, duration_s, start, max_requests,
                                       lambda at: send(at, next_body()))
        result.send_s = time.perf_counter() - start
        await asyncio.gather(*tasks)
        result.duration_s = time.perf_counter() - start
    return result


def open_loop(base_url: str, rate: float, duration_s: float = 5.0, *, prompt: str = "The pod",
              max_tokens: int | tuple[int, int] = 32, stream: bool = False,
              temperature: float = 0.0,
              timeout_s: float = 60.0, seed: int = 0, connections: int = 512) -> LoadResult:
    """Requests arrive as a Poisson process of ``rate`` per second for ``duration_s`` seconds
    (seeded: the same arrival times every run), whether or not earlier ones are done, over at
    most ``connections`` kept-alive connections. ``achieved_rate`` of the result says whether
    this machine kept up with the schedule. ``max_tokens=(low, high)`` gives each request its
    own length, drawn with ``seed`` too."""
    if not rate > 0 or not 0 < duration_s <= 600:
        raise ValueError("rate must be > 0 and duration_s in (0, 600]")
    max_requests = min(MAX_REQUESTS, int(rate * duration_s * 2) + 10)
    url = base_url.rstrip("/") + "/v1/completions"
    return _run(_open(url, rate, duration_s,
                      _bodies(prompt, max_tokens, stream, temperature, seed + 1), timeout_s,
                      seed, max_requests, connections))


@dataclass
class FloodResult:
    """What a :func:`flood` measured.

    Attributes:
        mode: ``"closed"`` or ``"open"``; ``offered``: connections, or arrivals per second.
        duration_s: from the first request sent to the last answer.
        statuses: status of every request (0: the connection failed).
        latencies_s: per status, seconds from send (open loop: from the scheduled arrival)
            to the full answer.
        healthz_s: the latencies of ``GET /healthz`` probed every 50 ms during the run (a
            probe that failed counts as ``inf``).
        send_s: open loop: seconds from the first request sent to the last.
    """

    mode: str
    offered: float
    duration_s: float = 0.0
    statuses: list[int] = field(default_factory=list)
    latencies_s: dict[int, list[float]] = field(default_factory=dict)
    healthz_s: list[float] = field(default_factory=list)
    send_s: float = math.nan

    def count(self, status: int) -> int:
        return len(self.latencies_s.get(status, ()))

    @property
    def ok(self) -> int:
        return self.count(200)

    @property
    def rps(self) -> float:
        """Goodput, requests answered 200 per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def answered_rps(self) -> float:
        """All answers per second, refusals included (in a closed loop, the offered load)."""
        return len(self.statuses) / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def achieved_rate(self) -> float:
        """Requests actually sent per second, open loop."""
        return len(self.statuses) / self.send_s if self.send_s > 0 else math.nan

    @property
    def five_xx(self) -> int:
        return sum(1 for s in self.statuses if s >= 500 or s == 0)

    def p_ms(self, status: int, q: float) -> float:
        return percentile(self.latencies_s.get(status, ()), q) * 1e3

    @property
    def healthz_max_ms(self) -> float:
        return max(self.healthz_s) * 1e3 if self.healthz_s else math.nan

    def as_dict(self) -> dict:
        return {"mode": self.mode, "offered": self.offered, "requests": len(self.statuses),
                "ok": self.ok, "refused_429": self.count(429), "five_xx": self.five_xx,
                "duration_s": self.duration_s, "rps": self.rps,
                "answered_rps": self.answered_rps, "achieved_rate": self.achieved_rate,
                "p99_ms_200": self.p_ms(200, 99), "p99_ms_429": self.p_ms(429, 99),
                "healthz_max_ms": self.healthz_max_ms, "healthz_probes": len(self.healthz_s)}

    def __str__(self) -> str:
        unit = "connections" if self.mode == "closed" else "req/s offered"
        return (f"flood ({self.mode} loop, {self.offered:g} {unit}): {len(self.statuses)} "
                f"answers in {self.duration_s:.1f} s ({self.answered_rps:.0f}/s), "
                f"{self.rps:.1f} req/s answered 200, {self.count(429)} x 429 (p99 "
                f"{self.p_ms(429, 99):.1f} ms), {self.five_xx} x 5xx or failed; /healthz "
                f"max {self.healthz_max_ms:.1f} ms over {len(self.healthz_s)} probes")


async def _read_response(reader) -> int:
    """Read one HTTP/1.1 response; return its status (the body is read and dropped)."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("the server closed the connection")
    status = int(line.split()[1])
    length, chunked = 0, False
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _flood(host, port, path, payload, connections, duration_s, rate, seed,
                 probe_s) -> FloodResult:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    request = head + payload
    result = FloodResult("open" if rate else "closed", rate or connections)
    start = time.perf_counter()
    stop_at = start + duration_s
    done = asyncio.Event()

    def record(status: int, began: float) -> None:
        result.statuses.append(status)
        result.latencies_s.setdefault(status, []).append(time.perf_counter() - began)

    async def one(conn: list, began: float) -> None:
        """One request on ``conn`` ([reader, writer] or [None, None]); reconnects on failure."""
        try:
            if conn[0] is None:
                conn[0], conn[1] = await asyncio.open_connection(host, port)
            conn[1].write(request)
            record(await _read_response(conn[0]), began)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
            record(0, began)
            if conn[1] is not None:
                conn[1].close()
            conn[0] = conn[1] = None

    async def closed_user() -> None:
        conn = [None, None]
        while time.perf_counter() < stop_at:
            await one(conn, time.perf_counter())
        if conn[1] is not None:
            conn[1].close()

    async def probe() -> None:
        while not done.is_set():
            began = time.perf_counter()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
                writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n"
                             f"Connection: close\r\n\r\n".encode())
                status = await asyncio.wait_for(_read_response(reader), 5)
                writer.close()
                result.healthz_s.append(time.perf_counter() - began if status == 200
                                        else math.inf)
            except (OSError, ConnectionError, asyncio.TimeoutError,
                    asyncio.IncompleteReadError):
                result.healthz_s.append(math.inf)
            try:
                await asyncio.wait_for(done.wait(), probe_s)
            except asyncio.TimeoutError:
                pass

    prober = asyncio.create_task(probe())
    try:
        if not rate:
            await asyncio.gather(*(closed_user() for _ in range(connections)))
        else:
            rng = random.Random(seed)
            free: asyncio.Queue = asyncio.Queue()
            for _ in range(connections):
                free.put_nowait([None, None])

            async def arrive(at: float) -> None:
                conn = await free.get()          # waiting for a connection counts in latency
                try:
                    await one(conn, at)
                finally:
                    free.put_nowait(conn)

            tasks = await poisson_arrivals(rng, rate, duration_s, start, MAX_REQUESTS * 5,
                                           arrive)
            result.send_s = time.perf_counter() - start
            await asyncio.gather(*tasks)
            while not free.empty():
                conn = free.get_nowait()
                if conn[1] is not None:
                    conn[1].close()
        result.duration_s = time.perf_counter() - start
    finally:
        done.set()
        await prober
    return result


def flood(base_url: str, connections: int = 256, duration_s: float = 5.0, *,
          rate: float | None = None, prompt: str = "The pod", max_tokens: int = 32,
          seed: int = 0, path: str = "/v1/completions") -> FloodResult:
    """Offer far more load than the server can serve: ``connections`` connections in a closed
    loop with no think time for ``duration_s`` seconds, or with ``rate`` Poisson arrivals per
    second over that many connections (open loop; an arrival that finds every connection busy
    waits, and its latency counts from its scheduled time). Non-streamed requests of
    ``max_tokens`` greedy tokens; ``/healthz`` is timed every 50 ms throughout. Sends to
    ``base_url`` only (``http://HOST:PORT``)."""
    from urllib.parse import urlsplit

    if not 1 <= connections <= 4096 or not 0 < duration_s <= 120:
        raise ValueError("connections must be 1..4096 and duration_s in (0, 120]")
    if rate is not None and not rate > 0:
        raise ValueError("rate must be > 0 (or None for a closed loop)")
    parts = urlsplit(base_url)
    payload = json.dumps({"prompt": prompt, "max_tokens": max_tokens,
                          "temperature": 0.0}).encode()
    return _run(_flood(parts.hostname, parts.port or 80, path, payload, connections,
                       duration_s, rate, seed, 0.05))


def summary(results) -> list[list]:
    """Rows ``[offered, rps, p50_ms, p95_ms, errors]`` of several results (for a table)."""
    return [[r.offered, r.rps, r.p50_ms, r.p95_ms, sum(r.errors.values())] for r in results]


def median(values) -> float:
    return statistics.median(values) if values else math.nan
