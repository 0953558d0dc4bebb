"""Repeated measurements, timing with warm-up and repeats, and throughput helpers.

Every measurement in the course goes through :func:`timeit` so that it is taken the same way
everywhere: a few warm-up calls that are thrown away (first calls pay for allocation, caches and
lazy initialisation), then ``repeats`` timed calls summarised by their median, min and max.
On a shared 2-core machine single timings vary by tens of percent; the median of a few is the
number to read, min and max show the spread.

:class:`Samples` is the one type for repeated measurements of a quantity (times, MB/s, IOPS,
ratios); :func:`percentile` is the one percentile function (linear interpolation, as NumPy's
default).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, interpolated linearly between ranks.

    NumPy's default definition (``numpy.percentile``); NaN for an empty sample. Takes any
    iterable of numbers, NumPy arrays included (the queueing simulations pass 10**5 latencies).

    Example:
        >>> percentile([1, 2, 3, 4], 50)
        2.5
    """
    import numpy as np

    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q must be between 0 and 100, got {q}")
    xs = np.asarray(values if hasattr(values, "__len__") else list(values), dtype=float).ravel()
    return float(np.percentile(xs, q)) if xs.size else math.nan


def _fmt(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


@dataclass(frozen=True)
class Samples:
    """Repeated measurements of one quantity: ``values`` plus median, min, max and percentiles.

    Attributes:
        values: every measurement, in the order taken.
        unit: a label such as ``"s"``, ``"MB/s"``, ``"IOPS"`` or ``"x"`` (a ratio). Samples in
            seconds (what :func:`timeit` returns) print with a time unit and also offer
            ``median_s``/``min_s``/``max_s``/``median_ms``.
        name: what was measured (used when printing).
        result: for a timing, the return value of the last call (handy to check what was computed).

    An empty sample has NaN statistics.

    Example:
        >>> s = Samples([3.0, 1.0, 2.0], "MB/s")
        >>> s.median, s.min, s.max, s.percentile(50)
        (2.0, 1.0, 3.0, 2.0)
    """

    values: tuple[float, ...]
    unit: str = ""
    name: str = ""
    result: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))

    @property
    def median(self) -> float:
        """Median of the values (NaN if there are none)."""
        return statistics.median(self.values) if self.values else math.nan

    @property
    def min(self) -> float:
        """Smallest value (NaN if there are none)."""
        return min(self.values) if self.values else math.nan

    @property
    def max(self) -> float:
        """Largest value (NaN if there are none)."""
        return max(self.values) if self.values else math.nan

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of the values, see :func:`percentile`."""
        return percentile(self.values, q)

    # ---- views for samples of seconds (timings)
    @property
    def times_s(self) -> tuple[float, ...]:
        """The values, read as seconds (for timings)."""
        return self.values

    #: The median, min and max again, read as seconds (``timeit`` returns seconds).
    median_s = median
    min_s = min
    max_s = max

    @property
    def median_ms(self) -> float:
        """Median time per call, in milliseconds."""
        return self.median * 1e3

    def rate(self, work: float) -> "Rate":
        """Throughput of ``work`` units per call (bytes, FLOPs, tokens...), from these times."""
        return throughput(work, self)

    def as_dict(self) -> dict:
        """Median, min, max, the values and the unit, as plain types (for JSON)."""
        return {"median": self.median, "min": self.min, "max": self.max,
                "values": list(self.values), "unit": self.unit}

    def __str__(self) -> str:
        prefix = f"{self.name}: " if self.name else ""
        if not self.values:
            return f"{prefix}n/a {self.unit}".strip()
        if self.unit == "s":
            return (f"{prefix}median {format_seconds(self.median)} "
                    f"(min {format_seconds(self.min)}, max {format_seconds(self.max)}, "
                    f"n={len(self.values)})")
        return (f"{prefix}{_fmt(self.median)} {self.unit} (min {_fmt(self.min)}, "
                f"max {_fmt(self.max)}, n={len(self.values)})")


def timing(name: str, times_s: Iterable[float], result: Any = None) -> Samples:
    """:class:`Samples` of call times in seconds, named ``name`` (what :func:`timeit` returns).

    Example:
        >>> timing("copy", [0.5, 1.0, 2.0]).median_s
        1.0
    """
    return Samples(tuple(times_s), "s", name, result)


@dataclass(frozen=True)
class Rate:
    """Throughput in units per second derived from timing :class:`Samples`.

    ``median`` comes from the median time; ``best`` from the fastest call and ``worst`` from the
    slowest, so ``worst <= median <= best``.
    """

    median: float
    best: float
    worst: float

    def scaled(self, factor: float) -> "Rate":
        """The same rate in other units, e.g. ``scaled(1e-9)`` turns bytes/s into GB/s."""
        return Rate(self.median * factor, self.best * factor, self.worst * factor)

    def __str__(self) -> str:
        return f"{self.median:.4g}/s (range {self.worst:.4g} to {self.best:.4g})"


def timeit(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, name: str | None = None,
           sync: Callable[[], None] | None = None) -> Samples:
    """Time ``fn()`` after ``warmup`` untimed calls, ``repeats`` times.

    Args:
        fn: a function without arguments (wrap yours in a ``lambda``).
        repeats: timed calls, at least 1.
        warmup: untimed calls first, at least 0.
        name: label for printing; defaults to the function's name.
        sync: called after each call before the clock stops, e.g. ``torch.cuda.synchronize``
            so that asynchronous GPU work is counted.

    Returns:
        :class:`Samples` in seconds with every timed call and the last result.

    Example:
        >>> t = timeit(lambda: sum(range(1000)), repeats=3)
        >>> len(t.times_s)
        3
    """
    if not callable(fn):
        raise ValueError("timeit: fn must be callable without arguments, e.g. timeit(lambda: f(x))")
    if int(repeats) < 1:
        raise ValueError(f"timeit: repeats must be >= 1, got {repeats}")
    if int(warmup) < 0:
        raise ValueError(f"timeit: warmup must be >= 0, got {warmup}")
    result = None
    for _ in range(int(warmup)):
        result = fn()
        if sync is not None:
            sync()
    times = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        result = fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return timing(name or getattr(fn, "__name__", "call"), times, result)


def throughput(work: float, timing: Samples) -> Rate:
    """Units of ``work`` per second for one call of ``timing`` (median, best and worst).

    Example:
        >>> t = Samples((0.5, 1.0, 2.0), "s", "copy")
        >>> throughput(1e9, t).median   # 1 GB in a median of 1 s
        1000000000.0
    """
    if work < 0:
        raise ValueError(f"throughput: work must be >= 0, got {work}")
    if not timing.min_s > 0:
        raise ValueError("throughput: a call took no measurable time; give it more work per call")
    return Rate(work / timing.median_s, work / timing.min_s, work / timing.max_s)


def format_seconds(seconds: float) -> str:
    """A duration with a sensible unit: ``0.0000123`` -> ``'12.3 µs'``."""
    if seconds < 0:
        raise ValueError(f"format_seconds: a duration cannot be negative, got {seconds}")
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(n_bytes: float, *, binary: bool = False) -> str:
    """Bytes in decimal (kB, MB, GB: powers of 1000) or binary (KiB, MiB, GiB) units.

    Example:
        >>> format_bytes(14e9)
        '14 GB'
        >>> format_bytes(2**30, binary=True)
        '1 GiB'
    """
    if n_bytes < 0:
        raise ValueError(f"format_bytes: a size cannot be negative, got {n_bytes}")
    base, units = (1024.0, ("B", "KiB", "MiB", "GiB", "TiB", "PiB")) if binary else \
        (1000.0, ("B", "kB", "MB", "GB", "TB", "PB"))
    value = float(n_bytes)
    for unit in units:
        if value < base or unit == units[-1]:
            return f"{value:.3g} {unit}"
        value /= base
    raise AssertionError("unreachable")


def fit_power_law(x, y) -> tuple[float, float]:
    """Fit ``y = c * x**k`` by least squares on log-log axes; returns ``(k, c)``.

    ``k`` is the scaling exponent: 1 for linear growth, 2 for quadratic. Exponential growth
    has no fixed ``k`` (it keeps rising with ``x``), which is how a log-log plot tells them apart.

    Example:
        >>> k, c = fit_power_law([1, 2, 4, 8], [3, 12, 48, 192])
        >>> round(k, 6), round(c, 6)
        (2.0, 3.0)
    """
    import numpy as np

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.size < 2:
        raise ValueError("fit_power_law needs two sequences of the same length, at least 2 points")
    if (xs <= 0).any() or (ys <= 0).any():
        raise ValueError("fit_power_law needs positive values (it works on logarithms)")
    k, log_c = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(k), float(np.exp(log_c))
