"""The OpenAI-compatible protocol: request validation, error bodies and chat templates.

Pure functions on JSON: no HTTP, no model, no IPC. Imports only
:mod:`labkit.serving.config`. The front end (:mod:`labkit.serving.frontend`) calls
:func:`parse_request`; the engine (:mod:`labkit.serving.engine`) calls :func:`render_chat`.

What is implemented (a subset of OpenAI's API, as vLLM serves it):

- ``POST /v1/completions``: ``prompt`` (a string or a list of strings, served as one batch),
  ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``n``, ``stop``, ``stream``,
  ``stream_options.include_usage``, ``model``;
- ``POST /v1/chat/completions``: ``messages`` (``system``/``user``/``assistant`` turns, text
  content) rendered with the model's chat template, ``max_tokens`` or
  ``max_completion_tokens``, and the same sampling fields.

``temperature`` defaults to 0 (greedy, reproducible) on both endpoints, where OpenAI defaults
to 1. Fields the server does not implement are ignored, as vLLM does. Every error answers with
OpenAI's body shape ``{"error": {"message", "type", "param", "code"}}``; ``code`` is the HTTP
status (vLLM's convention).
"""

from __future__ import annotations

import json

from labkit.serving.config import ServerConfig

__all__ = ["RequestError", "error_body", "parse_request", "render_chat", "CHAT_TEMPLATES",
           "PLAIN_TEMPLATE", "MAX_STOP"]

#: most stop strings per request (OpenAI's limit)
MAX_STOP = 4

#: the chat format of each model; SmolLM2 ships its own Jinja template (ChatML); the tiny
#: model was never trained on chats and gets the documented plain template below
CHAT_TEMPLATES = {"smollm2": "model", "tiny-gpt": "plain"}

#: the tiny model's chat template, one ``role: content`` line per message, then
#: ``assistant:`` (a plain, documented format; the model was not trained on it)
PLAIN_TEMPLATE = "{role}: {content}\n"

_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 499: "client_closed_request",
          500: "server_error", 503: "service_unavailable", 504: "timeout"}


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, a message that says what to fix, the
    offending field (``param``) and extra response headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.headers, self.param = status, message, headers or {}, param

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param)


def error_body(status: int, message: str, param: str | None = None) -> dict:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": _TYPES.get(
        status, "invalid_request_error" if status < 500 else "server_error"),
        "param": param, "code": status}}


def _bad(message: str, param: str | None = None) -> RequestError:
    return RequestError(422, message, param=param)


def _number(data: dict, name: str, default, low: float, high: float, what: str):
    value = data.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not low <= value <= high:
        raise _bad(f"'{name}' must be {what}, got {value!r}", name)
    return value


def _prompts(data: dict, config: ServerConfig) -> list[str]:
    if "prompt" not in data:
        raise _bad("missing field 'prompt' (a non-empty string, or a list of them)", "prompt")
    prompt = data["prompt"]
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts:
        raise _bad(f"'prompt' must be a string or a non-empty list of strings, got "
                   f"{type(prompt).__name__}", "prompt")
    for p in prompts:
        if not isinstance(p, str):
            raise _bad("'prompt' must be text: token-id prompts are not supported", "prompt")
        if not p:
            raise _bad("'prompt' is empty; give at least one character", "prompt")
        if len(p) > config.max_prompt_chars:
            raise _bad(f"'prompt' has {len(p):,} characters; the limit is "
                       f"{config.max_prompt_chars:,}", "prompt")
    return prompts


def _messages(data: dict, config: ServerConfig) -> list[dict]:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list of {\"role\", \"content\"} objects",
                   "messages")
    out, size = [], 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise _bad(f"messages[{i}] needs a 'role' of system, user or assistant", "messages")
        content = m.get("content")
        if isinstance(content, list):              # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(c, dict) and c.get("type") == "text"
                       and isinstance(c.get("text"), str) for c in content):
                raise _bad(f"messages[{i}].content: only text parts are supported", "messages")
            content = "".join(c["text"] for c in content)
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content must be a string", "messages")
        size += len(content)
        out.append({"role": m["role"], "content": content})
    if size > config.max_prompt_chars:
        raise _bad(f"the messages have {size:,} characters; the limit is "
                   f"{config.max_prompt_chars:,}", "messages")
    return out


