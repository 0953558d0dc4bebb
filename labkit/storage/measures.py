"""Units and result types of every storage measurement.

* ``KiB``/``MiB``/``GiB`` are powers of two (sizes); ``MBps`` is 10**6 bytes per second (what
  disk vendors and AWS quote); latencies are in microseconds (µs).
* :class:`Throughput`: one timed transfer (bytes, seconds, operations).
* Repeated measurements of one quantity (MB/s, IOPS, ratios) are
  :class:`labkit.machine.timing.Samples` (median, min, max, percentiles).

Imports nothing of labkit (the storage modules take ``Samples`` from
:mod:`labkit.machine.timing`).
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def positive_seconds(seconds: float, label: str = "") -> float:
    """``seconds`` if it is a measurable time; ValueError otherwise (as
    :func:`labkit.machine.timing.throughput`): a rate over 0 s would be infinite and slip
    silently into medians and ratios."""
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
