"""A small router in front of N replicas of the server: ``python -m labkit route``.

API (what Lab 7 uses):

- ``python -m labkit route --replica URL --replica URL ... --policy POLICY [--port N]``: an
  HTTP reverse proxy for ``POST /v1/completions`` and ``POST /v1/chat/completions`` (streamed
  answers pass through as they come), ``GET /v1/models`` (from the first replica that
  answers), ``GET /healthz``, ``GET /readyz`` and its own ``GET /metrics``
  (``labkit_router_requests_total{replica=URL}``, ``labkit_router_outstanding{replica=URL}``,
  ``labkit_router_prefix_matched_blocks_total{replica=URL}``).
- :data:`POLICIES`: ``"round_robin"`` (what a Kubernetes Service gives: kube-proxy spreads
  connections without looking at them), ``"least_outstanding"`` (the replica with the fewest
  requests in flight), ``"prefix_aware"`` (what the Gateway API Inference Extension's endpoint
  picker with its prefix-cache scorer, and llm-d's scheduler, do: see :class:`Picker`).
- :func:`start_router` ``(urls, policy, port=None)``: context manager; starts the router as a
  subprocess on 127.0.0.1 and returns an object with ``.url`` (a
  :class:`~labkit.serving.process.ServerProcess`: always stopped, no process left behind).
- :class:`Picker`: the policies alone, no HTTP (deterministic; what the unit tests drive).
- :func:`labkit.serving.routebench.bench_route` ``(replicas=3, requests=..., tenants=...,
  seed=0, ...) -> dict`` and ``python -m labkit bench route --json``: one JSON object
  with keys ``round_robin``, ``least_outstanding``, ``prefix_aware``, each an object with
  ``ttft_p50_ms``, ``ttft_p95_ms``, ``ttft_mean_ms``, ``req_per_s``, ``prefix_hit_rate``
  (hit tokens / queried tokens, from the replicas' ``vllm:prefix_cache_*`` counters),
  ``prefix_vs_round_robin_ttft_p50`` (that policy's p50 / round-robin's), ``requests_per_replica``
  ``errors`` and ``achieved_rate``; top level ``prefix_vs_round_robin_ttft_p50``
  (prefix-aware's) and the load parameters (``replicas``, ``requests`` per policy,
  ``tenants``, ``rate`` (arrivals/s; by default ``load`` x ``round_robin_capacity_rps``,
  measured first), ``seed``, ``model``, ``system_tokens``, ``prompt_tokens_max``,
  ``max_tokens``, ``block_size``, ``prefix_cache_blocks`` per replica, ``startup_s``,
  ``duration_s``).
- ``bench_serve()`` / ``python -m labkit bench serve --json`` carry
  ``prefix_cache_ttft_ratio`` (mean TTFT with / without the prefix cache,
  :func:`labkit.serving.routebench.bench_prefix_cache`).

Imports :mod:`labkit.serving.process` (to run itself as a subprocess); the proxy needs
FastAPI/uvicorn and httpx, imported when it runs.
"""


import argparse
import hashlib
import itertools
import json
import sys
from collections import OrderedDict

from labkit.serving.process import ServerProcess

__all__ = ["POLICIES", "Picker", "Upstream", "prompt_text", "prefix_hashes", "create_router_app",
           "route", "route_cli", "RouterProcess", "start_router", "ROUTED",
           "BLOCK_CHARS", "TABLE_BLOCKS", "MAX_IMBALANCE"]

#: routing policies
POLICIES = ("round_robin", "least_outstanding", "prefix_aware")

#: characters per hashed prompt block. The Inference Extension's prefix-cache plugin hashes
#: the prompt in blocks of characters, not tokens (the router has no tokenizer), chained like
#: vLLM's blocks: ``DefaultHashBlockSize = 64`` ("vLLM default token block size is 16, and a
#: good guess of average characters per token is 4"), ``DefaultMaxPrefixBlocks = 128``;
#: kubernetes-sigs/gateway-api-inference-extension at commit
#: 7617439188b410670ed0f1ff805a3b7f9918a75b, pkg/epp/scheduling/framework/plugins/multi/prefix/
#: plugin.go, checked 2026-12-05. It scores each server by matched blocks / prompt blocks and
#: combines that with queue and KV-cache scorers; :class:`Picker` uses a load guard instead.
BLOCK_CHARS = 64

#: blocks hashed at most per prompt (the plugin's ``DefaultMaxPrefixBlocks``)
MAX_BLOCKS = 128

#: block hashes the router remembers per replica (an LRU table, an approximation of what the
#: replica's cache holds, kept from what the router sent there, never asked from the replica)
TABLE_BLOCKS = 4096

