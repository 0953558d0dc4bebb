"""Sharing one GPU between workloads: MIG slices, time-slicing and MPS, as arithmetic.

Three NVIDIA mechanisms put several Pods on one GPU (chapter 08):

- **MIG** cuts an A100, H100 or H200 into up to 7 hardware instances, each with its own memory
  and compute slices (:data:`MIG_PROFILES`). A tenant that outgrows its slice fails alone.
- **time-slicing** gives every tenant the whole GPU in turns. Memory is one shared pool: the
  allocation that finds it full fails, whoever made it.
- **MPS** runs the tenants' kernels at the same time and can cap each client's device memory
  (``defaultPinnedDeviceMemoryLimit``): a tenant over its cap fails, but a crash of the MPS
  server or a fatal GPU fault still hits every client.

:func:`copies_per_gpu` counts how many replicas of one model fit under each scheme, and
:func:`simulate_allocations` replays a sequence of memory allocations to show *who* runs out of
memory. :func:`busy_vs_sm_active` turns a kernel timeline into the two utilisation counters a
DCGM exporter reports, to show why "GPU utilization" says little about how busy a GPU is. All
pure arithmetic: the memory figures come from :mod:`labkit.planning.capacity`, the profiles from
NVIDIA.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, NamedTuple

__all__ = ["MigProfile", "MIG_PROFILES", "MIG_SOURCE", "SCHEMES", "mig_profiles",
           "smallest_mig_profile", "copies_per_gpu", "simulate_allocations", "busy_vs_sm_active"]

#: Where :data:`MIG_PROFILES` comes from (checked 2026-12-05).
MIG_SOURCE = ("NVIDIA GPU Operator v26.7.0 (commit 10ee5b3638b89e11e949412aafa5ba99279c3721), "
              "assets/state-mig-manager/0400_configmap.yaml, the mig-manager's default "
              "'all-<profile>' layouts per GPU; the NVIDIA MIG user guide 'Supported MIG Profiles' "
              "(docs.nvidia.com/datacenter/tesla/mig-user-guide/supported-mig-profiles.html) "
              "gives the same profiles with their memory and SM fractions")


class MigProfile(NamedTuple):
    """One MIG profile of a GPU model: ``name`` as the device plugin advertises it
    (``nvidia.com/mig-<name>``), compute in sevenths of the GPU's SMs, memory in eighths of its
    memory, and how many instances of this profile alone fit on one GPU."""

    name: str
    compute_sevenths: int
    memory_eighths: int
    max_instances: int

    @property
    def memory_gb(self) -> float:
        """The memory in the profile's name (GB, rounded by NVIDIA; slightly less is usable)."""
        return float(re.search(r"\.(\d+)gb", self.name).group(1))

    @property
    def resource(self) -> str:
        """The extended resource the device plugin's "mixed" strategy advertises for it."""
        return f"nvidia.com/mig-{self.name}"


_A100_80 = (MigProfile("1g.10gb", 1, 1, 7), MigProfile("1g.20gb", 1, 2, 4),
            MigProfile("2g.20gb", 2, 2, 3), MigProfile("3g.40gb", 3, 4, 2),
            MigProfile("4g.40gb", 4, 4, 1), MigProfile("7g.80gb", 7, 8, 1))

#: MIG profiles (without media extensions) per GPU model in the course catalog (see MIG_SOURCE).
MIG_PROFILES: dict[str, tuple[MigProfile, ...]] = {
    "A100-40GB": (MigProfile("1g.5gb", 1, 1, 7), MigProfile("1g.10gb", 1, 2, 4),
                  MigProfile("2g.10gb", 2, 2, 3), MigProfile("3g.20gb", 3, 4, 2),
                  MigProfile("4g.20gb", 4, 4, 1), MigProfile("7g.40gb", 7, 8, 1)),
    "A100-80GB": _A100_80,
    "H100": _A100_80,                       # H100 80GB: the same names as the A100 80GB
    "H200": (MigProfile("1g.18gb", 1, 1, 7), MigProfile("1g.35gb", 1, 2, 4),
             MigProfile("2g.35gb", 2, 2, 3), MigProfile("3g.71gb", 3, 4, 2),
             MigProfile("4g.71gb", 4, 4, 1), MigProfile("7g.141gb", 7, 8, 1)),
}

#: The sharing schemes :func:`copies_per_gpu` and :func:`simulate_allocations` know.
SCHEMES = ("mig", "time-slicing", "mps")


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown sharing scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    return scheme


def mig_profiles(gpu: str) -> tuple[MigProfile, ...]:
    """The MIG profiles of ``gpu`` (a catalog name such as ``"H100"``), smallest first."""
    if gpu not in MIG_PROFILES:
        raise ValueError(f"no MIG profiles for {gpu!r}: MIG runs on {', '.join(MIG_PROFILES)} "
                         "here (T4, A10G, L4 and L40S have no MIG; share those by time-slicing)")
    return MIG_PROFILES[gpu]


