"""Gang (all-or-nothing) admission against Pod-by-Pod scheduling: a small discrete-event simulation.

A distributed training job needs all of its accelerators at once: with 7 of its 8 Pods running
it does no work, yet those 7 Pods hold their accelerators. :func:`simulate` replays a small
shared cluster under two admission rules and reports what that costs.

The model, and every assumption in it (the numbers are **simulated**, not measured):

- **Cluster.** ``cluster_gpus`` accelerators in one pool. Node boundaries are ignored, which is
  exact for 1-accelerator Pods, and for 4-accelerator Pods on 4-accelerator nodes.
- **Demand.** ``teams`` teams; each keeps one job in the system and submits its next job the
  moment the previous one finishes (a sweep, a pipeline). A job needs ``job_gpus`` accelerators
  as ``job_gpus / pod_gpus`` Pods, and runs for its duration once *all* its Pods run. Durations
  are ``job_hours`` x uniform(0.8, 1.2), drawn per team and job from ``seed`` (the same in
  both modes).
- **Without gang admission** (the default kube-scheduler, no queue controller): every Pod of
  a submitted job is pending at once, and each accelerator that is free goes to one pending
  Pod. Which job's Pod gets it is *assumed* arbitrary (a seeded random choice among the
  pending Pods): kube-scheduler orders its queue by priority and enqueue time, not by job, and
  unschedulable Pods come back from back-off interleaved. A job holding some but not all
  of its Pods waits, holding its accelerators idle. A job-level timeout releases them: a job
  whose Pods are not all running ``timeout_h`` after its first Pod started fails, its Pods are
  deleted and it is resubmitted after ``backoff_h`` x uniform(0.5, 1.5) (torchrun's rendezvous
  timeout, a Job's ``activeDeadlineSeconds`` and a controller's retry play this part).
- **With gang admission** (Kueue with quota = the cluster): a job waits in a FIFO queue
  holding nothing, and is admitted, all its Pods at once, when ``job_gpus`` accelerators are
  free.

Deterministic for a given ``seed``; pure Python plus NumPy's generator; a day of a 12-accelerator
cluster takes milliseconds. Times are in hours.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GangResult:
    """What one simulated run did (all **simulated**; times in hours)."""

    gang: bool
    cluster_gpus: int
    hours: float
    finished: int                    # jobs that completed within ``hours``
    timeouts: int                    # partial jobs released by the timeout
    idle_held_gpu_hours: float       # accelerators held by Pods of jobs not yet running
    running_gpu_hours: float         # accelerators doing work
    timeline: np.ndarray             # rows (time h, running accelerators, held idle accelerators)

    @property
    def jobs_per_hour(self) -> float:
        """Jobs finished per hour of simulated time."""
        return self.finished / self.hours

    @property
    def free_gpu_hours(self) -> float:
        """Accelerator-hours neither running nor held, free for other work."""
        return self.cluster_gpus * self.hours - self.running_gpu_hours - self.idle_held_gpu_hours

    def at(self, t: float) -> tuple[int, int]:
        """(running, held idle) accelerators at time ``t`` hours (the step function of the timeline)."""
        i = int(np.searchsorted(self.timeline[:, 0], t, side="right")) - 1
        return int(self.timeline[max(i, 0), 1]), int(self.timeline[max(i, 0), 2])


def _check(cluster_gpus, job_gpus, pod_gpus, teams, hours, job_hours, timeout_h, backoff_h):
    for name, value in (("cluster_gpus", cluster_gpus), ("job_gpus", job_gpus),
                        ("pod_gpus", pod_gpus), ("teams", teams)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    if job_gpus % pod_gpus:
        raise ValueError(f"job_gpus ({job_gpus}) must be a multiple of pod_gpus ({pod_gpus}): "
                         "a job is made of whole Pods")
    if job_gpus > cluster_gpus:
        raise ValueError(f"a job of {job_gpus} accelerators never fits a cluster of "
                         f"{cluster_gpus}: give job_gpus <= cluster_gpus")
    for name, value in (("hours", hours), ("job_hours", job_hours), ("timeout_h", timeout_h)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 hours, got {value!r}")
    if backoff_h < 0:
        raise ValueError(f"backoff_h must be >= 0 hours, got {backoff_h!r}")


def job_durations(teams: int, jobs_per_team: int, job_hours: float, seed=0) -> np.ndarray:
    """Run time (h) of each team's k-th job: ``job_hours`` x uniform(0.8, 1.2), shape (teams, jobs)."""
    return job_hours * np.random.default_rng(seed).uniform(0.8, 1.2, (teams, jobs_per_team))


