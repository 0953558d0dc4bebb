"""Deprecated: moved to :mod:`labkit.planning.queueing` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.queueing",
           "labkit.planning.queueing")

from labkit.planning.queueing import AutoscaleResult  # noqa: E402,F401
from labkit.planning.queueing import COLD_START_CITED  # noqa: E402,F401
from labkit.planning.queueing import cold_start_new_node  # noqa: E402,F401
from labkit.planning.queueing import ColdStart  # noqa: E402,F401
from labkit.planning.queueing import erlang_c_wait_probability  # noqa: E402,F401
from labkit.planning.queueing import HPA_DEFAULTS  # noqa: E402,F401
from labkit.planning.queueing import NODE_LAUNCH_ASSUMED  # noqa: E402,F401
from labkit.planning.queueing import nonhomogeneous_arrivals  # noqa: E402,F401
from labkit.planning.queueing import poisson_arrivals  # noqa: E402,F401
from labkit.planning.queueing import QueueResult  # noqa: E402,F401
from labkit.planning.queueing import simulate_autoscaling  # noqa: E402,F401
from labkit.planning.queueing import simulate_queue  # noqa: E402,F401
from labkit.planning.queueing import step_traffic  # noqa: E402,F401
