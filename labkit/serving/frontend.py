"""The HTTP front end: FastAPI routes, admission control, streaming, metrics endpoint.

It holds no model and imports no torch: it validates requests
(:mod:`labkit.serving.protocol`), refuses what it cannot queue, hands the rest to the engine
(:class:`labkit.serving.engine.EngineClient`) and turns the engine's events into OpenAI's
answers. Routes:

- ``GET /healthz`` (liveness: the process answers), ``GET /readyz`` (readiness: 503 until the
  engine has loaded the model, and again once it is gone), ``GET /metrics`` (Prometheus text,
  vLLM's names: :mod:`labkit.serving.metrics`), ``GET /v1/models``, ``POST
  /reset_prefix_cache`` (drop the engine's cached prefix blocks, as vLLM's endpoint of that
  name; requests sent after it see an empty cache);
- ``POST /v1/completions`` and ``POST /v1/chat/completions``, plain or streamed as
  server-sent events, with a last usage chunk when ``stream_options.include_usage`` is set.

**Admission control** happens here, before the body is read when it can: a request whose
sequences would make more than ``max_queue_size`` wait (accepted by this front end and not yet
running in the engine) gets 429 with ``Retry-After`` at once, so a flood turns into cheap
refusals while the engine keeps its batch full. A client that hangs up aborts its request (the
engine drops its sequences, 499 is counted), as vLLM does. A dead engine turns every request
into 503.

Imports :mod:`labkit.serving.config`, ``.protocol``, ``.metrics`` and ``.engine``.
"""


import asyncio
import contextlib
import json
import time
import uuid

from labkit.serving.config import ServerConfig
from labkit.serving.engine import EngineClient, EngineDead
from labkit.serving.metrics import Metrics
from labkit.serving.protocol import RequestError, error_body, parse_request

__all__ = ["create_app"]

_QUEUE_FULL = json.dumps(error_body(429, "the queue is full; retry later", None)).encode()


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


class AdmissionControl:
    """Pure ASGI middleware: refuse a completion request with 429 before routing, validation
    or reading its body when the queue is full. This is the path a flood takes, so it does
    as little as possible: one comparison and a canned answer."""

    PATHS = ("/v1/completions", "/v1/chat/completions")

    def __init__(self, app, get_engine, config, metrics) -> None:
        self.app, self.get_engine, self.limit = app, get_engine, config.max_queue_size
        self.refused = metrics.requests.labels("429")
        self.headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                        (b"content-length", str(len(_QUEUE_FULL)).encode())]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" \
                and scope["path"] in self.PATHS:
            engine = self.get_engine()
            if engine is not None and engine.ready and engine.waiting >= self.limit:
                self.refused.inc()
                await send({"type": "http.response.start", "status": 429,
                            "headers": self.headers})
                await send({"type": "http.response.body", "body": _QUEUE_FULL})
                return
        await self.app(scope, receive, send)