def _stop(data: dict) -> tuple[str, ...]:
    stop = data.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) \
            or len(stops) > MAX_STOP:
        raise _bad(f"'stop' must be a non-empty string or a list of at most {MAX_STOP} of "
                   f"them, got {stop!r}", "stop")
    return tuple(stops)


def parse_request(body: bytes, config: ServerConfig, chat: bool = False) -> dict:
    """Check a ``/v1/completions`` (or, with ``chat``, ``/v1/chat/completions``) body.

    Returns a dict with ``prompts`` (list of strings; None for chat) or ``messages``,
    ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``n``, ``stop``, ``stream`` and
    ``include_usage``; raises :class:`RequestError` (422 for a bad field, 404 for a model
    this server does not serve).
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        example = ('{"messages": [{"role": "user", "content": "..."}]}' if chat
                   else '{"prompt": "...", "max_tokens": 16}')
        raise _bad(f"the body is not valid JSON ({err}); send {example}") from None
    if not isinstance(data, dict):
        raise _bad(f"the body must be a JSON object, got {type(data).__name__}")
    model = data.get("model")
    if model is not None and model != config.name:
        raise RequestError(404, f"The model `{model}` does not exist; this server serves "
                                f"`{config.name}` (GET /v1/models)", param="model")
    out = {"prompts": None, "messages": None}
    if chat:
        out["messages"] = _messages(data, config)
        key = "max_completion_tokens" if data.get("max_completion_tokens") is not None \
            else "max_tokens"
    else:
        out["prompts"] = _prompts(data, config)
        key = "max_tokens"
    max_tokens = data.get(key)
    if max_tokens is None:
        max_tokens = config.max_tokens_default
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _bad(f"'{key}' must be an integer, got {max_tokens!r}", key)
    if not 1 <= max_tokens <= config.max_tokens_limit:
        raise _bad(f"'{key}' must be between 1 and {config.max_tokens_limit}, got "
                   f"{max_tokens}", key)
    out["max_tokens"] = max_tokens
    out["temperature"] = float(_number(data, "temperature", 0.0, 0, 2,
                                       "a number from 0 (greedy) to 2"))
    out["top_p"] = float(_number(data, "top_p", 1.0, 0, 1, "a number in (0, 1]"))
    if out["top_p"] <= 0:
        raise _bad("'top_p' must be a number in (0, 1], got 0", "top_p")
    n = data.get("n", 1)
    n = 1 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= config.max_n:
        raise _bad(f"'n' must be an integer from 1 to {config.max_n}, got {n!r}", "n")
    out["n"] = n
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise _bad(f"'seed' must be a non-negative integer, got {seed!r}", "seed")
    out["seed"] = seed
    out["stop"] = _stop(data)
    stream = data.get("stream", False)
    stream = False if stream is None else stream
    if not isinstance(stream, bool):
        raise _bad(f"'stream' must be true or false, got {stream!r}", "stream")
    out["stream"] = stream
    options = data.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _bad("'stream_options' is only allowed with \"stream\": true",
                       "stream_options")
        if not isinstance(options, dict):
            raise _bad(f"'stream_options' must be an object such as "
                       f'{{"include_usage": true}}, got {options!r}', "stream_options")
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise _bad(f"'stream_options.include_usage' must be true or false, got "
                       f"{include_usage!r}", "stream_options")
    out["include_usage"] = include_usage
    return out


def render_chat(messages: list[dict], template: str, jinja_source: str | None = None) -> str:
    """The prompt text of a conversation, ready for the model (generation prompt added).

    ``template``: ``"model"`` renders the model's own Jinja chat template (``jinja_source``,
    SmolLM2's ``chat_template.jinja``) in a sandbox; ``"plain"`` writes
    :data:`PLAIN_TEMPLATE` per message, then ``assistant:``.
    """
    if template == "model":
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False)
        return env.from_string(jinja_source).render(messages=messages,
                                                    add_generation_prompt=True)
    if template == "plain":
        return "".join(PLAIN_TEMPLATE.format(**m) for m in messages) + "assistant:"
    raise ValueError(f"unknown chat template {template!r}")
