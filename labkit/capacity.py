"""Deprecated: moved to :mod:`labkit.planning.capacity` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.capacity",
           "labkit.planning.capacity")

from labkit.planning.capacity import decode_roofline  # noqa: E402,F401
from labkit.planning.capacity import device_budget_bytes  # noqa: E402,F401
from labkit.planning.capacity import device_memory_bytes  # noqa: E402,F401
from labkit.planning.capacity import memory_breakdown  # noqa: E402,F401
from labkit.planning.capacity import MEMORY_UTILIZATION  # noqa: E402,F401
from labkit.planning.capacity import MemoryBreakdown  # noqa: E402,F401
from labkit.planning.capacity import Model  # noqa: E402,F401
from labkit.planning.capacity import model  # noqa: E402,F401
from labkit.planning.capacity import MODELS  # noqa: E402,F401
from labkit.planning.capacity import on_demand_price  # noqa: E402,F401
from labkit.planning.capacity import Option  # noqa: E402,F401
from labkit.planning.capacity import options  # noqa: E402,F401
from labkit.planning.capacity import Plan  # noqa: E402,F401
from labkit.planning.capacity import plan  # noqa: E402,F401
from labkit.planning.capacity import priced_instances  # noqa: E402,F401
from labkit.planning.capacity import replicas_needed  # noqa: E402,F401
from labkit.planning.capacity import smallest_tensor_parallel  # noqa: E402,F401
from labkit.planning.capacity import TP_DEGREES  # noqa: E402,F401
