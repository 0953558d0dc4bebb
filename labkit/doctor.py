"""Deprecated: moved to :mod:`labkit.machine.doctor` (issue 18); kept for one release."""

from labkit.deprecated import warn_moved

warn_moved("labkit.doctor", "labkit.machine.doctor")

from labkit.machine.doctor import (MIN_CORES, MIN_DISK_GIB, MIN_MEMORY_GIB,  # noqa: E402,F401
                                   MIN_PYTHON, Check, check_cores, check_disk, check_kernel,
                                   check_memory, check_python, check_tool, check_torch, main,
                                   run_checks)
