"""Deprecated: the load generator moved to :mod:`labkit.serving.loadgen`.

``from labkit import loadgen`` keeps working for one release, with a DeprecationWarning.
"""

import warnings

from labkit.serving.loadgen import *  # noqa: F401,F403
from labkit.serving.loadgen import (MAX_REQUESTS, NETWORK_ERRORS, FloodResult,  # noqa: F401
                                    LoadResult, _bodies, _one, _run, closed_loop, flood,
                                    median, open_loop, percentile, summary)

warnings.warn("labkit.loadgen moved to labkit.serving.loadgen; this alias goes away in the "
              "next release", DeprecationWarning, stacklevel=2)
