"""Deprecated: split into :mod:`labkit.machine.facts`, :mod:`labkit.machine.probes` and
:mod:`labkit.machine.tools` (issue 18); kept for one release.

Old probe names: ``measure_memory_bandwidth`` is :func:`labkit.machine.probes.stream_copy_GBps`,
``measure_matmul_flops`` is :func:`labkit.machine.probes.matmul_flops`.
"""

from labkit.deprecated import warn_moved

warn_moved("labkit.hardware", "labkit.machine.facts, labkit.machine.probes, labkit.machine.tools")

from labkit.machine.facts import (cache_sizes, describe_machine,  # noqa: E402,F401
                                  last_level_cache_bytes, machine_facts, pick_device,
                                  torch_threads, usable_cores)
from labkit.machine.probes import LLC_MULTIPLE, probe_size_mib  # noqa: E402,F401
from labkit.machine.probes import matmul_flops as measure_matmul_flops  # noqa: E402,F401
from labkit.machine.probes import stream_copy_GBps as measure_memory_bandwidth  # noqa: E402,F401
from labkit.machine.tools import python_ok, tool_path  # noqa: E402,F401