#: with prefix_aware, a replica is a candidate only while its requests in flight are at most this
#: many above the least loaded replica's (the load-balancing guard of prefix-aware routers)
MAX_IMBALANCE = 4


def prompt_text(body: dict) -> str:
    """The text a request's prefix is hashed from: ``prompt`` (a string, or the first of a
    list), or the chat ``messages`` as ``role: content`` lines."""
    if not isinstance(body, dict):
        return ""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    if isinstance(prompt, str):
        return prompt
    messages = body.get("messages")
    if isinstance(messages, list):
        return "".join(f"{m.get('role', '')}: {m.get('content', '')}\n"
                       for m in messages if isinstance(m, dict))
    return ""


def prefix_hashes(text: str, block_chars: int = BLOCK_CHARS, max_blocks: int = MAX_BLOCKS
                  ) -> list[bytes]:
    """Chained hashes of the full ``block_chars``-character blocks of ``text`` (block ``i``'s
    hash covers the whole prefix up to its end), at most ``max_blocks``."""
    data = text.encode("utf-8")
    out, parent = [], b""
    for i in range(min(len(data) // block_chars, max_blocks)):
        parent = hashlib.sha256(parent + data[i * block_chars:(i + 1) * block_chars]).digest()
        out.append(parent)
    return out


class Picker:
    """Chooses a replica for each request; counts requests in flight.

    Args:
        replicas: how many replicas (indexes ``0 .. replicas-1``).
        policy: one of :data:`POLICIES`.
        block_chars, table_blocks: prefix_aware: block size of the hashes, and how many the
            router remembers per replica (least recently used forgotten first).
        max_imbalance: prefix_aware: see :data:`MAX_IMBALANCE`.

    :meth:`pick` returns an index and counts it in flight; call :meth:`done` when its answer
    has ended. Ties are broken by fewer requests in flight, then fewer requests sent, then the
    lowest index, so a given sequence of calls always gives the same choices.

    ``prefix_aware``: the router hashes the prompt's blocks and, for every replica, counts the
    leading blocks found in the table of hashes it has sent there; among the replicas whose
    load is within ``max_imbalance`` of the least loaded, it picks the longest match. The
    request's hashes then go into the chosen replica's table. A new prefix (no match anywhere)
    goes to the least loaded replica, and stays there while its traffic does not overload it.
    """

    def __init__(self, replicas: int, policy: str = "round_robin", *,
                 block_chars: int = BLOCK_CHARS, table_blocks: int = TABLE_BLOCKS,
                 max_imbalance: int = MAX_IMBALANCE) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be an integer >= 1, got {replicas!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
        for name, value in (("block_chars", block_chars), ("table_blocks", table_blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(max_imbalance, bool) or not isinstance(max_imbalance, int) \
                or max_imbalance < 0:
            raise ValueError(f"max_imbalance must be an integer >= 0, got {max_imbalance!r}")
        self.n, self.policy = replicas, policy
        self.block_chars, self.table_blocks = block_chars, table_blocks
        self.max_imbalance = max_imbalance
        self.outstanding = [0] * replicas
        self.sent = [0] * replicas
        self.matched = [0] * replicas           # prefix_aware: blocks matched, per replica
        self.tables: list[OrderedDict] = [OrderedDict() for _ in range(replicas)]
        self._next = itertools.cycle(range(replicas))

    def match(self, replica: int, hashes: list[bytes]) -> int:
        """Leading blocks of ``hashes`` the router has sent to ``replica`` (and remembers)."""
        table, n = self.tables[replica], 0
        for h in hashes:
            if h not in table:
                break
            n += 1
        return n

    def _key(self, i: int) -> tuple:
        return (self.outstanding[i], self.sent[i], i)

    def pick(self, text: str = "") -> int:
        """The replica for a request whose prompt is ``text``; counted in flight."""
        if self.policy == "round_robin":
            choice = next(self._next)
        elif self.policy == "least_outstanding":
            choice = min(range(self.n), key=self._key)
        else:
            hashes = prefix_hashes(text, self.block_chars)
            least = min(self.outstanding)
            candidates = [i for i in range(self.n)
                          if self.outstanding[i] <= least + self.max_imbalance]
            matches = {i: self.match(i, hashes) for i in candidates}
            choice = min(candidates, key=lambda i: (-matches[i], *self._key(i)))
            self.matched[choice] += matches[choice]
            table = self.tables[choice]
            for h in hashes:
                table[h] = True
                table.move_to_end(h)
            while len(table) > self.table_blocks:
                table.popitem(last=False)
        self.outstanding[choice] += 1
        self.sent[choice] += 1
        return choice

    def done(self, replica: int) -> None:
        """The request sent to ``replica`` has ended (answered, failed or abandoned)."""
        if self.outstanding[replica] > 0:
            self.outstanding[replica] -= 1


# ----------------------------------------------------------------------------------------------
# the proxy
# ----------------------------------------------------------------------------------------------
#: the paths the router routes (everything else is its own)
ROUTED = ("/v1/completions", "/v1/chat/completions")

#: headers of a replica's answer the router passes on
_PASS_HEADERS = ("content-type", "content-length", "retry-after", "cache-control")


def _error(status: int, message: str) -> dict:
    return {"error": {"message": message, "type": "router_error", "param": None,
                      "code": status}}


class Upstream:
    """A minimal HTTP/1.1 client for one replica over asyncio streams, with kept-alive
    connections: a proxy's per-request cost should be small next to what it routes (httpx
    costs a few ms of CPU per request, as much as the prefill a good route saves)."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.idle: list = []

    async def _open(self, fresh: bool):
        import asyncio

        while self.idle and not fresh:
            reader, writer = self.idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes):
        """Send ``body`` to ``path``; returns ``(status, headers, chunks)``, ``chunks`` an
        async iterator over the body as it arrives. Raises OSError when the replica cannot
        be reached (a kept-alive connection the replica closed is retried once, fresh)."""
        import asyncio

        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                   ).encode() + body
        for fresh in (False, True):
            reader, writer = await self._open(fresh)
            try:
                writer.write(request)
                line = await reader.readline()
                if not line:
                    raise ConnectionResetError("the replica closed the connection")
                status = int(line.split()[1])
                headers = {}
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                return status, headers, self._body(reader, writer, headers)
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as err:
                writer.close()
                if fresh:
                    raise OSError(f"{type(err).__name__}: {err}") from err
        raise AssertionError("unreachable")

    async def _body(self, reader, writer, headers: dict):
        reusable = False
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        await reader.readline()
                        break
                    data = await reader.readexactly(size + 2)
                    yield data[:-2]
            else:
                length = int(headers.get("content-length", 0))
                if length:
                    yield await reader.readexactly(length)
            reusable = headers.get("connection", "").lower() != "close"
        finally:
            if reusable:
                self.idle.append((reader, writer))
            else:
                writer.close()


async def _disconnected(receive) -> None:
    """Return when the client has hung up."""
    while (await receive())["type"] != "http.disconnect":
        pass


def create_router_app(urls: list[str], policy: str = "round_robin", **picker_options):
    """The router's ASGI application over the replicas at ``urls``: a plain ASGI handler for
    the routed paths (:data:`ROUTED`) in front of a FastAPI app for the others."""
    import asyncio
    import contextlib

    import httpx
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

    urls = _check_urls(urls)
    picker = Picker(len(urls), policy, **picker_options)
    upstreams = [Upstream(u) for u in urls]
    registry = CollectorRegistry()
    requests = Counter("labkit_router_requests", "Requests the router sent to each replica",
                       ["replica", "policy"], registry=registry)
    in_flight = Gauge("labkit_router_outstanding", "Requests in flight per replica",
                      ["replica"], registry=registry)
    matched = Counter("labkit_router_prefix_matched_blocks", "prefix_aware: prompt blocks the "
                      "router found in its table of the chosen replica", ["replica"],
                      registry=registry)
    failed = Counter("labkit_router_upstream_errors", "Requests the router could not deliver "
                     "(answered 502)", ["replica"], registry=registry)
    for url in urls:
        requests.labels(url, policy)
        in_flight.labels(url)
        matched.labels(url)
        failed.labels(url)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for upstream in upstreams:
            for _, writer in upstream.idle:
                writer.close()

    app = FastAPI(title="labkit router", lifespan=lifespan)
    app.state.picker, app.state.urls = picker, urls

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready", "policy": policy, "replicas": urls}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(registry),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models():
        async with httpx.AsyncClient(timeout=10) as client:
            for url in urls:
                try:
                    resp = await client.get(url + "/v1/models")
                    return JSONResponse(resp.json(), status_code=resp.status_code)
                except (httpx.HTTPError, ValueError):
                    continue
        return JSONResponse(_error(502, "no replica answered"), status_code=502)

    async def respond(send, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def forward(scope, receive, send) -> None:
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            text = prompt_text(json.loads(body)) if policy == "prefix_aware" else ""
        except ValueError:
            text = ""                         # the replica answers the bad JSON itself
        before = picker.matched[:]
        i = picker.pick(text)
        url = urls[i]
        requests.labels(url, policy).inc()
        in_flight.labels(url).inc()
        matched.labels(url).inc(picker.matched[i] - before[i])
        try:
            try:
                status, headers, stream = await upstreams[i].post(scope["path"], body)
            except OSError as err:
                failed.labels(url).inc()
                await respond(send, 502, _error(502, f"replica {url} failed: {err}"))
                return
            out = [(k.encode(), headers[k].encode()) for k in _PASS_HEADERS if k in headers]
            await send({"type": "http.response.start", "status": status,
                        "headers": out + [(b"x-labkit-replica", url.encode())]})
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                async for chunk in stream:
                    if gone.done():           # the client left: drop the replica's connection,
                        return                # which aborts the request there
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
            finally:
                gone.cancel()
                await stream.aclose()
            await send({"type": "http.response.body", "body": b""})
        finally:
            picker.done(i)
            in_flight.labels(url).dec()

    async def asgi(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in ROUTED:
            return await forward(scope, receive, send)
        return await app(scope, receive, send)

    asgi.state = app.state
    asgi.app = app
    return asgi


def _check_urls(urls) -> list[str]:
    if isinstance(urls, str) or not urls:
        raise ValueError("give the replicas as a list of URLs, e.g. "
                         "['http://127.0.0.1:8001', 'http://127.0.0.1:8002']")
    out = []
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"a replica must be an http:// URL, got {url!r}")
        out.append(url.rstrip("/"))
    return out


def route(urls: list[str], policy: str = "round_robin", host: str = "127.0.0.1",
          port: int = 8080, *, exit_with_parent: bool = False, log_level: str = "warning",
          **picker_options) -> int:
    """Run the router in this process until SIGINT/SIGTERM; returns 0."""
    import os
    import threading

    import uvicorn

    from labkit.serving.process import EXPOSED_WARNING, watch_parent

    app = create_router_app(urls, policy, **picker_options)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"labkit route: warning: {EXPOSED_WARNING.format(host=host)}", file=sys.stderr,
              flush=True)
    if exit_with_parent:
        threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                  access_log=False, backlog=2048)).run()
    return 0


def route_cli(argv: list[str]) -> int:
    """``python -m labkit route --replica URL ... --policy P [--port N]``; returns the exit
    code (2 for invalid settings)."""
    p = argparse.ArgumentParser(prog="python -m labkit route",
                                description="Route OpenAI requests over replicas of the "
                                            "course's server.")
    p.add_argument("--replica", action="append", required=True, metavar="URL",
                   help="a replica's base URL (repeat the flag for each replica)")
    p.add_argument("--policy", choices=POLICIES, default="round_robin")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--block-chars", type=int, default=BLOCK_CHARS,
                   help="prefix_aware: characters per hashed prompt block")
    p.add_argument("--table-blocks", type=int, default=TABLE_BLOCKS,
                   help="prefix_aware: block hashes remembered per replica")
    p.add_argument("--max-imbalance", type=int, default=MAX_IMBALANCE,
                   help="prefix_aware: most requests in flight above the least loaded replica")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started the router exits")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    try:
        _check_urls(args.replica)
        Picker(len(args.replica), args.policy, block_chars=args.block_chars,
               table_blocks=args.table_blocks, max_imbalance=args.max_imbalance)
    except ValueError as err:
        print(f"labkit route: {err}", file=sys.stderr)
        return 2
    return route(args.replica, args.policy, args.host, args.port,
                 exit_with_parent=args.exit_with_parent, log_level=args.log_level,
                 block_chars=args.block_chars, table_blocks=args.table_blocks,
                 max_imbalance=args.max_imbalance)


class RouterProcess(ServerProcess):
    """``python -m labkit route`` as a subprocess on 127.0.0.1 (the lifecycle of
    :class:`~labkit.serving.process.ServerProcess`: context manager, ``stop()``, atexit,
    exit with its parent). Options: ``replica`` (list of URLs), ``policy`` …"""

    COMMAND = "route"


def start_router(urls, policy: str = "round_robin", port: int | None = None,
                 **options) -> RouterProcess:
    """Start the router over the replicas at ``urls`` with ``policy`` and wait until it is
    ready; use it as ``with start_router(urls, "prefix_aware") as router: router.url``.
    ``options``: ``block_chars``, ``table_blocks``, ``max_imbalance``."""
    urls = _check_urls(list(urls) if not isinstance(urls, str) else urls)
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
    return RouterProcess(port, replica=urls, policy=policy, **options).start()
