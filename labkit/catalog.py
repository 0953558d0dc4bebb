"""Deprecated: moved to :mod:`labkit.planning.catalog` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.catalog",
           "labkit.planning.catalog")

from labkit.planning.catalog import accelerator  # noqa: E402,F401
from labkit.planning.catalog import ACCELERATOR_KEYS  # noqa: E402,F401
from labkit.planning.catalog import accelerators  # noqa: E402,F401
from labkit.planning.catalog import gpu_memory_gb  # noqa: E402,F401
from labkit.planning.catalog import instance  # noqa: E402,F401
from labkit.planning.catalog import INSTANCE_KEYS  # noqa: E402,F401
from labkit.planning.catalog import instances  # noqa: E402,F401
from labkit.planning.catalog import metadata  # noqa: E402,F401
from labkit.planning.catalog import NO_BF16  # noqa: E402,F401
from labkit.planning.catalog import runs_natively  # noqa: E402,F401
