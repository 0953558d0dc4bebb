"""Deprecated: moved to :mod:`labkit.storage.patterns` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.storage_patterns", "labkit.storage.patterns")

from labkit.storage.measures import MiB, Throughput  # noqa: E402,F401
from labkit.storage.pagecache import aligned_buffer  # noqa: E402,F401
from labkit.storage.patterns import (BackgroundUploader, LatencyServer,  # noqa: E402,F401
                                     ranged_get, simulate_training, throttled_copy)