async def _watch_disconnect(request, queue: asyncio.Queue) -> None:
    """Put ``("gone",)`` on the request's event queue when its client disconnects (the body
    is read: the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            queue.put_nowait(("gone",))
            return


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body)}\n\n"


def create_app(config: ServerConfig | None = None, model=None, *, on_engine_death=None):
    """The FastAPI application.

    Args:
        config: :class:`~labkit.serving.config.ServerConfig` (default settings when None).
        model: an already loaded :class:`~labkit.inference.language_model.LanguageModel`
            (tests pass one): the engine then runs in a thread of this process with it. When
            None the engine loads ``config.model`` itself, in its own process
            (``config.engine == "process"``) or a thread; ``/readyz`` answers 503 until it is
            loaded.
        on_engine_death: called with a reason when the engine dies (the server passes a
            function that stops it with a non-zero exit code).

    ``app.state`` holds ``config``, ``metrics`` and ``engine`` (the
    :class:`~labkit.serving.engine.EngineClient`).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

    class GuardedStream(StreamingResponse):
        """A stream whose answer is accounted for even when the client leaves before the
        first chunk (then the body generator never starts and its ``finally`` never runs)."""

        def __init__(self, answer: "Answer", **kwargs) -> None:
            super().__init__(answer.stream(), **kwargs)
            self.answer = answer

        async def __call__(self, scope, receive, send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                self.answer._close(499)          # nothing when the stream already closed

    config = config or ServerConfig()
    metrics = Metrics(config.name)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine = EngineClient(config, metrics, model=model, on_death=on_engine_death)
        app.state.engine = engine
        await engine.start()
        try:
            yield
        finally:
            await engine.stop(config.shutdown_timeout_s)

    app = FastAPI(title="labkit inference server", lifespan=lifespan)
    app.state.config, app.state.metrics = config, metrics
    app.add_middleware(AdmissionControl, get_engine=lambda: getattr(app.state, "engine", None),
                       config=config, metrics=metrics)

    def refuse(err: RequestError):
        metrics.requests.labels(str(err.status)).inc()
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request):
        engine: EngineClient = request.app.state.engine
        if engine.dead:
            return JSONResponse({"status": "engine dead", "reason": engine.dead},
                                status_code=503)
        if not engine.ready:
            return JSONResponse({"status": "loading", "model": config.model}, status_code=503)
        return {"status": "ready", "model": config.name, "batching": config.batching,
                "engine": config.engine if model is None else "thread",
                "engine_pid": engine.info.get("pid"), "max_batch_size": config.max_batch_size,
                "max_queue_delay_ms": config.max_queue_delay_ms,
                "max_queue_size": config.max_queue_size,
                "enable_prefix_caching": config.enable_prefix_caching,
                "prefix_cache_blocks": config.prefix_cache_blocks,
                "block_size": config.block_size}

    @app.post("/reset_prefix_cache")
    async def reset_prefix_cache(request: Request):
        engine: EngineClient = request.app.state.engine
        if engine.dead or not engine.ready:
            return JSONResponse({"status": "engine not ready"}, status_code=503)
        await engine.reset_prefix_cache()
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_endpoint():
        return PlainTextResponse(metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request):
        engine: EngineClient = request.app.state.engine
        return {"object": "list", "data": [{
            "id": config.name, "object": "model", "created": created, "owned_by": "labkit",
            "root": config.model, "max_model_len": engine.info.get("context_length")}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generate(request, chat=True)

    async def generate(request, chat: bool):
        arrival = time.monotonic()
        engine: EngineClient = request.app.state.engine
        try:
            if engine.dead:
                raise RequestError(503, f"the engine is gone ({engine.dead}); retry on another "
                                        f"replica", {"Retry-After": "1"})
            if not engine.ready:
                raise RequestError(503, "the model is still loading; wait for /readyz",
                                   {"Retry-After": "1"})
            params = parse_request(await _read_body(request, config.max_body_bytes), config,
                                   chat)
            prompts = [None] if chat else params["prompts"]
            count = len(prompts) * params["n"]
            if engine.waiting >= config.max_queue_size or (
                    engine.waiting and engine.waiting + count > config.max_queue_size):
                raise RequestError(429, f"the queue is full ({config.max_queue_size} sequences "
                                        f"waiting); retry later", {"Retry-After": "1"})
        except RequestError as err:
            return refuse(err)
        queue: asyncio.Queue = asyncio.Queue()
        index: dict[str, int] = {}
        try:
            for p, prompt in enumerate(prompts):
                for j in range(params["n"]):
                    seed = params["seed"]
                    req = {"prompt": prompt, "messages": params["messages"],
                           "max_tokens": params["max_tokens"],
                           "temperature": params["temperature"], "top_p": params["top_p"],
                           "seed": None if seed is None else seed + j,
                           "stop": params["stop"], "arrival": arrival,
                           "stream": params["stream"]}
                    index[await engine.add(req, queue)] = p * params["n"] + j
        except EngineDead as err:
            for rid in index:
                engine.abort(rid)
            return refuse(RequestError(503, f"the engine is gone ({err}); retry on another "
                                            f"replica", {"Retry-After": "1"}))
        answer = Answer(engine, metrics, config, params, chat, queue, index, arrival)
        # As vLLM does: a client that hangs up aborts its request, so the engine drops its
        # sequences instead of generating for nobody (a flood's clients hang up a lot).
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(request, queue))
        try:
            return await answer.respond(GuardedStream, JSONResponse, refuse)
        finally:
            watcher.cancel()

    return app


class Answer:
    """One HTTP request's sequences on their way back: acks, tokens, the answer."""

    def __init__(self, engine, metrics, config, params, chat, queue, index, arrival):
        self.engine, self.metrics, self.config, self.params = engine, metrics, config, params
        self.chat, self.queue, self.index, self.arrival = chat, queue, index, arrival
        self.loop = asyncio.get_running_loop()
        self.deadline = arrival + config.request_timeout_s
        self.prompt_tokens: dict[str, int] = {}
        self.tokens = {rid: 0 for rid in index}
        self.texts = {rid: [] for rid in index}
        self.reasons: dict[str, str] = {}
        self.buffer: list = []
        self.rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.status = 200
        self.closed = False

    async def next_event(self):
        if self.buffer:
            return self.buffer.pop(0)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(self.queue.get(), remaining)

    def _on_token(self, event) -> None:
        _, rid, text, reason, n, first_at = event
        now = time.monotonic()
        if self.tokens[rid] == 0:
            self.metrics.ttft.observe((first_at or now) - self.arrival)
        self.tokens[rid] += n
        self.texts[rid].append(text)
        if reason is not None:
            self.reasons[rid] = reason
            self.engine.finished(rid)
            self.metrics.success[reason].inc()
            self.metrics.e2e.observe(now - self.arrival)

    def _close(self, status: int) -> None:
        """Account the answer once (later calls do nothing): abort what is left in the
        engine, count the status."""
        if self.closed:
            return
        self.closed, self.status = True, status
        for rid in self.index:
            if rid not in self.reasons:
                if status in (499, 504):
                    self.metrics.success["abort"].inc()
                self.engine.abort(rid)
        self.metrics.in_flight.dec()
        self.metrics.requests.labels(str(status)).inc()

    def timeout_message(self) -> str:
        return (f"the request did not finish within {self.config.request_timeout_s} s (server "
                f"--request-timeout-s); lower max_tokens or retry")

    def usage(self) -> dict:
        prompt = sum(self.prompt_tokens.values())
        done = sum(self.tokens.values())
        return {"prompt_tokens": prompt, "completion_tokens": done,
                "total_tokens": prompt + done}

    async def _accept(self):
        """Wait for every sequence's ack; return None or the error (status, message)."""
        while len(self.prompt_tokens) < len(self.index):
            event = await self.next_event()
            if event[0] == "ack":
                self.prompt_tokens[event[1]] = event[2]
            elif event[0] == "err":
                return event[2], event[3]
            elif event[0] == "gone":
                return 499, "the client closed the connection"
            else:
                self.buffer.append(event)
        return None

    async def respond(self, StreamingResponse, JSONResponse, refuse):
        self.metrics.in_flight.inc()
        try:
            failed = await self._accept()
        except asyncio.TimeoutError:
            failed = (504, self.timeout_message())
        except asyncio.CancelledError:
            self._close(499)
            raise
        if failed:
            self.metrics.in_flight.dec()
            for rid in self.index:
                self.engine.abort(rid)
            return refuse(RequestError(failed[0], failed[1],
                                       {"Retry-After": "1"} if failed[0] == 503 else None))
        if self.params["stream"]:
            return StreamingResponse(self, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await self.whole(JSONResponse)

    # -- not streamed ------------------------------------------------------------------------
    async def whole(self, JSONResponse):
        try:
            while len(self.reasons) < len(self.index):
                event = await self.next_event()
                if event[0] == "tok":
                    self._on_token(event)
                elif event[0] == "err":
                    self._close(event[2])
                    return JSONResponse(error_body(event[2], event[3]), status_code=event[2])
                elif event[0] == "gone":             # nobody will read the answer
                    self._close(499)
                    return JSONResponse(error_body(499, "the client closed the connection"),
                                        status_code=499)
        except asyncio.TimeoutError:
            self._close(504)
            return JSONResponse(error_body(504, self.timeout_message()), status_code=504)
        except asyncio.CancelledError:      # the client went away
            self._close(499)
            raise
        self._close(200)
        choices = []
        for rid, i in sorted(self.index.items(), key=lambda kv: kv[1]):
            text = "".join(self.texts[rid])
            if self.chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text},
                                "finish_reason": self.reasons[rid], "logprobs": None})
            else:
                choices.append({"index": i, "text": text, "finish_reason": self.reasons[rid],
                                "logprobs": None})
        return {"id": self.rid, "object": "chat.completion" if self.chat else
                "text_completion", "created": self.created, "model": self.config.name,
                "choices": choices, "usage": self.usage()}

    # -- streamed ----------------------------------------------------------------------------
    def _chunk(self, i: int, text: str | None, reason: str | None, role: bool = False) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else \
                ({"content": text} if text else {})
            choice = {"index": i, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": i, "text": text or "", "finish_reason": reason,
                      "logprobs": None}
        body = {"id": self.rid, "object": "chat.completion.chunk" if self.chat else
                "text_completion", "created": self.created, "model": self.config.name,
                "choices": [choice]}
        if self.params["include_usage"]:
            body["usage"] = None          # OpenAI: null on every chunk but the last
        return body

    async def stream(self):
        status = 200
        try:
            if self.chat:
                for i in sorted(self.index.values()):
                    yield _sse(self._chunk(i, None, None, role=True))
            while len(self.reasons) < len(self.index):
                try:
                    event = await self.next_event()
                except asyncio.TimeoutError:
                    status = 504
                    yield _sse(error_body(504, self.timeout_message()))
                    break
                if event[0] == "tok":
                    self._on_token(event)
                    if event[2] or event[3] is not None:
                        yield _sse(self._chunk(self.index[event[1]], event[2], event[3]))
                elif event[0] == "err":
                    status = event[2]
                    yield _sse(error_body(event[2], event[3]))
                    break
            if status == 200 and self.params["include_usage"]:
                # OpenAI's shape: one more chunk, no choices, the token counts
                last = {**self._chunk(0, "", None), "choices": [], "usage": self.usage()}
                yield _sse(last)
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            status = 499
            raise
        finally:
            self._close(status)
