"""Deprecated: moved to :mod:`labkit.storage.patterns` (issue 18); this shim goes in the next
release."""

import warnings

from labkit.storage.measures import MiB, Throughput  # noqa: F401
from labkit.storage.pagecache import aligned_buffer  # noqa: F401
from labkit.storage.patterns import (BackgroundUploader, LatencyServer, ranged_get,  # noqa: F401
                                     simulate_training, throttled_copy)

warnings.warn("labkit.storage_patterns is deprecated; import from labkit.storage.patterns "
              "(issue 18)", DeprecationWarning, stacklevel=2)
