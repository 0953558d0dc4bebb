"""Small discrete-event simulations of replicas serving requests, with and without autoscaling.

- :func:`simulate_queue`: a fixed number of replicas behind one first-come-first-served queue
  (an M/G/c queue): Poisson arrivals, service times drawn from a *measured* sample.
- :func:`simulate_autoscaling`: the same, but a Horizontal-Pod-Autoscaler-style control loop
  adds and removes replicas, and every new replica pays a cold start (node provisioning, image
  pull, model load) before it serves. The loop can watch CPU utilisation or queue depth, which
  is the whole difference between the two policies the course compares.

Everything is seeded (``numpy.random.default_rng(seed)``) and pure Python + NumPy; a simulation
of about 10**5 requests takes well under a second. Times are in seconds.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from labkit.machine.timing import percentile

#: Kubernetes HPA defaults (kube-controller-manager flags and HPA behavior), from
#: https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/
#: (retrieved 2026-11-28, checked 2026-12-05): sync period 15 s, tolerance 0.1, scale-down
#: stabilization 300 s.
#: Default scale-up policy: per period, at most double the replicas or add 4, whichever is more.
HPA_DEFAULTS = {"sync_period_s": 15.0, "tolerance": 0.1, "scale_down_stabilization_s": 300.0,
                "scale_up_percent": 100, "scale_up_pods": 4}

#: The cited start of a tuned GPU inference *Pod* on Amazon EKS: "Pods can start serving in
#: under two minutes" with SOCI parallel image pull and model streaming from S3. An upper bound
#: for the Pod part (image pull and model load together) on a node that is already up; it does
#: not include launching a new node.
COLD_START_CITED = {
    "seconds": 120.0,
    "covers": "the Pod: image pull and model load, on a node that is already running",
    "claim": "under two minutes (SOCI parallel pull + model streaming from Amazon S3)",
    "url": "https://docs.aws.amazon.com/eks/latest/userguide/ml-inference.html",
    "title": "Amazon EKS User Guide: Run AI/ML inference workloads on Amazon EKS",
    "retrieved": "2026-11-28",
    "checked": "2026-12-05",
}

#: An *assumed* launch time for a new GPU node, before its Pod can start: EC2 launch, boot of
#: the accelerated AMI, kubelet join and the NVIDIA device plugin advertising the GPUs. Not
#: cited: it varies with instance type, AMI and Region (1 to 3 minutes is common); measure
#: yours from a NodeClaim's creation to its node's Ready condition.
NODE_LAUNCH_ASSUMED = {
    "seconds": 90.0,
    "covers": "a new node: EC2 launch, AMI boot, kubelet join, device plugin registration",
    "status": "assumed (not cited); measure it on your cluster",
}


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check_samples(service_times: Sequence[float]) -> np.ndarray:
    samples = np.asarray(service_times, dtype=float).ravel()
    if samples.size == 0 or not np.all(np.isfinite(samples)) or (samples <= 0).any():
        raise ValueError("service_times must be a non-empty sample of positive durations in "
                         "seconds (e.g. measured forward-pass times)")
    return samples


@dataclass(frozen=True)
class QueueResult:
    """Per-request times of a simulation, in seconds, in arrival order."""

    arrivals_s: np.ndarray
    waits_s: np.ndarray
    latencies_s: np.ndarray
    utilization: float

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of latency (wait + service), in seconds."""
        return percentile(self.latencies_s, q)

    @property
    def p50(self) -> float:
        """Median latency (s)."""
        return self.percentile(50)

    @property
    def p95(self) -> float:
        """95th-percentile latency (s)."""
        return self.percentile(95)

    @property
    def p99(self) -> float:
        """99th-percentile latency (s)."""
        return self.percentile(99)

    def slo_violations(self, slo_s: float) -> float:
        """Fraction of requests slower than ``slo_s`` seconds."""
        return float(np.mean(self.latencies_s > slo_s))


def poisson_arrivals(rate: float, n: int, seed=0) -> np.ndarray:
    """``n`` arrival times (s) of a Poisson process of ``rate`` requests/s (exponential gaps)."""
    if rate <= 0 or int(n) < 1:
        raise ValueError(f"need rate > 0 and n >= 1, got rate={rate}, n={n}")
    return np.cumsum(_rng(seed).exponential(1.0 / rate, int(n)))


