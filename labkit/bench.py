"""Deprecated: moved to :mod:`labkit.machine.timing` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.bench", "labkit.machine.timing")

from labkit.machine.timing import (Rate, Samples, fit_power_law, format_bytes,  # noqa: E402,F401
                                   format_seconds, percentile, throughput, timeit)
from labkit.machine.timing import timing as Timing  # noqa: E402,F401  (Timing(name, times_s))
