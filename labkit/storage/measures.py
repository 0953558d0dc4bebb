"""Units and result types of every storage measurement.

* ``KiB``/``MiB``/``GiB`` are powers of two (sizes); ``MBps`` is 10**6 bytes per second (what
  disk vendors and AWS quote); latencies are in microseconds (µs).
* :class:`Throughput`: one timed transfer (bytes, seconds, operations).
* :class:`Stats`: repeated measurements of one quantity (median, min, max).

Imports nothing of labkit.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass
class Stats:
    """Repeated measurements of one quantity: ``values`` plus median, min and max.

    ``unit`` is a label such as ``"MB/s"``, ``"IOPS"`` or ``"x"`` (a ratio).
    """

    values: list[float]
    unit: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def min(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def max(self) -> float:
        return max(self.values) if self.values else math.nan

    def __str__(self) -> str:
        if not self.values:
            return f"n/a {self.unit}".strip()
        return (f"{_fmt(self.median)} {self.unit} (min {_fmt(self.min)}, max {_fmt(self.max)}, "
                f"n={len(self.values)})")

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.min, "max": self.max,
                "values": list(self.values), "unit": self.unit}


def _fmt(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def positive_seconds(seconds: float, label: str = "") -> float:
    """``seconds`` if it is a measurable time; ValueError otherwise (as ``bench.throughput``):
    a rate over 0 s would be infinite and slip silently into medians and ratios."""
    if not seconds > 0:
        raise ValueError(f"{label or 'transfer'}: took no measurable time ({seconds} s); "
                         f"give it more work per timing")
    return seconds


@dataclass
class Throughput:
    """One timed transfer: ``nbytes`` moved in ``seconds``; ``MBps`` = 10**6 bytes/s."""

    nbytes: int
    seconds: float
    ops: int = 0
    label: str = ""

    @property
    def MBps(self) -> float:
        return self.nbytes / positive_seconds(self.seconds, self.label) / 1e6

    @property
    def ops_per_s(self) -> float:
        return self.ops / positive_seconds(self.seconds, self.label)

    def __str__(self) -> str:
        return (f"{self.label or 'transfer'}: {self.nbytes / 1e6:.1f} MB in "
                f"{self.seconds:.3f} s = {self.MBps:,.0f} MB/s")