def simulate_queue(arrival_rate: float, service_times: Sequence[float], *, replicas: int = 1,
                   n_requests: int = 20_000, seed=0, warmup: float = 0.1) -> QueueResult:
    """``replicas`` identical servers behind one FIFO queue, each serving one request at a time.

    Service times are drawn with replacement from ``service_times`` (a measured sample), so the
    simulation keeps the sample's spread and tail. The first ``warmup`` fraction of requests is
    dropped from the result (the queue starts empty). ``utilization`` is the offered load
    ``arrival_rate x mean service / replicas``; above 1 the queue grows without bound.
    """
    samples = _check_samples(service_times)
    c = int(replicas)
    if c < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    rng = _rng(seed)
    arrivals = poisson_arrivals(arrival_rate, n_requests, seed=rng)
    service = rng.choice(samples, size=arrivals.size)
    free = [0.0] * c                    # when each server is next free (a heap)
    starts = np.empty_like(arrivals)
    for i, (a, s) in enumerate(zip(arrivals, service)):
        start = max(a, free[0])         # FIFO: the earliest-free server takes the next arrival
        heapq.heapreplace(free, start + s)
        starts[i] = start
    keep = slice(int(warmup * arrivals.size), None)
    waits = starts - arrivals
    return QueueResult(arrivals[keep], waits[keep], (waits + service)[keep],
                       float(arrival_rate * samples.mean() / c))


def erlang_c_wait_probability(arrival_rate: float, mean_service_s: float, replicas: int) -> float:
    """Probability that a request waits in an M/M/c queue (the Erlang C formula).

    A closed form to check :func:`simulate_queue` against (exact for exponential service).
    """
    c = int(replicas)
    a = arrival_rate * mean_service_s          # offered load in Erlangs
    if a >= c:
        return 1.0
    terms = sum(a**k / math.factorial(k) for k in range(c))
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (terms + top)


@dataclass(frozen=True)
class ColdStart:
    """Seconds from "a replica is wanted" to "it serves": new node, image pull, model load.

    ``pod_s`` holds image pull and model load together when only their sum is known, as with
    the cited :data:`COLD_START_CITED`.
    """

    node_s: float = 0.0
    image_pull_s: float = 0.0
    model_load_s: float = 0.0
    pod_s: float = 0.0

    @property
    def total_s(self) -> float:
        """The whole cold start (s)."""
        return self.node_s + self.image_pull_s + self.model_load_s + self.pod_s


def cold_start_new_node(node_s: float | None = None, pod_s: float | None = None) -> ColdStart:
    """A replica that needs a new node: the assumed node launch plus the cited Pod start.

    Defaults: :data:`NODE_LAUNCH_ASSUMED` (90 s, assumed) + :data:`COLD_START_CITED` (120 s,
    cited as "under two minutes"), 210 s in all.

    Example:
        >>> cold_start_new_node().total_s
        210.0
    """
    node = NODE_LAUNCH_ASSUMED["seconds"] if node_s is None else float(node_s)
    pod = COLD_START_CITED["seconds"] if pod_s is None else float(pod_s)
    return ColdStart(node_s=node, pod_s=pod)


def step_traffic(base_rps: float, peak_rps: float, start_s: float, end_s: float
                 ) -> Callable[[float], float]:
    """A traffic trace: ``base_rps``, then ``peak_rps`` from ``start_s`` to ``end_s``."""
    return lambda t: peak_rps if start_s <= t < end_s else base_rps


def nonhomogeneous_arrivals(rate_fn: Callable[[float], float], duration_s: float, seed=0,
                            bin_s: float = 1.0) -> np.ndarray:
    """Arrival times (s) of a Poisson process whose rate ``rate_fn(t)`` changes over time.

    The rate is held constant within each ``bin_s`` bin: a Poisson count per bin, times spread
    uniformly within it, sorted.
    """
    rng = _rng(seed)
    edges = np.arange(0.0, duration_s, bin_s)
    counts = rng.poisson([max(0.0, rate_fn(t)) * bin_s for t in edges])
    times = np.repeat(edges, counts) + rng.uniform(0, bin_s, counts.sum())
    return np.sort(times)