def simulate(cluster_gpus: int = 12, job_gpus: int = 8, pod_gpus: int = 1, *, gang: bool,
             teams: int = 2, hours: float = 24.0, job_hours: float = 1.0,
             timeout_h: float = 0.25, backoff_h: float = 0.1, seed=0) -> GangResult:
    """Simulate ``hours`` of a shared cluster with (``gang=True``) or without gang admission.

    See the module docstring for the model and its assumptions. Raises ValueError for sizes
    that cannot work (a job larger than the cluster, a job that is not whole Pods).
    """
    _check(cluster_gpus, job_gpus, pod_gpus, teams, hours, job_hours, timeout_h, backoff_h)
    durations = job_durations(teams, int(hours / (0.8 * job_hours)) + 2, job_hours, seed)
    rng = np.random.default_rng([seed, 1])       # which pending Pod gets a free accelerator
    free, held, running, now = cluster_gpus, 0, 0, 0.0
    idle_h = busy_h = 0.0
    finished = timeouts = 0
    jobs: list[dict] = []
    pending: list[int] = []                      # job ids: one entry per pending Pod (or job)
    events: list[tuple] = []                     # heap of (time, seq, kind, job, attempt)
    seq = itertools.count()
    timeline = [(0.0, 0, 0)]

    def submit(team: int, k: int, t: float) -> None:
        jobs.append({"team": team, "k": k, "placed": 0, "run": False, "attempt": 0})
        pending.extend([len(jobs) - 1] * (1 if gang else job_gpus // pod_gpus))

    def place(t: float) -> None:                 # the scheduler: hand out free accelerators
        nonlocal free, held, running
        while pending and free >= (job_gpus if gang else pod_gpus):
            j = pending.pop(0) if gang else pending.pop(int(rng.integers(len(pending))))
            job, take = jobs[j], (job_gpus if gang else pod_gpus)
            free, job["placed"], held = free - take, job["placed"] + take, held + take
            if job["placed"] == take and not gang:       # first Pod: the job's clock starts
                heapq.heappush(events, (t + timeout_h, next(seq), "timeout", j, job["attempt"]))
            if job["placed"] == job_gpus:                # all Pods running: work starts
                job["run"], held, running = True, held - job_gpus, running + job_gpus
                end = t + durations[job["team"], job["k"]]
                heapq.heappush(events, (end, next(seq), "finish", j, 0))

    for team in range(teams):
        submit(team, 0, 0.0)
    place(0.0)
    timeline.append((0.0, running, held))
    while events and events[0][0] <= hours:
        t, _, kind, j, attempt = heapq.heappop(events)
        idle_h, busy_h, now = idle_h + held * (t - now), busy_h + running * (t - now), t
        job = jobs[j]
        if kind == "finish":                     # free the accelerators, submit the next job
            free, running, finished = free + job_gpus, running - job_gpus, finished + 1
            submit(job["team"], job["k"] + 1, t)
        elif kind == "timeout" and not job["run"] and attempt == job["attempt"]:
            free, held, timeouts = free + job["placed"], held - job["placed"], timeouts + 1
            job["placed"], job["attempt"] = 0, job["attempt"] + 1
            pending[:] = [p for p in pending if p != j]  # its Pods are deleted
            retry = t + backoff_h * rng.uniform(0.5, 1.5)
            heapq.heappush(events, (retry, next(seq), "resubmit", j, 0))
        elif kind == "resubmit":
            pending.extend([j] * (job_gpus // pod_gpus))
        place(t)
        timeline.append((t, running, held))
    idle_h, busy_h = idle_h + held * (hours - now), busy_h + running * (hours - now)
    timeline.append((hours, running, held))
    return GangResult(gang, cluster_gpus, hours, finished, timeouts, idle_h, busy_h,
                      np.asarray(timeline, dtype=float))


def compare(cluster_gpus: int = 12, job_gpus: int = 8, pod_gpus: int = 1, **kwargs
            ) -> dict[str, GangResult]:
    """The same cluster and jobs without and with gang admission: ``{"pod by pod": ..., "gang": ...}``."""
    return {"pod by pod": simulate(cluster_gpus, job_gpus, pod_gpus, gang=False, **kwargs),
            "gang": simulate(cluster_gpus, job_gpus, pod_gpus, gang=True, **kwargs)}