def smallest_mig_profile(need_gb: float, gpu: str) -> MigProfile | None:
    """The MIG profile of ``gpu`` with the least memory that still holds ``need_gb`` (ties: the
    one with fewer SMs, which leaves more instances), or None if not even the whole GPU does."""
    need = _positive(need_gb, "need_gb")
    fitting = [p for p in mig_profiles(gpu) if p.memory_gb >= need]
    return min(fitting, key=lambda p: (p.memory_gb, p.compute_sevenths)) if fitting else None


def copies_per_gpu(need_gb: float, gpu: str, gpu_memory_gb: float, scheme: str) -> int:
    """How many replicas that each need ``need_gb`` fit on one GPU under ``scheme``.

    - ``"mig"``: instances of the smallest profile that holds one replica (0 if none does);
      each replica then owns its memory.
    - ``"time-slicing"`` and ``"mps"``: ``floor(gpu_memory_gb / need_gb)`` replicas share the
      memory. With time-slicing nothing enforces the split; with MPS a per-client limit of
      ``gpu_memory_gb / copies`` can.
    """
    need = _positive(need_gb, "need_gb")
    total = _positive(gpu_memory_gb, "gpu_memory_gb")
    if _scheme(scheme) == "mig":
        profile = smallest_mig_profile(need, gpu)
        return profile.max_instances if profile else 0
    return math.floor(total / need)


def simulate_allocations(events: Iterable[tuple[str, float]], capacity_gb: float, scheme: str,
                         limit_gb: float | None = None) -> list[dict]:
    """Replay device-memory allocations ``(tenant, GB)`` in order; say which ones fail.

    - ``"time-slicing"``: one pool of ``capacity_gb``; an allocation fails when the pool is
      full, whichever tenant filled it.
    - ``"mps"``: the same pool, plus a per-client cap of ``limit_gb`` (MPS's pinned device
      memory limit): an allocation over the tenant's own cap fails.
    - ``"mig"``: each tenant owns a slice of ``limit_gb``; only its own allocations count.

    Returns one dict per event: ``tenant``, ``gb``, ``ok`` and ``used_gb`` (the tenant's total
    after it). A failed allocation is what a CUDA program sees as out of memory. Simulated, not
    measured: real allocators reserve in blocks and add a CUDA context per process.
    """
    total = _positive(capacity_gb, "capacity_gb")
    _scheme(scheme)
    limit = math.inf
    if scheme in ("mps", "mig"):
        limit = _positive(limit_gb, f"limit_gb (each tenant's {'slice' if scheme == 'mig' else 'cap'})")
    used: dict[str, float] = {}
    out = []
    for tenant, gb in events:
        gb = _positive(gb, f"allocation of {tenant!r}")
        mine = used.get(tenant, 0.0) + gb
        pool_full = sum(used.values()) + gb > total + 1e-9
        ok = {"time-slicing": not pool_full,
              "mps": not pool_full and mine <= limit + 1e-9,
              "mig": mine <= limit + 1e-9}[scheme]
        if ok:
            used[tenant] = mine
        out.append({"tenant": tenant, "gb": gb, "ok": ok, "used_gb": used.get(tenant, 0.0)})
    return out


def busy_vs_sm_active(kernels: Iterable[tuple[float, float, int]], n_sms: int,
                      window_s: float) -> dict[str, float]:
    """The two utilisation counters of a kernel timeline over ``window_s`` seconds.

    ``kernels`` are ``(start_s, duration_s, sms_used)``. Returns
    ``gpu_util``: the fraction of the window in which at least one kernel ran (what NVML and
    DCGM's ``DCGM_FI_DEV_GPU_UTIL`` report), and ``sm_active``: the time-average of the
    fraction of SMs with work (what ``DCGM_FI_PROF_SM_ACTIVE`` reports). Overlapping kernels
    add their SMs up to ``n_sms``. Simulated: the real counters are sampled by the driver.
    """
    window = _positive(window_s, "window_s")
    sms_total = int(_positive(n_sms, "n_sms"))
    edges = []
    for start, duration, sms in kernels:
        if start < 0 or duration < 0 or sms < 0:
            raise ValueError(f"a kernel needs start, duration and SMs >= 0, got {(start, duration, sms)}")
        lo, hi = min(start, window), min(start + duration, window)
        if hi > lo:
            edges += [(lo, sms), (hi, -sms)]
    edges.sort()
    busy = sm_seconds = 0.0
    running, last = 0, 0.0
    for t, delta in edges:
        if running > 0:
            busy += t - last
            sm_seconds += (t - last) * min(running, sms_total)
        running, last = running + delta, t
    return {"gpu_util": busy / window, "sm_active": sm_seconds / (sms_total * window)}