@dataclass(frozen=True)
class AutoscaleResult:
    """What an autoscaling simulation did: per-request latencies and per-tick controller state."""

    policy: str
    arrivals_s: np.ndarray
    latencies_s: np.ndarray
    tick_s: np.ndarray
    ready: np.ndarray
    wanted: np.ndarray
    queue_depth: np.ndarray
    metric: np.ndarray
    replica_seconds: float

    def slo_violations(self, slo_s: float) -> float:
        """Fraction of all requests slower than ``slo_s`` seconds."""
        return float(np.mean(self.latencies_s > slo_s))

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of latency (s)."""
        return percentile(self.latencies_s, q)

    def violations_per_tick(self, slo_s: float) -> np.ndarray:
        """Requests slower than ``slo_s`` that arrived in each control interval."""
        late = self.arrivals_s[self.latencies_s > slo_s]
        edges = np.append(self.tick_s, np.inf)
        return np.histogram(late, bins=edges)[0]


def _cpu_metric(busy_fraction: float, cpu_idle: float, cpu_busy: float) -> float:
    return cpu_idle + busy_fraction * (cpu_busy - cpu_idle)


def simulate_autoscaling(rate_fn: Callable[[float], float], duration_s: float,
                         service_times: Sequence[float], *, policy: str,
                         cold_start: ColdStart | float, min_replicas: int = 1,
                         max_replicas: int = 50,
                         target: float | None = None, cpu_idle: float = 0.05,
                         cpu_busy: float = 1.0, sync_period_s: float = 15.0,
                         tolerance: float = 0.1, scale_down_stabilization_s: float = 300.0,
                         seed=0) -> AutoscaleResult:
    """Replicas behind one FIFO queue, resized every ``sync_period_s`` by an HPA-style loop.

    Policies (the HPA algorithm is the same; only the signal differs):

    - ``"cpu"``: average CPU utilisation of the ready replicas over the last period, as a
      fraction of the CPU request. A replica's CPU use is modelled as ``cpu_idle`` when idle and
      ``cpu_busy`` while serving (1.0: the CPU does the work, as on this course's CPU server;
      a GPU server keeps the host CPU far below its request). Default target 0.7 (70 %).
    - ``"queue"``: requests in flight (waiting + being served) per replica, as servers such
      as vLLM export and KEDA (``AverageValue``) or a custom-metrics HPA read. Default target 1.5.

    Each period: ``desired = ceil(total / target)``, where ``total`` is the CPU of the ready
    replicas summed (``ready x average``) or all requests in flight, unless that is within
    ``tolerance`` of the current count; scale-down takes the largest recommendation of the last
    ``scale_down_stabilization_s`` seconds; scale-up adds at most ``max(current, 4)`` replicas
    per period (the HPA's default policy); the result is clamped to [min, max]. A new replica
    serves only after the cold start (a :class:`ColdStart`, or its total in seconds; each new
    replica lands on a new node, as Karpenter would launch one per GPU replica). Removed
    replicas finish their current request first.
    ``replica_seconds`` counts replicas from launch (you pay for a node while it boots).
    """
    if policy not in ("cpu", "queue"):
        raise ValueError(f"policy must be 'cpu' or 'queue', got {policy!r}")
    target = target if target is not None else (0.7 if policy == "cpu" else 1.5)
    startup = cold_start.total_s if isinstance(cold_start, ColdStart) else float(cold_start)
    if startup < 0:
        raise ValueError(f"cold start must be >= 0 seconds, got {startup}")
    samples = _check_samples(service_times)
    rng = _rng(seed)
    arrivals = nonhomogeneous_arrivals(rate_fn, duration_s, seed=rng)
    service = rng.choice(samples, size=arrivals.size)
    finish = np.full(arrivals.size, np.nan)

    idle: list[int] = []                     # ready replicas without work
    busy_until: list[tuple[float, int]] = []  # heap of (finish time, replica id)
    running: dict[int, int] = {}             # replica id -> request index
    pending: list[tuple[float, int]] = []    # heap of (ready time, replica id)
    retiring: set[int] = set()
    queue: deque[int] = deque()
    next_id = 0
    launched_at: dict[int, float] = {}
    replica_seconds = 0.0
    now, busy_area, ready_area = 0.0, 0.0, 0.0
    history: list[tuple[float, int]] = []
    ticks, ready_log, wanted_log, queue_log, metric_log = [], [], [], [], []
    last_tick = (0.0, 0.0, 0.0)  # (time, busy_area, ready_area)

    def ready_count() -> int:
        return len(idle) + len(running)

    def advance(t: float) -> None:
        nonlocal now, busy_area, ready_area
        busy_area += len(running) * (t - now)
        ready_area += ready_count() * (t - now)
        now = t

    def launch(n: int, t: float, warm: bool = False) -> None:
        nonlocal next_id
        for _ in range(n):
            heapq.heappush(pending, (t if warm else t + startup, next_id))
            launched_at[next_id] = t
            next_id += 1

    def retire(rid: int, t: float) -> None:
        nonlocal replica_seconds
        replica_seconds += t - launched_at.pop(rid)

    def start(rid: int, req: int, t: float) -> None:
        running[rid] = req
        heapq.heappush(busy_until, (t + service[req], rid))

    def free(rid: int, t: float) -> None:
        if rid in retiring:
            retiring.discard(rid)
            retire(rid, t)
        elif queue:
            start(rid, queue.popleft(), t)
        else:
            idle.append(rid)

    launch(min_replicas, 0.0, warm=True)           # the initial replicas are warm at t=0
    ticks_at = np.arange(sync_period_s, duration_s + 1e-9, sync_period_s)
    i_arr, i_tick = 0, 0
    while True:
        t_arr = arrivals[i_arr] if i_arr < arrivals.size else math.inf
        t_fin = busy_until[0][0] if busy_until else math.inf
        t_rdy = pending[0][0] if pending else math.inf
        t_tick = ticks_at[i_tick] if i_tick < ticks_at.size else math.inf
        t = min(t_arr, t_fin, t_rdy, t_tick)
        if t == math.inf or (t > duration_s and not busy_until and not queue):
            break
        advance(max(t, now))
        if t == t_fin:
            _, rid = heapq.heappop(busy_until)
            finish[running.pop(rid)] = t
            free(rid, t)
        elif t == t_rdy:
            _, rid = heapq.heappop(pending)
            free(rid, t)
        elif t == t_arr:
            if idle:
                start(idle.pop(), i_arr, t)
            else:
                queue.append(i_arr)
            i_arr += 1
        else:  # control loop tick
            i_tick += 1
            t0, b0, r0 = last_tick
            last_tick = (t, busy_area, ready_area)
            ready = ready_count()
            current = ready + len(pending) - len(retiring)
            if policy == "cpu":
                util = (busy_area - b0) / (ready_area - r0) if ready_area > r0 else 0.0
                metric = _cpu_metric(util, cpu_idle, cpu_busy)
                total = ready * metric             # starting Pods report no CPU yet
            else:
                total = len(queue) + len(running)
                metric = total / max(current, 1)
            ratio = total / (target * max(current, 1))
            desired = current if abs(ratio - 1) <= tolerance else math.ceil(total / target)
            history.append((t, desired))
            history = [(h, d) for h, d in history if h > t - scale_down_stabilization_s]
            if desired < current:
                desired = max(d for _, d in history)
            desired = min(desired, current + max(current, 4))   # default scale-up policy
            desired = min(max(desired, min_replicas), max_replicas)
            if desired > current:
                launch(desired - current, t)
            for _ in range(max(0, current - desired)):
                if pending:                          # cancel the latest replica still starting
                    latest = max(range(len(pending)), key=lambda k: pending[k][0])
                    _, rid = pending.pop(latest)
                    heapq.heapify(pending)
                    retire(rid, t)
                elif idle:
                    retire(idle.pop(), t)
                else:
                    candidates = [r for r in running if r not in retiring]
                    if candidates:
                        retiring.add(candidates[0])
            ticks.append(t)
            ready_log.append(ready)
            wanted_log.append(desired)
            queue_log.append(len(queue))
            metric_log.append(metric)
    end = max(now, duration_s)
    for rid in list(launched_at):
        retire(rid, end)
    latencies = finish - arrivals
    return AutoscaleResult(policy, arrivals, latencies, np.asarray(ticks), np.asarray(ready_log),
                           np.asarray(wanted_log), np.asarray(queue_log),
                           np.asarray(metric_log), replica_seconds)
