"""The server's Prometheus metrics, under vLLM's names.

The scheduler and latency metrics carry the names, types and labels vLLM's V1 engine exports
(``model_name`` and ``engine`` labels; vLLM "Production Metrics",
https://docs.vllm.ai/en/stable/usage/metrics/, and ``vllm/v1/metrics/loggers.py`` of
vllm-project/vllm at commit 005a810bc40faa25b8870fbc8559c3462581eee3; checked 2026-12-05), so
an autoscaler or dashboard written against this server works unchanged against a vLLM
Deployment. Metrics vLLM has no counterpart for keep a ``labkit_`` prefix:
``labkit_requests_total`` (HTTP answers by status, 429s included), ``labkit_requests_in_flight``
(requests accepted and not yet answered) and ``labkit_batch_size``.

Imports only prometheus_client; :mod:`labkit.serving.frontend` owns the one instance of a
server and feeds it from the engine's stats. :func:`metric_value` and :func:`metric_sum` read
samples back from the text format (the benches, the lab checks and the tests use them).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Metrics", "VLLM_METRICS", "metric_value", "metric_sum"]

#: vLLM's metric names this server exports (as they appear in the text format), and their types
VLLM_METRICS = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_success_total": "counter",
    "vllm:prompt_tokens_total": "counter",
    "vllm:generation_tokens_total": "counter",
    "vllm:prefix_cache_queries_total": "counter",
    "vllm:prefix_cache_hits_total": "counter",
}

# vLLM's buckets (loggers.py at the commit above)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
#: finish reasons vLLM counts in ``vllm:request_success_total{finished_reason=...}``
FINISH_REASONS = ("stop", "length", "abort")


class Metrics:
    """The metrics of one server, in their own registry (no global state).

    Attributes hold the children already labelled with ``model_name`` (and ``engine="0"``),
    so callers just ``.inc()``, ``.set()`` or ``.observe()``.
    """

    def __init__(self, model_name: str) -> None:
        from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                                       ProcessCollector)

        self.model_name = model_name
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        labels = ["model_name", "engine"]
        ids = (model_name, "0")

        def gauge(name, doc):
            return Gauge(name, doc, labels, registry=r).labels(*ids)

        def counter(name, doc):
            return Counter(name, doc, labels, registry=r).labels(*ids)

        def histogram(name, doc, buckets):
            return Histogram(name, doc, labels, buckets=buckets, registry=r).labels(*ids)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model "
                             "execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be "
                             "processed.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 "
                              "percent usage.")
        self.ttft = histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", _TTFT_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", _LATENCY_BUCKETS)
        self.queue_time = histogram("vllm:request_queue_time_seconds",
                                    "Histogram of time spent in WAITING phase for request.",
                                    _LATENCY_BUCKETS)
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          labels + ["finished_reason"], registry=r)
        self.success = {reason: success.labels(*ids, reason) for reason in FINISH_REASONS}
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens",
                                         "Number of generation tokens processed.")
        # in tokens, as vLLM V1 counts them ("Prefix cache queries, in terms of number of
        # queried tokens" / "... hits, in terms of number of cached tokens": loggers.py at the
        # commit above, which also still exports the deprecated vllm:gpu_prefix_cache_*)
        self.prefix_queries = counter("vllm:prefix_cache_queries", "Prefix cache queries, in "
                                      "terms of number of queried tokens.")
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of "
                                   "number of cached tokens.")
        # the course's own, no vLLM counterpart
        self.requests = Counter("labkit_requests", "HTTP answers of the completion endpoints "
                                "by status (429 and 503 included)", ["status"], registry=r)
        self.in_flight = Gauge("labkit_requests_in_flight",
                               "Requests accepted and not yet answered (waiting + running)",
                               registry=r)
        self.batch_size = Histogram("labkit_batch_size",
                                    "Sequences per batch (dynamic batching) or per decode step "
                                    "(continuous batching)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)

    def record_stats(self, stats: dict) -> None:
        """Apply one stats message of the engine (see :mod:`labkit.serving.engine`)."""
        self.running.set(stats["running"])
        self.waiting.set(stats["waiting"])
        self.kv_usage.set(stats["kv_usage"])
        for size in stats.get("batch_sizes", ()):
            self.batch_size.observe(size)
        for seconds in stats.get("queue_times", ()):
            self.queue_time.observe(seconds)
        if stats.get("prefix_queries"):
            self.prefix_queries.inc(stats["prefix_queries"])
            self.prefix_hits.inc(stats.get("prefix_hits", 0))

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of sample ``name`` (with ``labels``) in Prometheus text ``text``; 0 if absent."""
    from prometheus_client.parser import text_string_to_metric_families

    labels = dict(labels or {})
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def metric_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of every sample ``name`` whose labels include ``labels`` (e.g. a counter over
    all its ``finished_reason`` values); 0 if none."""
    from prometheus_client.parser import text_string_to_metric_families

    labels = dict(labels or {})
    return float(sum(sample.value for family in text_string_to_metric_families(text)
                     for sample in family.samples if sample.name == name
                     and all(sample.labels.get(k) == v for k, v in labels.items())))
