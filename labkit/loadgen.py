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
The functions work from scripts and from notebooks (where an event loop already runs).
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

__all__ = ["LoadResult", "closed_loop", "open_loop", "percentile", "MAX_REQUESTS"]

#: hard cap on the requests of one run, whatever the arguments
MAX_REQUESTS = 20_000


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0–100) of ``values``, linear interpolation; nan when empty."""
    data = sorted(values)
    if not data:
        return math.nan
    k = (len(data) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


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
        """Open loop: requests actually sent per second (below ``offered`` when this machine
        could not keep up with the schedule, which a busy 2-core laptop may not)."""
        return len(self.statuses) / self.send_s if self.send_s > 0 else math.nan

    @property
    def ok(self) -> int:
        """Successful requests: answered 200 and received in full."""
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
        """Non-200 answers by status (0: no answer)."""
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
    """Run ``coro`` to completion, also from inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


#: what counts as a failed request rather than a bug: network errors and timeouts
NETWORK_ERRORS = (OSError, asyncio.TimeoutError)


def _network_errors() -> tuple:
    import httpx

    return (httpx.HTTPError, *NETWORK_ERRORS)


async def _one(client, url: str, body: dict, result: LoadResult, timeout_s: float,
               start: float | None = None) -> None:
    start = time.perf_counter() if start is None else start
    status = 0
    try:
        if body.get("stream"):
            async with client.stream("POST", url, json=body, timeout=timeout_s) as resp:
                status = resp.status_code
                pieces, first, usage = 0, None, None
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
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
    tasks = []
    # Requests beyond the pool wait on a semaphore (cheap, first come first served) rather than
    # inside httpx's pool; their latency counts from the scheduled arrival time, so waiting on
    # this side is not hidden ("coordinated omission").
    gate = asyncio.Semaphore(connections)
    async with httpx.AsyncClient(limits=limits) as client:
        async def send(arrival: float, body: dict) -> None:
            async with gate:
                await _one(client, url, body, result, timeout_s, start=arrival)

        start = time.perf_counter()
        t = 0.0
        while len(tasks) < max_requests:
            t += rng.expovariate(rate)            # Poisson arrivals: exponential gaps
            if t >= duration_s:
                break
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(start + t, next_body())))
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


def summary(results) -> list[list]:
    """Rows ``[offered, rps, p50_ms, p95_ms, errors]`` of several results (for a table)."""
    return [[r.offered, r.rps, r.p50_ms, r.p95_ms, sum(r.errors.values())] for r in results]


def median(values) -> float:
    return statistics.median(values) if values else math.nan
