"""The course's inference server, as a package: one concept per module.

=============================  ================================================================
module                         what it holds
=============================  ================================================================
:mod:`~.config`                :class:`~labkit.serving.config.ServerConfig` and the
                               accepted names
:mod:`~.protocol`              OpenAI request validation, error bodies, chat templates
:mod:`~.metrics`               the Prometheus metrics, under vLLM's names
:mod:`~.batching`              the engine's scheduler: dynamic and continuous batching
:mod:`~.engine`                the engine loop (own process or thread) and the front end's client
:mod:`~.frontend`              the FastAPI app: routes, admission control, streaming
:mod:`~.process`               ``python -m labkit serve`` and
                               :class:`~labkit.serving.process.ServerProcess`
:mod:`~.loadgen`               the load generators: closed loop, open loop, flood
:mod:`~.bench`                 ``python -m labkit bench serve``
:mod:`~.prefix_cache`          automatic prefix caching: hashed KV blocks reused across prompts
:mod:`~.router`                ``python -m labkit route``: round-robin, least outstanding,
                               prefix-aware routing over replicas
:mod:`~.routebench`            ``python -m labkit bench route`` and the prefix-cache TTFT bench
=============================  ================================================================

The design is vLLM V1's: the HTTP front end and the engine are separate processes that exchange
requests and tokens over ZeroMQ; the front end refuses what it cannot queue (429) so a flood
cannot starve the engine. ``engine="thread"`` keeps the single-process design to compare.

This ``__init__`` imports nothing heavy: names are loaded from their module on first use.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "ServerConfig": "config", "MODELS": "config", "BATCHING": "config", "ENGINES": "config",
    "RequestError": "protocol", "parse_request": "protocol", "render_chat": "protocol",
    "Metrics": "metrics", "VLLM_METRICS": "metrics",
    "Scheduler": "batching", "Sequence": "batching",
    "EngineClient": "engine", "run_engine": "engine",
    "create_app": "frontend",
    "serve": "process", "serve_cli": "process", "ServerProcess": "process",
    "start_server": "process", "free_port": "process", "option_flags": "process",
    "sweep_logs": "process", "switch_interval_s": "process", "LOG_PREFIX": "process",
    "LoadResult": "loadgen", "FloodResult": "loadgen", "closed_loop": "loadgen",
    "open_loop": "loadgen", "flood": "loadgen", "percentile": "loadgen",
    "bench_serve": "bench", "bench_serve_cli": "bench", "bench_flood": "bench",
    "PrefixCache": "prefix_cache", "block_hashes": "prefix_cache",
    "POLICIES": "router", "Picker": "router", "start_router": "router", "route_cli": "router",
    "RouterProcess": "router", "bench_route": "routebench",
    "bench_route_cli": "routebench", "bench_prefix_cache": "routebench",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
