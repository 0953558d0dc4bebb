"""Deprecated: moved to :mod:`labkit.planning.decide` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.decide",
           "labkit.planning.decide")

from labkit.planning.decide import candidates  # noqa: E402,F401
from labkit.planning.decide import NO_BF16  # noqa: E402,F401
from labkit.planning.decide import PATTERNS  # noqa: E402,F401
from labkit.planning.decide import recommend  # noqa: E402,F401
from labkit.planning.decide import Recommendation  # noqa: E402,F401
from labkit.planning.decide import size_band  # noqa: E402,F401
from labkit.planning.decide import supports  # noqa: E402,F401
from labkit.planning.decide import WORKLOADS  # noqa: E402,F401
